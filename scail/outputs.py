"""What scail wrote in an example folder: the output ledger, the `latest` pointer, user-file backups.

The ledger `.scail/outputs.json` records every file a stage put in the example folder, with its
sha256 and the fingerprint of the settings that made it (empty for files a failed run left):

    {"version": 1, "files": {"samples/dance_42_3fa9c1d2.mp4":
        {"stage": "animate", "sha256": "...", "fingerprint": "3fa9c1d2...", "written": "2026-12-07T06:10:00+00:00"}}}

Why a ledger beside the per-stage manifests: a manifest describes the stage's *last* run, so it
forgets the samples of earlier settings. With the ledger,
- a file is scail's when the ledger holds it with its current hash, whatever the manifests say, so
  no file scail wrote is ever taken for a user-provided one (that blocked reruns);
- a stage is fresh when every output it would write for the current fingerprint is in the ledger
  with that fingerprint and hash, so a failed try with other settings never hides a good result;
- `scail clean` deletes exactly the ledger's files whose content is still what scail wrote.

The ledger is written only under the example lock, before the stage's manifest (which stays last).

The stable `latest` name of a sample is a hard link (same bytes, no extra space, a plain file in
every browser, file manager, zip and sync tool, on NTFS as on POSIX); where the filesystem has no
hard links (FAT, some network shares) it is a copy. A symlink was not chosen: Windows needs admin
or developer mode for them, and many tools (zip, cloud sync, upload forms) drop or break them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scail.example import Example

log = logging.getLogger(__name__)

LEDGER_NAME = "outputs.json"
LEDGER_VERSION = 1
SHORT_FINGERPRINT = 8
"""Hex digits of the fingerprint in a sample's name (4 billion settings before a likely clash)."""


@dataclass(frozen=True)
class Entry:
    """One file scail wrote."""

    stage: str
    sha256: str
    fingerprint: str
    """The settings that made it; '' for a file a failed or interrupted run left behind."""
    written: str
    points_to: str = ""
    """For a `latest` pointer: the ledger key of the sample it stands for."""

    def as_json(self) -> dict[str, str]:
        doc = {"stage": self.stage, "sha256": self.sha256, "fingerprint": self.fingerprint, "written": self.written}
        if self.points_to:
            doc["points_to"] = self.points_to
        return doc


class OutputLedger:
    """`.scail/outputs.json` of one example: read lazily, written back by `save()` when changed.

    Keys are the same as the hash cache's (`HashCache.key`): paths relative to the example folder.
    """

    def __init__(self, example: Example) -> None:
        self.example = example
        self.path = example.state_dir / LEDGER_NAME
        self._files: dict[str, Entry] | None = None
        self._dirty = False

    @property
    def files(self) -> dict[str, Entry]:
        if self._files is None:
            self._files = self._read()
        return self._files

    def _read(self) -> dict[str, Entry]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable output ledger (%s); files without a manifest count as user-provided",
                        self.path, exc)
            return {}
        files = doc.get("files") if isinstance(doc, dict) and doc.get("version") == LEDGER_VERSION else None
        out: dict[str, Entry] = {}
        for key, raw in (files or {}).items():
            if safe_key(key) and isinstance(raw, dict):
                with contextlib.suppress(TypeError):
                    out[key] = Entry(**{k: str(v) for k, v in raw.items()})
        return out

    def record(self, stage: str, outputs: dict[str, str], fingerprint: str) -> None:
        """Note `outputs` ({key: sha256}) as written by `stage` for `fingerprint` ('' when it failed).

        A failed run re-records only files whose content changed: an output an earlier good run left
        untouched keeps its fingerprint.
        """
        now = _now()
        for key, digest in outputs.items():
            old = self.files.get(key)
            if not fingerprint and old is not None and old.sha256 == digest:
                continue
            self.files[key] = Entry(stage, digest, fingerprint, now)
            self._dirty = True

    def record_pointer(self, stage: str, key: str, digest: str, target_key: str) -> None:
        self.files[key] = Entry(stage, digest, "", _now(), points_to=target_key)
        self._dirty = True

    def forget(self, key: str) -> None:
        if self.files.pop(key, None) is not None:
            self._dirty = True

    def is_ours(self, key: str, digest: str | None) -> bool:
        """True when scail wrote this exact content under this name."""
        entry = self.files.get(key)
        return entry is not None and digest is not None and entry.sha256 == digest

    def made_by(self, key: str, fingerprint: str) -> Entry | None:
        entry = self.files.get(key)
        return entry if entry is not None and fingerprint and entry.fingerprint == fingerprint else None

    def stage_files(self, stage: str) -> dict[str, Entry]:
        return {k: e for k, e in self.files.items() if e.stage == stage}

    def save(self) -> None:
        """Write the ledger if it changed (atomically; the caller holds the example lock)."""
        if not self._dirty or self._files is None:
            return
        from scail.atomic import atomic_write_text

        doc = {"version": LEDGER_VERSION, "files": {k: e.as_json() for k, e in sorted(self._files.items())}}
        atomic_write_text(self.path, json.dumps(doc, indent=1))
        self._dirty = False


def safe_key(key: object) -> bool:
    """A ledger key must stay inside its example folder (a hand-edited ledger cannot point elsewhere)."""
    if not isinstance(key, str) or not key or os.path.isabs(key) or "\\" in key:
        return False
    return ".." not in key.split("/")


def _now() -> str:
    from scail.cache import now_iso

    return now_iso()


# ----------------------------------------------------------------------------------------------
# Sample names and the latest pointer
# ----------------------------------------------------------------------------------------------


def sample_stem(example: Example, seed: int, fingerprint: str) -> str:
    """`<name>_<seed>_<short fingerprint>`: unique to the settings and inputs that made the sample."""
    return f"{example.name}_{seed}_{fingerprint[:SHORT_FINGERPRINT]}"


def latest_path(example: Example) -> Path:
    """`samples/<name>_latest.mp4`: the sample of the most recent `scail run` of this example."""
    return example.samples_dir / f"{example.name}_latest.mp4"


def _same_file(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except FileNotFoundError:
        return False
    if (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino):
        return True
    return (sa.st_size, sa.st_mtime_ns) == (sb.st_size, sb.st_mtime_ns)  # the copy fallback keeps mtime


def point_latest(target: Path, link: Path) -> bool:
    """Make `link` the same bytes as `target` (hard link, else a copy), atomically. False if it already was."""
    if _same_file(target, link):
        return False
    from scail.atomic import temp_path

    tmp = temp_path(link)
    try:
        try:
            os.link(target, tmp)
        except OSError:  # no hard links on this filesystem: a copy (mtime kept, see _same_file)
            shutil.copy2(target, tmp)
        os.replace(tmp, link)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return True


def backup_name(path: Path) -> Path:
    """A free name beside `path` for a user's file that `--force` is about to replace.

    `rendered.mp4` -> `rendered.user-20261207-061500.mp4` (then `-2`, `-3`, ... if taken).
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        candidate = path.with_name(f"{path.stem}.user-{stamp}{'' if n == 1 else f'-{n}'}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(f"{path}: no free backup name")


def move_to_backup(path: Path) -> Path:
    """Rename a user's file to its backup name (same folder: never copies, never overwrites)."""
    dest = backup_name(path)
    os.rename(path, dest)
    return dest


@dataclass(frozen=True)
class SampleInfo:
    """What `scail status` says about an example's samples."""

    latest: str | None
    """The ledger key of the sample the `latest` pointer stands for (None before the first sample)."""
    earlier: int
    """How many other samples scail wrote there that still exist."""


def sample_info(example: Example, stage: str = "animate") -> SampleInfo:
    """The latest sample and the count of earlier ones (from the ledger; only stats, no hashing)."""
    ledger = OutputLedger(example)
    files = ledger.stage_files(stage)
    pointer = next((e.points_to for e in files.values() if e.points_to), "")
    root = example.root
    samples = [k for k, e in files.items() if not e.points_to and e.fingerprint and k.endswith(".mp4")
               and (root / k).is_file()]
    latest = pointer if pointer in samples else None
    return SampleInfo(latest, len(samples) - (1 if latest else 0))


def iter_ours(example: Example, stage: str, hashes: Any) -> Iterator[tuple[str, Path]]:
    """(key, path) of every existing file of `stage` whose content is still what scail wrote."""
    ledger = OutputLedger(example)
    for key, entry in ledger.stage_files(stage).items():
        path = Path(hashes.resolve(key))
        if hashes.hash(path) == entry.sha256:
            yield key, path

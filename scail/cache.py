"""The stage cache: file hashes, fingerprints, manifests and the per-example lock.

Everything here lives in the example's state folder (`<example>/.scail/`):

    .scail/<stage>.json   one manifest per stage (written last, atomically)
    .scail/hashes.json    stat cache: path -> (size, mtime_ns, inode, sha256), so warm checks never re-read bytes
    .scail/lock           the example lock (one runner per example at a time)
    .scail/logs/          DEBUG log per run and tracebacks of unexpected failures

A fingerprint is sha256 of the JSON of (stage name, stage version, resolved params, content hashes of
the input files). A stage is fresh when its manifest says "done" with the same fingerprint and every
recorded output still has its recorded hash. An unreadable manifest is a warning and counts as missing.
Files are written through scail/atomic.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from scail.atomic import atomic_write_text
from scail.errors import InputError, ScailError
from scail.example import STATE_DIR, Example

log = logging.getLogger(__name__)

MANIFEST_SCHEMA_VERSION = 1
HASH_CACHE_NAME = "hashes.json"
LOCK_NAME = "lock"
_CHUNK = 1 << 20

ManifestStatus = Literal["done", "failed", "interrupted", "running"]


# ----------------------------------------------------------------------------------------------
# Content hashes with a stat cache
# ----------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class HashCache:
    """Content hashes of files, re-computed only when (size, mtime_ns, inode) changes.

    One cache per example, stored in `.scail/hashes.json`. Keys are paths relative to the example
    folder when inside it (so a moved folder stays warm), else absolute paths.
    """

    def __init__(self, example: Example) -> None:
        self.example = example
        self.path = example.state_dir / HASH_CACHE_NAME
        self._root = os.path.abspath(example.root) + os.sep  # plain strings: pathlib is slow in hot loops
        self._entries: dict[str, list[Any]] | None = None
        self._dirty = False

    def key(self, path: Path | str) -> str:
        """The manifest key of a path: relative to the example (posix separators) when inside it."""
        p = os.fspath(path)
        if not os.path.isabs(p):
            p = os.path.abspath(p)
        if p.startswith(self._root):
            return p[len(self._root):].replace(os.sep, "/")
        return p

    def resolve(self, key: str) -> str:
        """The path of a manifest key (inverse of `key`)."""
        return key if os.path.isabs(key) else self._root + key.replace("/", os.sep)

    def _load(self) -> dict[str, list[Any]]:
        if self._entries is None:
            self._entries = {}
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                if isinstance(data, dict) and data.get("version") == 1 and isinstance(data.get("files"), dict):
                    self._entries = data["files"]
            except FileNotFoundError:
                pass
            except (OSError, ValueError) as exc:
                log.warning("%s: unreadable hash cache (%s); rehashing", self.path, exc)
        return self._entries

    def hash(self, path: Path | str) -> str | None:
        """sha256 of `path`, or None when it does not exist."""
        return self.keyed_hash(path)[1]

    def keyed_hash(self, path: Path | str) -> tuple[str, str | None]:
        """(manifest key, sha256 or None when missing); re-reads the file only when its stat changed."""
        key = self.key(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return key, None
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        entries = self._load()
        hit = entries.get(key)
        if hit is not None and hit[:3] == stamp:
            return key, str(hit[3])
        digest = sha256_file(Path(path))
        entries[key] = [*stamp, digest]
        self._dirty = True
        return key, digest

    def save(self) -> None:
        """Write the cache back if anything changed (best effort: a read-only folder stays cold)."""
        if not self._dirty or self._entries is None:
            return
        try:
            atomic_write_text(self.path, json.dumps({"version": 1, "files": self._entries}))
            self._dirty = False
        except OSError as exc:
            log.debug("%s: could not save hash cache: %s", self.path, exc)


# ----------------------------------------------------------------------------------------------
# Fingerprints
# ----------------------------------------------------------------------------------------------


def fingerprint(stage_name: str, stage_version: str, params: dict[str, Any], inputs: dict[str, str]) -> str:
    """sha256 of the canonical JSON of everything that determines a stage's outputs."""
    doc = {"stage": stage_name, "version": stage_version, "params": params, "inputs": inputs}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def hash_files(paths: list[Path], hashes: HashCache) -> dict[str, str]:
    """{key: sha256} of files that must exist; a missing one raises a `ScailError` naming it."""
    out: dict[str, str] = {}
    for p in paths:
        key, digest = hashes.keyed_hash(p)
        if digest is None:
            raise ScailError(f"{p}: input file is missing")
        out[key] = digest
    return out


# ----------------------------------------------------------------------------------------------
# Manifests
# ----------------------------------------------------------------------------------------------


class Manifest(BaseModel):
    """`.scail/<stage>.json`: what ran, on what, with what result."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = MANIFEST_SCHEMA_VERSION
    stage: str
    status: ManifestStatus
    fingerprint: str
    params: dict[str, Any] = {}
    inputs: dict[str, str] = {}
    outputs: dict[str, str] = {}
    started: str | None = None
    finished: str | None = None
    duration_s: float | None = None
    peak_rss_mb: float | None = None
    notes: dict[str, Any] = {}
    versions: dict[str, str] = {}
    error: str | None = None
    traceback_file: str | None = None
    pid: int | None = None

    @field_validator("outputs")
    @classmethod
    def _outputs_inside(cls, v: dict[str, str]) -> dict[str, str]:
        """A stage writes only inside its example: a manifest naming another file (edited by hand,
        `../x` or an absolute path) is refused, so no run or clean ever reads or deletes it."""
        from scail.outputs import safe_key

        bad = next((key for key in v if not safe_key(key)), None)
        if bad is not None:
            raise ValueError(f"output {bad!r} is outside the example folder")
        return v


def manifest_path(example: Example, stage: str) -> Path:
    return example.state_dir / f"{stage}.json"


def manifest_file(example: Example, stage: str) -> str:
    """`manifest_path` as a plain string (cheap: used on every warm check)."""
    return os.path.join(os.fspath(example.root), STATE_DIR, f"{stage}.json")


def read_manifest(example: Example, stage: str) -> Manifest | None:
    """The stage's manifest, or None when it is missing or unreadable (a warning says which)."""
    path = manifest_file(example, stage)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("%s: unreadable manifest (%s); treating the stage as never run", path, exc)
        return None
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"]) or "file"
        log.warning("%s: corrupt manifest (%s: %s); treating the stage as never run", path, loc, first["msg"])
        return None
    if manifest.schema_version > MANIFEST_SCHEMA_VERSION:
        log.warning("%s: unknown manifest schema %d; perhaps written by a later scail; treating as never run",
                    path, manifest.schema_version)
        return None
    return manifest


def write_manifest(example: Example, manifest: Manifest) -> None:
    """Write the manifest atomically (temp file, fsync, rename)."""
    atomic_write_text(manifest_path(example, manifest.stage), manifest.model_dump_json(indent=2))


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process (MiB), when psutil/resource can tell."""
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        return round(kb / 1024.0, 1)
    except (ImportError, OSError):
        pass
    try:
        import psutil

        return round(psutil.Process().memory_info().rss / 2**20, 1)
    except Exception:  # psutil is best effort on exotic platforms
        return None


def runtime_versions() -> dict[str, str]:
    """Versions that can change outputs: scail, python, and torch if this process imported it."""
    import scail

    out = {"scail": scail.__version__, "python": sys.version.split()[0]}
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch"] = str(getattr(torch, "__version__", "?"))
    return out


# ----------------------------------------------------------------------------------------------
# The example lock
# ----------------------------------------------------------------------------------------------


class ExampleLocked(ScailError):
    """Another runner holds this example's lock."""


class _FileLock:
    """An exclusive OS lock on `.scail/lock` (flock on POSIX, `filelock` elsewhere).

    The holder's pid is written into the lock file itself. The OS drops the lock when the holder
    dies, so a `kill -9` never leaves an example locked.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._fallback: Any = None

    def acquire(self, wait_s: float) -> bool:
        try:
            import fcntl
        except ImportError:  # Windows
            from filelock import FileLock, Timeout

            self._fallback = FileLock(str(self.path), timeout=wait_s, thread_local=False)
            try:
                self._fallback.acquire()
            except Timeout:
                return False
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        self._fd = fd
        return True

    def write_owner(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
                os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
        if self._fallback is not None:
            self._fallback.release()
            self._fallback = None


def _acquire(example: Example, wait_s: float) -> _FileLock:
    state = example.state_dir
    if not state.is_dir():
        if not example.root.is_dir():  # never recreate an example that was deleted or moved meanwhile
            raise InputError(f"{example.root}: the example folder is gone (deleted or moved while the batch "
                             "ran); restore it and rerun")
        state.mkdir(exist_ok=True)
    lock = _FileLock(state / LOCK_NAME)
    if not lock.acquire(wait_s):
        raise ExampleLocked(f"{example.root}: locked by another runner{lock_owner(example)}; rerun to pick it up")
    return lock


@contextlib.contextmanager
def example_lock(example: Example, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the example's lock; raise `ExampleLocked` if another runner holds it for `wait_s` seconds.

    Choice: a second runner does not wait forever; the batch skips a locked example, goes on with
    the others and retries it once at the end (see scail/batch.py).
    """
    lock = _acquire(example, wait_s)
    try:
        lock.write_owner()
        yield
    finally:
        lock.release()


def lock_owner(example: Example) -> str:
    """' (pid N)' of the runner that last took the lock, or ''."""
    try:
        pid = (example.state_dir / LOCK_NAME).read_text(encoding="utf-8").strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


def is_locked(example: Example) -> bool:
    """True when a runner holds the example's lock right now (a cheap non-blocking probe)."""
    if not (example.state_dir / LOCK_NAME).exists():
        return False
    try:
        _acquire(example, 0.0).release()
    except ExampleLocked:
        return True
    return False

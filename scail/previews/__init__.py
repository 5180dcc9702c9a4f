"""Previews: cheap pictures of the intermediate results, written beside the outputs.

People judge animation by looking, and a sample costs minutes of an expensive GPU, so after the
stages of an example the batch writes, from files already on disk (no model runs):

    <example>/previews/contact_sheet.jpg  reference | driving frames with the 2D skeleton |
                                          the rendered condition frames | the aligned condition
                                          over the reference                      (after pose/render)
    <example>/previews/overlay.mp4        the driving video with the 2D skeleton over it  (after pose)
    <example>/previews/turntable.mp4      the 3D skeleton seen from all around (pyrender; shows
                                          depth errors the camera view hides)             (after pose)
    <example>/previews/side_by_side.mp4   driving | condition | the newest sample     (after animate)

Rules:
- Not part of any fingerprint: previews are not stage outputs, and their switch lives in
  `PipelineConfig.previews`, which no stage fingerprints. Toggling them never makes a stage stale.
- Each preview carries a signature of its sources (name, size, mtime of each input file and
  `PREVIEW_VERSION`) in its own metadata and in `.scail/previews.json`; a rerun where nothing
  changed rewrites nothing (and reads one small JSON file to know it).
- A failing preview is a warning, never a failed stage (`write_previews` never raises for it).
- Every file goes through scail.atomic / `VideoWriter`, and into the output ledger under the stage
  that triggered it (fingerprint ''), so `scail clean` removes them with that stage.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scail.example import Example

if TYPE_CHECKING:
    from scail.cache import HashCache
    from scail.config import PipelineConfig
    from scail.outputs import OutputLedger

log = logging.getLogger(__name__)

PREVIEWS_DIR = "previews"
CONTACT_SHEET = "contact_sheet.jpg"
OVERLAY = "overlay.mp4"
TURNTABLE = "turntable.mp4"
SIDE_BY_SIDE = "side_by_side.mp4"
PREVIEW_VERSION = "1"
"""Bump when a preview's look changes: every preview is rewritten at the next run."""
STAMPS_NAME = "previews.json"
"""In `.scail/`: the signature of each preview, so a no-op rerun opens no video to check them."""
SIGNATURE_KEY = "scail_preview_sources"
"""The metadata key (MP4 tag, JPEG comment) that holds a preview's source signature."""


def previews_dir(example: Example) -> Path:
    return example.root / PREVIEWS_DIR


def preview_path(example: Example, name: str) -> Path:
    """`<example>/previews/<name>` (names: CONTACT_SHEET, OVERLAY, TURNTABLE, SIDE_BY_SIDE)."""
    return previews_dir(example) / name


@dataclass(frozen=True)
class _Job:
    """One preview to make: its file, the stage it belongs to, its sources and its writer."""

    name: str
    stage: str
    sources: tuple[Path, ...]
    write: Callable[[Path, str], None]
    """write(path, signature): writes the preview atomically with `signature` in its metadata."""
    needs_pose: bool = True
    """Drawn from .scail/pose.npz (checked readable once, only when something is to be written)."""


def signature(sources: Sequence[Path], extra: str = "") -> str:
    """A short digest of the sources' identity (name, size, mtime) and PREVIEW_VERSION."""
    h = hashlib.sha256(f"v{PREVIEW_VERSION}|{extra}".encode())
    for path in sources:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            h.update(f"|{path.name}:absent".encode())
            continue
        h.update(f"|{path.name}:{st.st_size}:{st.st_mtime_ns}".encode())  # no inode: a copied folder stays current
    return h.hexdigest()[:16]


def stored_signature(path: Path) -> str | None:
    """The signature a preview was written with (None when absent or unreadable)."""
    if not path.is_file():
        return None
    try:
        if path.suffix == ".jpg":
            from PIL import Image

            with Image.open(path) as im:
                comment = im.info.get("comment", b"")
            text = comment.decode("ascii", "replace") if isinstance(comment, bytes) else str(comment)
            return text.removeprefix(f"{SIGNATURE_KEY}=") or None
        from scail.video import read_metadata

        return read_metadata(path).get(SIGNATURE_KEY)
    except Exception:  # an unreadable preview is simply rewritten
        return None


def _jobs(example: Example, config: PipelineConfig, stages_ok: Sequence[str]) -> list[_Job]:
    from scail.outputs import latest_path
    from scail.previews import sheet

    jobs: list[_Job] = []
    pose_file = example.pose_data
    pose_stages = [s for s in ("pose", "render") if s in stages_ok]
    driving, reference = example.find_driving(), example.find_reference()
    if pose_stages and pose_file.is_file():
        stage = pose_stages[-1]
        conds = [example.rendered, example.rendered_aligned]
        if driving is not None:
            jobs.append(_Job(OVERLAY, "pose", (pose_file, driving),
                             lambda p, sig: sheet.write_overlay(example, config.pose, p, sig)))
        jobs.append(_Job(CONTACT_SHEET, stage, (pose_file, *(x for x in (driving, reference) if x), *conds),
                         lambda p, sig: sheet.write_contact_sheet(example, config.pose, p, sig)))
        if config.previews.turntable:
            jobs.append(_Job(TURNTABLE, "pose", (pose_file,),
                             lambda p, sig: _turntable(example, p, sig)))
    latest = latest_path(example)
    if "animate" in stages_ok and latest.is_file() and (cond := example.pose_video()) is not None:
        jobs.append(_Job(SIDE_BY_SIDE, "animate", (latest, cond, pose_file, *(x for x in (driving,) if x)),
                         lambda p, sig: sheet.write_side_by_side(example, config.pose, p, sig), needs_pose=False))
    return jobs


def _readable_pose(path: Path) -> bool:
    """True for pose data the previews can draw (the render stage has already said what is wrong
    with any other, so nothing is logged here)."""
    from scail.errors import InputError
    from scail.pose.schema import load_pose

    if not path.is_file():
        return False
    try:
        return load_pose(path).num_frames > 0
    except InputError as exc:
        log.debug("%s: no pose previews: %s", path, exc)
        return False


_TURNTABLE_NOTED = False


def _turntable(example: Example, path: Path, sig: str) -> None:
    from scail.previews import turntable

    global _TURNTABLE_NOTED
    problem = turntable.unavailable()
    if problem:
        if not _TURNTABLE_NOTED:  # one note per process, not one per example
            log.warning("turntable preview skipped: %s", problem)
            _TURNTABLE_NOTED = True
        raise _Skipped(problem)
    turntable.write_turntable(example, path, sig)


class _Skipped(Exception):
    """A preview that cannot be made on this install (already noted once)."""


def write_previews(example: Example, config: PipelineConfig, stages_ok: Sequence[str],
                   ledger: OutputLedger | None = None,
                   on_progress: Callable[[int, int, str], None] | None = None,
                   hashes: HashCache | None = None) -> list[Path]:
    """Write the previews that the stages in `stages_ok` make possible and that are out of date.

    Returns the previews written. Never raises for a preview's own failure (a warning is logged);
    the caller holds the example lock (the ledger is updated and saved here). `hashes`: the
    example's hash cache, when the caller has one (a current preview is then checked against the
    ledger by stat, not by reading it).
    """
    if not config.previews.enabled:
        return []
    from scail.atomic import temp_files

    for tmp in temp_files(previews_dir(example)):  # what a killed run left (we hold the example lock)
        tmp.unlink(missing_ok=True)
    jobs = _jobs(example, config, stages_ok)
    stamps = _read_stamps(example)
    written: list[Path] = []
    pose_ok: bool | None = None
    for i, job in enumerate(jobs):
        path = preview_path(example, job.name)
        sig = signature(job.sources, job.name)
        # the stamp file answers a no-op rerun with one small read; the preview's own tag is the fallback
        if path.is_file() and (stamps.get(job.name) == sig or stored_signature(path) == sig):
            if stamps.get(job.name) != sig:
                stamps[job.name] = sig
                _write_stamps(example, stamps)
            if ledger is not None:  # a run killed between the rename and the ledger's save
                _record(example, ledger, job.stage, path, hashes)
            continue
        if job.needs_pose:
            pose_ok = _readable_pose(example.pose_data) if pose_ok is None else pose_ok
            if not pose_ok:
                continue
        if on_progress is not None:
            on_progress(i, len(jobs), job.name)
        t0 = time.perf_counter()
        try:
            job.write(path, sig)
        except _Skipped:
            continue
        except Exception as exc:  # a preview never fails the stage
            log.warning("%s: could not write previews/%s: %s", example.name, job.name,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            log.debug("preview failure", exc_info=exc)
            continue
        log.info("%s: wrote previews/%s in %.1f s", example.name, job.name, time.perf_counter() - t0)
        written.append(path)
        stamps[job.name] = sig
        _write_stamps(example, stamps)
        if ledger is not None:
            _record(example, ledger, job.stage, path, hashes)
    if on_progress is not None and jobs:
        on_progress(len(jobs), len(jobs), "done")
    return written


def stamps_path(example: Example) -> Path:
    """`.scail/previews.json`: {preview name: the signature it was written with}."""
    return example.state_dir / STAMPS_NAME


def _read_stamps(example: Example) -> dict[str, str]:
    import json

    try:
        doc = json.loads(stamps_path(example).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    previews = doc.get("previews") if isinstance(doc, dict) else None
    return {str(k): str(v) for k, v in previews.items()} if isinstance(previews, dict) else {}


def _write_stamps(example: Example, stamps: dict[str, str]) -> None:
    import json

    from scail.atomic import atomic_write_text

    try:
        atomic_write_text(stamps_path(example), json.dumps({"version": 1, "previews": stamps}, indent=1))
    except OSError as exc:  # only costs a re-check next time
        log.debug("%s: could not write %s: %s", example.name, STAMPS_NAME, exc)


def _record(example: Example, ledger: OutputLedger, stage: str, path: Path, hashes: HashCache | None) -> None:
    """Note a preview in the output ledger (fingerprint '': it belongs to no settings) so `scail
    clean` removes it with its stage and it is never taken for a user's file. Saves only a change."""
    from scail.cache import HashCache

    key, digest = (hashes or HashCache(example)).keyed_hash(path)
    entry = ledger.files.get(key)
    if digest is None or (entry is not None and entry.sha256 == digest and entry.stage == stage):
        return
    ledger.record(stage, {key: digest}, "")
    try:
        ledger.save()
    except OSError as exc:
        log.warning("%s: could not record previews/%s in the output ledger: %s", example.name, path.name, exc)


__all__ = ["CONTACT_SHEET", "OVERLAY", "SIDE_BY_SIDE", "TURNTABLE", "preview_path", "previews_dir",
           "write_previews"]

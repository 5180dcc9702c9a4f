"""The stage engine: decide whether a stage is fresh, run it when not, and record the result.

`run_stage` is the only way a stage runs. It is called with the example lock held (scail/batch.py).

    no manifest, some output exists     -> user-provided: kept, never overwritten without force
    manifest done, same fingerprint,
      outputs exist with recorded hashes -> fresh: skipped
    otherwise                           -> run: manifest "running", stage.run, outputs hashed,
                                           manifest "done" written last (or "failed"/"interrupted")

`stage_status` answers the same question without running anything (for `scail status`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from scail.atomic import temp_files
from scail.cache import (
    HashCache,
    Manifest,
    fingerprint,
    hash_files,
    is_locked,
    manifest_file,
    manifest_path,
    now_iso,
    peak_rss_mb,
    read_manifest,
    runtime_versions,
    write_manifest,
)
from scail.errors import Interrupted, ScailError, StageFailed
from scail.example import Example
from scail.stage import ProgressEvent, Stage, StageContext

log = logging.getLogger(__name__)


class Outcome(str, Enum):
    """What `run_stage` did (or the batch decided) for one stage of one example."""

    FRESH = "fresh"
    RAN = "ran"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    USER_PROVIDED = "user-provided"
    SKIPPED = "skipped"
    LOCKED = "locked"

    @property
    def is_ok(self) -> bool:
        return self in (Outcome.FRESH, Outcome.RAN, Outcome.USER_PROVIDED, Outcome.SKIPPED)


class Status(str, Enum):
    """What `scail status` reports for one stage of one example (nothing is run to find out)."""

    FRESH = "fresh"
    STALE = "stale"
    FAILED = "failed"
    MISSING = "missing"
    USER_PROVIDED = "user-provided"
    INTERRUPTED = "interrupted"
    RUNNING = "running"


@dataclass
class StageOutcome:
    """The result of one stage on one example."""

    stage: str
    outcome: Outcome
    duration_s: float = 0.0
    reason: str = ""
    """One line: why it failed, was skipped, or was not run."""


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (the form recorded in manifests and summaries)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _json_safe(notes: dict[str, Any]) -> dict[str, Any]:
    """Notes as plain JSON (numpy scalars, paths and the like become strings)."""
    result: dict[str, Any] = json.loads(json.dumps(notes, default=str))
    return result


# ----------------------------------------------------------------------------------------------
# Freshness (shared by run_stage and stage_status)
# ----------------------------------------------------------------------------------------------


def _outputs_match(example: Example, manifest: Manifest, expected: list[Path], hashes: HashCache) -> str:
    """'' when every output exists with its recorded hash, else the reason it does not."""
    recorded = manifest.outputs
    for path in expected:
        if hashes.key(path) not in recorded:
            return f"{path.name} is not recorded in the manifest"
    for key, digest in recorded.items():
        current = hashes.hash(hashes.resolve(key))
        if current is None:
            return f"{key} is missing"
        if current != digest:
            return f"{key} was changed"
    return ""


def _params_json(stage: Stage) -> dict[str, Any]:
    """`stage.params()` as JSON data (what the fingerprint and the manifest hold)."""
    return stage.params().model_dump(mode="json")


def _current_fingerprint(stage: Stage, example: Example, hashes: HashCache) -> tuple[str, dict[str, str]]:
    """(fingerprint, input hashes). Raises `ScailError` when a required input is missing."""
    inputs = hash_files(stage.inputs(example), hashes)
    return fingerprint(stage.name, stage.version, _params_json(stage), inputs), inputs


def user_outputs(stage: Stage, example: Example, hashes: HashCache) -> list[Path]:
    """Outputs the user made or replaced by hand; the engine never overwrites them without force.

    - no manifest file: every existing output is the user's (e.g. a hand-made rendered.mp4);
    - a manifest: an output is the user's when it was modified after the manifest was written AND
      its content is not the one recorded (every final manifest, failed ones too, records the
      outputs present when it was written). A "running" manifest (a killed run) claims nothing.
    The common case costs only stats: outputs older than the manifest are never hashed.
    """
    existing: list[tuple[Path, int]] = []
    for p in stage.outputs(example):
        try:
            existing.append((p, os.stat(p).st_mtime_ns))
        except FileNotFoundError:
            continue
    if not existing:
        return []
    try:
        manifest_mtime = os.stat(manifest_file(example, stage.name)).st_mtime_ns
    except FileNotFoundError:
        return [p for p, _ in existing]
    newer = [p for p, mtime in existing if mtime >= manifest_mtime]  # >=: coarse clock ticks
    if not newer:
        return []
    manifest = read_manifest(example, stage.name)
    if manifest is None or manifest.status == "running":
        return []
    return [p for p in newer if manifest.outputs.get(hashes.key(p)) != hashes.hash(p)]


def _user_reason(stage: Stage, example: Example, paths: list[Path]) -> str:
    names = ", ".join(sorted({p.name for p in paths}))
    if manifest_path(example, stage.name).exists():
        return f"{names} changed by hand after scail wrote it; kept unless --force"
    return f"{names} made by hand (no manifest); kept unless --force"


def stage_status(stage: Stage, example: Example, hashes: HashCache) -> tuple[Status, str]:
    """(status, one-line reason) of one stage, computed from files only; runs nothing."""
    user = user_outputs(stage, example, hashes)
    if user:
        return Status.USER_PROVIDED, _user_reason(stage, example, user)
    manifest = read_manifest(example, stage.name)
    if manifest is None:
        return Status.MISSING, ""
    if manifest.status == "running":
        if is_locked(example):
            return Status.RUNNING, f"pid {manifest.pid}"
        return Status.INTERRUPTED, "the run was killed"
    if manifest.status == "interrupted":
        return Status.INTERRUPTED, manifest.error or ""
    if manifest.status == "failed":
        return Status.FAILED, manifest.error or ""
    try:
        fp, _ = _current_fingerprint(stage, example, hashes)
    except ScailError as exc:
        return Status.STALE, one_line(exc)
    if fp != manifest.fingerprint:
        return Status.STALE, "inputs or parameters changed"
    reason = _outputs_match(example, manifest, stage.outputs(example), hashes)
    return (Status.STALE, reason) if reason else (Status.FRESH, "")


def example_status(stages: Sequence[Stage], example: Example) -> list[tuple[Status, str]]:
    """Status of each stage in pipeline order; a done stage below one that will rerun is stale."""
    hashes = HashCache(example)
    out: list[tuple[Status, str]] = []
    upstream_pending: str | None = None
    for stage in stages:
        status, reason = stage_status(stage, example, hashes)
        if status is Status.FRESH and upstream_pending is not None:
            status, reason = Status.STALE, f"upstream {upstream_pending} will rerun"
        if status is Status.USER_PROVIDED:
            upstream_pending = None  # downstream stages read the user's files, not what is above
        elif status is not Status.FRESH:
            upstream_pending = upstream_pending or stage.name
        out.append((status, reason))
    hashes.save()
    return out


# ----------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------


def _write_traceback(example: Example, stage: str, exc: BaseException) -> Path | None:
    logs = example.state_dir / "logs"
    path = logs / f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}-traceback.txt"
    try:
        logs.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
    except OSError:
        return None
    return path


def run_stage(
    stage: Stage,
    example: Example,
    *,
    on_event: Callable[[ProgressEvent], None] | None = None,
    cancel: threading.Event | None = None,
    force: bool = False,
    hashes: HashCache | None = None,
    user_files: list[Path] | None = None,
) -> StageOutcome:
    """Run `stage` on `example` unless it is fresh or user-provided (`force` runs it anyway).

    Expected failures (`ScailError`) and unexpected exceptions become a "failed" manifest and a
    FAILED outcome; Ctrl-C (`Interrupted`, `KeyboardInterrupt`) writes an "interrupted" manifest
    and is re-raised so the batch stops. The caller must hold the example lock. `user_files`:
    the stage's user-provided outputs when the caller already looked them up (`user_outputs`).
    """
    hashes = hashes or HashCache(example)
    t0 = time.perf_counter()
    if not force:
        user = user_outputs(stage, example, hashes) if user_files is None else user_files
        if user:
            return StageOutcome(stage.name, Outcome.USER_PROVIDED, reason=_user_reason(stage, example, user))
    manifest = read_manifest(example, stage.name)

    params = _params_json(stage)
    try:
        fp, inputs = _current_fingerprint(stage, example, hashes)
    except ScailError as exc:
        _record(example, Manifest(stage=stage.name, status="failed", fingerprint="", params=params,
                                  outputs=_present(stage.outputs(example), hashes), error=one_line(exc),
                                  finished=now_iso()))
        return StageOutcome(stage.name, Outcome.FAILED, time.perf_counter() - t0, one_line(exc))

    expected = stage.outputs(example)
    why = _why_run(example, manifest, fp, expected, hashes, force)
    if not why:
        return StageOutcome(stage.name, Outcome.FRESH, time.perf_counter() - t0)

    for out in expected:
        for tmp in temp_files(out.parent, of=out):
            log.debug("removing leftover temp file %s", tmp)
            with contextlib.suppress(OSError):
                tmp.unlink()

    running = Manifest(stage=stage.name, status="running", fingerprint=fp, params=params, inputs=inputs,
                       started=now_iso(), versions=runtime_versions(), pid=os.getpid())
    write_manifest(example, running)
    ctx = StageContext(example=example, stage=stage.name, on_event=on_event or (lambda e: None),
                       cancel=cancel or threading.Event(), log=logging.getLogger(f"scail.stage.{stage.name}"),
                       fingerprint=fp)
    log.info("%s: %s started (%s)", example.name, stage.name, why)
    try:
        stage.run(example, ctx)
        missing = [p for p in expected if not p.exists()]
        if missing:
            raise StageFailed(f"{example.root}: {stage.name} finished without writing {missing[0].name}")
        outputs = hash_files(expected, hashes)
    except (Interrupted, KeyboardInterrupt) as exc:
        _finish(example, running, ctx, t0, status="interrupted", error="interrupted by the user",
                outputs=_present(expected, hashes))
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted(f"{example.root}: {stage.name} interrupted") from exc
        raise
    except ScailError as exc:
        _finish(example, running, ctx, t0, status="failed", error=one_line(exc), outputs=_present(expected, hashes))
        log.info("%s: %s failed: %s", example.name, stage.name, one_line(exc))
        return StageOutcome(stage.name, Outcome.FAILED, time.perf_counter() - t0, one_line(exc))
    except Exception as exc:
        tb = _write_traceback(example, stage.name, exc)
        log.debug("%s: %s crashed", example.name, stage.name, exc_info=exc)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            # nothing partial is visible (outputs are renamed into place), so a rerun resumes here
            reason = (f"{example.root}: {stage.name}: the disk is full; free space and rerun "
                      "(finished stages are kept)")
        else:
            reason = f"{type(exc).__name__}: {one_line(exc)}" + (f" (traceback: {tb})" if tb else "")
        _finish(example, running, ctx, t0, status="failed", error=reason, traceback_file=tb,
                outputs=_present(expected, hashes))
        return StageOutcome(stage.name, Outcome.FAILED, time.perf_counter() - t0, reason)
    _finish(example, running, ctx, t0, status="done", outputs=outputs)
    log.info("%s: %s done in %.1fs", example.name, stage.name, time.perf_counter() - t0)
    return StageOutcome(stage.name, Outcome.RAN, time.perf_counter() - t0)


def _why_run(example: Example, manifest: Manifest | None, fp: str, expected: list[Path], hashes: HashCache,
             force: bool) -> str:
    """Why the stage must run ('' when it is fresh)."""
    if force:
        return "--force"
    if manifest is None:
        return "never ran"
    if manifest.status != "done":
        return f"last run {manifest.status}"
    if manifest.fingerprint != fp:
        return "inputs or parameters changed"
    return _outputs_match(example, manifest, expected, hashes)


def _present(paths: list[Path], hashes: HashCache) -> dict[str, str]:
    """Hashes of the outputs that exist now (a failed run records them so they are not taken for
    the user's files later)."""
    found = (hashes.keyed_hash(p) for p in paths)
    return {key: digest for key, digest in found if digest is not None}


def _finish(example: Example, running: Manifest, ctx: StageContext, t0: float, *, status: str,
            outputs: dict[str, str] | None = None, error: str | None = None,
            traceback_file: Path | None = None) -> None:
    """Write the final manifest (last, atomically)."""
    final = running.model_copy(update={
        "status": status, "outputs": outputs or {}, "finished": now_iso(),
        "duration_s": round(time.perf_counter() - t0, 3), "peak_rss_mb": peak_rss_mb(),
        "notes": _json_safe(ctx.notes), "error": error,
        "traceback_file": str(traceback_file) if traceback_file else None,
    })
    _record(example, final)


def _record(example: Example, manifest: Manifest) -> None:
    try:
        write_manifest(example, manifest)
    except OSError as exc:  # a full disk must not hide the stage's own error
        log.error("%s: could not write the %s manifest: %s", example.root, manifest.stage, exc)


def clean_example(example: Example, stage_names: Sequence[str]) -> list[Path]:
    """Delete the outputs scail recorded for these stages, their manifests and leftover temp files.

    Files without a manifest (user-provided) are never touched. Returns what was removed.
    """
    removed: list[Path] = []
    for name in stage_names:
        manifest = read_manifest(example, name)
        hashes = HashCache(example)
        targets = [Path(hashes.resolve(key)) for key in (manifest.outputs if manifest else {})]
        targets.append(example.state_dir / f"{name}.json")
        targets.append(example.state_dir / f"{name}-resume.safetensors")  # a mid-run checkpoint (animate/resume.py)
        for path in targets:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    for folder in (example.root, example.state_dir, example.samples_dir):
        if folder.is_dir():
            for tmp in temp_files(folder):
                with contextlib.suppress(OSError):
                    tmp.unlink()
                    removed.append(tmp)
    return removed

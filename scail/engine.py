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
from dataclasses import dataclass, field
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
from scail.outputs import OutputLedger, move_to_backup, point_latest, safe_key
from scail.previews import previews_dir, stamps_path
from scail.stage import KeepsEveryOutput, ProgressEvent, Stage, StageContext

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
    outputs: list[str] = field(default_factory=list)
    """The files this stage's result is in, for these settings (ran, fresh or user-provided)."""


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (the form recorded in manifests and summaries)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC/EDQUOT, also when a library wrapped it in its own error (PyAV, safetensors
    and numpy raise their own types whose message, or cause, is the OS's "No space left on device")."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(current)
        if "No space left on device" in text or "Disk quota exceeded" in text:
            return True
        current = current.__cause__ or current.__context__
    return False


def disk_full_reason(example: Example, stage: str) -> str:
    """The one line a stage that hit a full disk reports (nothing partial is visible: outputs are
    renamed into place only when complete, so a rerun resumes there)."""
    return f"{example.root}: {stage}: the disk is full; free space and rerun (finished stages are kept)"


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


def stage_fingerprint(stage: Stage, example: Example, hashes: HashCache | None = None) -> str:
    """The fingerprint a run of `stage` on `example` would have now (raises when an input is missing)."""
    own = hashes or HashCache(example)
    fp, _ = _current_fingerprint(stage, example, own)
    if hashes is None:
        own.save()
    return fp


def expected_outputs(stage: Stage, example: Example, fp: str) -> list[Path]:
    """The files a run of `stage` with fingerprint `fp` writes (named by it for `KeepsEveryOutput`)."""
    if isinstance(stage, KeepsEveryOutput):
        return stage.outputs_for(example, fp)
    return stage.outputs(example)


def user_outputs(stage: Stage, example: Example, hashes: HashCache,
                 ledger: OutputLedger | None = None) -> list[Path]:
    """Outputs the user made or replaced by hand; the engine never overwrites them without force.

    - a file the output ledger holds with its current content is scail's, whatever else;
    - no manifest file: every other existing output is the user's (e.g. a hand-made rendered.mp4);
    - a manifest: an output is the user's when it was modified after the manifest was written AND
      its content is not the one recorded (every final manifest, failed ones too, records the
      outputs present when it was written). A "running" manifest (a killed run) claims nothing.
    - outputs named by their fingerprint (`KeepsEveryOutput`: samples) are never the user's.
    The common case costs only stats: outputs older than the manifest are never hashed.
    """
    if isinstance(stage, KeepsEveryOutput):
        return []
    existing: list[tuple[Path, int]] = []
    for p in stage.outputs(example):
        try:
            existing.append((p, os.stat(p).st_mtime_ns))
        except FileNotFoundError:
            continue
    if not existing:
        return []
    ledger = ledger or OutputLedger(example)
    try:
        manifest_mtime = os.stat(manifest_file(example, stage.name)).st_mtime_ns
    except FileNotFoundError:
        return [p for p, _ in existing if not ledger.is_ours(hashes.key(p), hashes.hash(p))]
    newer = [p for p, mtime in existing if mtime >= manifest_mtime]  # >=: coarse clock ticks
    if not newer:
        return []
    manifest = read_manifest(example, stage.name)
    if manifest is None or manifest.status == "running":
        return []
    return [p for p in newer if manifest.outputs.get(hashes.key(p)) != hashes.hash(p)
            and not ledger.is_ours(hashes.key(p), hashes.hash(p))]


def _user_reason(stage: Stage, example: Example, paths: list[Path]) -> str:
    names = ", ".join(sorted({p.name for p in paths}))
    if manifest_path(example, stage.name).exists():
        return f"{names} changed by hand after scail wrote it; kept unless --force"
    return f"{names} made by hand (no manifest); kept unless --force"


def _ledger_fresh(expected: list[Path], fp: str, hashes: HashCache, ledger: OutputLedger) -> bool:
    """True when scail wrote every expected output for exactly this fingerprint and none was changed.

    This is what lets an earlier result count again after a run with other settings (or a failed
    try) rewrote the stage's manifest.
    """
    for path in expected:
        key, digest = hashes.keyed_hash(path)
        entry = ledger.made_by(key, fp)
        if entry is None or digest != entry.sha256:
            return False
    return bool(expected)


def stage_status(stage: Stage, example: Example, hashes: HashCache,
                 ledger: OutputLedger | None = None) -> tuple[Status, str]:
    """(status, one-line reason) of one stage, computed from files only; runs nothing.

    The answer is for the configuration `stage` was built with: the last run's manifest counts
    only when it was a run of that configuration (its fingerprint), so a failed try with other
    settings does not hide a good result.
    """
    ledger = ledger or OutputLedger(example)
    user = user_outputs(stage, example, hashes, ledger)
    if user:
        return Status.USER_PROVIDED, _user_reason(stage, example, user)
    manifest = read_manifest(example, stage.name)
    if manifest is not None and manifest.status == "running" and is_locked(example):
        return Status.RUNNING, f"pid {manifest.pid}"
    try:
        fp, _ = _current_fingerprint(stage, example, hashes)
    except ScailError as exc:
        if manifest is not None and manifest.status == "failed":
            return Status.FAILED, manifest.error or ""
        return (Status.STALE, one_line(exc)) if manifest is not None else (Status.MISSING, "")
    if manifest is not None and manifest.status != "done" and manifest.fingerprint in (fp, ""):
        if manifest.status == "running":
            return Status.INTERRUPTED, "the run was killed"
        if manifest.status == "interrupted":
            return Status.INTERRUPTED, manifest.error or ""
        return Status.FAILED, manifest.error or ""
    expected = expected_outputs(stage, example, fp)
    reason = "inputs or parameters changed"
    if manifest is not None and manifest.status == "done" and fp == manifest.fingerprint:
        reason = _outputs_match(example, manifest, expected, hashes)  # the common case: no ledger read
        if not reason:
            return Status.FRESH, ""
    if _ledger_fresh(expected, fp, hashes, ledger):
        return Status.FRESH, ""
    return (Status.MISSING, "") if manifest is None else (Status.STALE, reason)


def example_status(stages: Sequence[Stage], example: Example) -> list[tuple[Status, str]]:
    """Status of each stage in pipeline order; a done stage below one that will rerun is stale."""
    hashes = HashCache(example)
    ledger = OutputLedger(example)
    out: list[tuple[Status, str]] = []
    upstream_pending: str | None = None
    for stage in stages:
        status, reason = stage_status(stage, example, hashes, ledger)
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
    ledger: OutputLedger | None = None,
) -> StageOutcome:
    """Run `stage` on `example` unless it is fresh or user-provided (`force` runs it anyway).

    Expected failures (`ScailError`) and unexpected exceptions become a "failed" manifest and a
    FAILED outcome; Ctrl-C (`Interrupted`, `KeyboardInterrupt`) writes an "interrupted" manifest
    and is re-raised so the batch stops. The caller must hold the example lock. `user_files`:
    the stage's user-provided outputs when the caller already looked them up (`user_outputs`).
    With `force`, user-provided outputs are first renamed to a backup name (and the outcome says so).
    """
    hashes = hashes or HashCache(example)
    ledger = ledger or OutputLedger(example)
    t0 = time.perf_counter()
    if force:
        user = user_outputs(stage, example, hashes, ledger)
    else:
        user = user_outputs(stage, example, hashes, ledger) if user_files is None else user_files
        if user:
            return StageOutcome(stage.name, Outcome.USER_PROVIDED, reason=_user_reason(stage, example, user),
                                outputs=[str(p) for p in user])
    manifest = read_manifest(example, stage.name)

    params: dict[str, Any] = {}
    try:
        params = _params_json(stage)
        fp, inputs = _current_fingerprint(stage, example, hashes)
    except ScailError as exc:
        present = [] if isinstance(stage, KeepsEveryOutput) else [p for p in stage.outputs(example) if p not in user]
        _record(example, Manifest(stage=stage.name, status="failed", fingerprint="", params=params,
                                  outputs=_present(present, hashes), error=one_line(exc), finished=now_iso()))
        return StageOutcome(stage.name, Outcome.FAILED, time.perf_counter() - t0, one_line(exc))

    expected = expected_outputs(stage, example, fp)
    why = "--force" if force else _why_run(example, manifest, fp, expected, hashes, ledger)
    if not why:
        _publish(stage, example, expected, hashes, ledger)
        return StageOutcome(stage.name, Outcome.FRESH, time.perf_counter() - t0, outputs=[str(p) for p in expected])

    backups = _back_up(user, example, stage.name)
    for out in expected:
        for tmp in temp_files(out.parent, of=out):
            log.debug("removing leftover temp file %s", tmp)
            with contextlib.suppress(OSError):
                tmp.unlink()

    running = Manifest(stage=stage.name, status="running", fingerprint=fp, params=params, inputs=inputs,
                       started=now_iso(), versions=runtime_versions(), pid=os.getpid())
    try:
        write_manifest(example, running)
    except OSError as exc:  # nothing ran yet: the stage fails, the batch goes on
        reason = (disk_full_reason(example, stage.name) if is_disk_full(exc) else
                  f"{manifest_path(example, stage.name)}: cannot write the manifest ({exc.strerror or exc})")
        return StageOutcome(stage.name, Outcome.FAILED, time.perf_counter() - t0, reason)
    ctx = StageContext(example=example, stage=stage.name, on_event=on_event or (lambda e: None),
                       cancel=cancel or threading.Event(), log=logging.getLogger(f"scail.stage.{stage.name}"),
                       fingerprint=fp)
    if backups:
        ctx.note(user_files_backed_up=backups)
    log.info("%s: %s started (%s)", example.name, stage.name, why)

    def finish(status: str, outputs: dict[str, str], **extra: Any) -> str:
        """Write the ledger, then the final manifest; '' or why the manifest could not be written
        (then a "failed" manifest is tried, so no run is left looking killed or done)."""
        ledger.record(stage.name, outputs, fp if status == "done" else "")
        _save_ledger(ledger)
        try:
            _finish(example, running, ctx, t0, status=status, outputs=outputs, **extra)
        except OSError as exc:
            reason = (disk_full_reason(example, stage.name) if is_disk_full(exc) else
                      f"{manifest_path(example, stage.name)}: cannot write the manifest ({exc.strerror or exc})")
            log.error("%s: %s: could not write the final manifest: %s", example.name, stage.name, exc)
            _record(example, running.model_copy(update={"status": "failed", "outputs": outputs, "error": reason,
                                                        "finished": now_iso()}))
            return reason
        return ""

    try:
        stage.run(example, ctx)
        missing = [p for p in expected if not p.exists()]
        if missing:
            raise StageFailed(f"{example.root}: {stage.name} finished without writing {missing[0].name}")
        outputs = hash_files(expected, hashes)
    except (Interrupted, KeyboardInterrupt) as exc:
        finish("interrupted", _present(expected, hashes), error="interrupted by the user")
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted(f"{example.root}: {stage.name} interrupted") from exc
        raise
    except ScailError as exc:
        reason = disk_full_reason(example, stage.name) if is_disk_full(exc) else one_line(exc)
        finish("failed", _present(expected, hashes), error=reason)
        log.info("%s: %s failed: %s", example.name, stage.name, reason)
        return StageOutcome(stage.name, Outcome.FAILED, time.perf_counter() - t0, reason)
    except Exception as exc:
        tb = _write_traceback(example, stage.name, exc)
        log.debug("%s: %s crashed", example.name, stage.name, exc_info=exc)
        if is_disk_full(exc):
            reason = disk_full_reason(example, stage.name)
        else:
            reason = f"{type(exc).__name__}: {one_line(exc)}" + (f" (traceback: {tb})" if tb else "")
        finish("failed", _present(expected, hashes), error=reason, traceback_file=tb)
        return StageOutcome(stage.name, Outcome.FAILED, time.perf_counter() - t0, reason)
    problem = finish("done", outputs)
    if problem:
        return StageOutcome(stage.name, Outcome.FAILED, time.perf_counter() - t0, problem)
    _publish(stage, example, expected, hashes, ledger)
    log.info("%s: %s done in %.1fs", example.name, stage.name, time.perf_counter() - t0)
    note = "; ".join(f"{k} was user-provided: moved to {v}" for k, v in backups.items())
    return StageOutcome(stage.name, Outcome.RAN, time.perf_counter() - t0, note, outputs=[str(p) for p in expected])


def _why_run(example: Example, manifest: Manifest | None, fp: str, expected: list[Path], hashes: HashCache,
             ledger: OutputLedger) -> str:
    """Why the stage must run ('' when it is fresh); the same rules as `stage_status`."""
    if manifest is not None and manifest.status != "done" and manifest.fingerprint in (fp, ""):
        return f"last run {manifest.status}"
    reason = "inputs or parameters changed"
    if manifest is not None and manifest.status == "done" and manifest.fingerprint == fp:
        reason = _outputs_match(example, manifest, expected, hashes)  # the common case: no ledger read
        if not reason:
            return ""
    if _ledger_fresh(expected, fp, hashes, ledger):
        return ""
    if manifest is None:
        return "never ran"
    return f"last run {manifest.status}" if manifest.status != "done" else reason


def _back_up(user: list[Path], example: Example, stage: str) -> dict[str, str]:
    """Rename the user's files a forced stage is about to replace; {name: backup name}, logged."""
    moved: dict[str, str] = {}
    for path in user:
        try:
            dest = move_to_backup(path)
        except OSError as exc:
            raise StageFailed(f"{path}: cannot move the user-provided file aside before --force "
                              f"({exc.strerror}); move it yourself and rerun") from exc
        rel_src, rel_dst = os.path.relpath(path, example.root), os.path.relpath(dest, example.root)
        log.warning("%s: %s: %s is user-provided; moved it to %s before redoing %s",
                    example.name, stage, rel_src, rel_dst, stage)
        moved[rel_src] = rel_dst
    return moved


def _publish(stage: Stage, example: Example, outputs: list[Path], hashes: HashCache, ledger: OutputLedger) -> None:
    """Point the stage's stable names (`<name>_latest.mp4`) at `outputs` and note them in the ledger.

    A file under a stable name that scail did not write (the user's) is moved to a backup name first.
    """
    if not isinstance(stage, KeepsEveryOutput):
        return
    for pointer, target in stage.pointers(example, outputs):
        key = hashes.key(pointer)
        try:
            if pointer.exists() and not ledger.is_ours(key, hashes.hash(pointer)):
                _back_up([pointer], example, stage.name)
            if point_latest(target, pointer) or key not in ledger.files:
                _, digest = hashes.keyed_hash(pointer)
                ledger.record_pointer(stage.name, key, digest or "", hashes.key(target))
        except (OSError, StageFailed) as exc:  # a pointer is a convenience: never fail the stage for it
            log.warning("%s: could not update %s: %s", example.name, pointer.name, exc)
    _save_ledger(ledger)


def _save_ledger(ledger: OutputLedger) -> None:
    try:
        ledger.save()
    except OSError as exc:  # a full disk must not hide the stage's own result
        log.error("%s: could not write the output ledger: %s", ledger.path, exc)


def _present(paths: list[Path], hashes: HashCache) -> dict[str, str]:
    """Hashes of the outputs that exist now (a failed run records them so they are not taken for
    the user's files later)."""
    found = (hashes.keyed_hash(p) for p in paths)
    return {key: digest for key, digest in found if digest is not None}


def _finish(example: Example, running: Manifest, ctx: StageContext, t0: float, *, status: str,
            outputs: dict[str, str] | None = None, error: str | None = None,
            traceback_file: Path | None = None) -> None:
    """Write the final manifest (last, atomically); raises OSError when it cannot."""
    final = running.model_copy(update={
        "status": status, "outputs": outputs or {}, "finished": now_iso(),
        "duration_s": round(time.perf_counter() - t0, 3), "peak_rss_mb": peak_rss_mb(),
        "notes": _json_safe(ctx.notes), "error": error,
        "traceback_file": str(traceback_file) if traceback_file else None,
    })
    write_manifest(example, final)


def _record(example: Example, manifest: Manifest) -> None:
    try:
        write_manifest(example, manifest)
    except OSError as exc:  # a full disk must not hide the stage's own error
        log.error("%s: could not write the %s manifest: %s", example.root, manifest.stage, exc)


def clean_example(example: Example, stage_names: Sequence[str]) -> list[Path]:
    """Delete what scail wrote for these stages: the output ledger's files (every sample, the
    `latest` pointer), what their manifests recorded, the manifests, and leftover temp files.

    Only files whose content is still what scail wrote go: user-provided files, and files the user
    changed by hand after scail wrote them, are never touched. Returns what was removed.
    """
    removed: list[Path] = []
    hashes = HashCache(example)
    ledger = OutputLedger(example)
    for name in stage_names:
        manifest = read_manifest(example, name)
        targets: dict[str, str] = dict(manifest.outputs) if manifest else {}
        targets.update((key, entry.sha256) for key, entry in ledger.stage_files(name).items())
        for key, digest in sorted(targets.items()):
            if not safe_key(key):
                log.warning("%s: %s manifest names %s, outside the example; left alone", example.root, name, key)
                continue
            path = Path(hashes.resolve(key))
            current = hashes.hash(path)
            if current is None or current == digest:
                ledger.forget(key)
            if current is not None and current == digest:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
        for path in (manifest_path(example, name), example.state_dir / f"{name}-resume.safetensors"):
            with contextlib.suppress(FileNotFoundError):  # the manifest, a mid-run checkpoint (animate/resume.py)
                path.unlink()
                removed.append(path)
    _save_ledger(ledger)
    previews = previews_dir(example)  # its files are in the ledger under their stage
    for folder in (example.root, example.state_dir, example.samples_dir, previews):
        if folder.is_dir():
            for tmp in temp_files(folder):
                with contextlib.suppress(OSError):
                    tmp.unlink()
                    removed.append(tmp)
    with contextlib.suppress(OSError):  # only when empty: a user's file there stays, and so does the folder
        previews.rmdir()
        stamps_path(example).unlink()  # the previews' signatures
    return removed

"""The pose worker: runs inside the pose env (or in-process) and turns one job into pose data.

    python -m scail.pose.worker JOBFILE      # one job, then exit
    python -m scail.pose.worker --serve      # read job-file paths from stdin, one per line (models stay loaded)
    ... --parent PID                         # exit when process PID (the runner) dies (scail/lifeline.py)

Protocol (JSON lines on stdout; everything else the libraries print goes to stderr):
    {"event": "start", "job": ...}
    {"event": "note", "backend": "mediapipe", "reason": "..."}
    {"event": "progress", "done": 12, "total": 65, "unit": "frames", "desc": "driving video"}
    {"event": "done", "summary": {...}}                      # results are on disk (written atomically)
    {"event": "error", "message": "...", "kind": "input|interrupted|internal"}
Exit codes in one-job mode: 0 done, 1 error, 130 interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scail.errors import InputError, Interrupted, ScailError
from scail.lifeline import JobLines, check_parent, die_with_parent

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]
PROTOCOL_VERSION = 1


class PoseJob(BaseModel):
    """One pose job: what the parent asks the worker to do (the job file's JSON)."""

    model_config = ConfigDict(extra="forbid")

    protocol: int = PROTOCOL_VERSION
    driving: Path
    reference: Path | None = None
    out_pose: Path
    out_ref_pose: Path | None = None
    backend: Literal["auto", "mediapipe", "nlf"] = "auto"
    mediapipe_model: Literal["heavy", "full"] = "heavy"
    fps: float = Field(16.0, gt=0)
    max_people: int = Field(1, ge=1, le=8)
    max_frames: int | None = Field(None, ge=1)
    smoothing: bool = False
    max_gap: int = Field(4, ge=0)
    start_s: float = Field(0.0, ge=0)
    end_s: float | None = Field(None, gt=0)
    postprocess: bool = True
    """Fill gaps / smooth here; False leaves it to the parent (the pose stage fixes flips first)."""
    weights_dir: Path
    cache_dir: Path
    device: str = "cpu"


def load_job(path: Path) -> PoseJob:
    """Read and validate a job file (raises InputError naming the file)."""
    try:
        return PoseJob.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the pose job file ({exc})") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"{path}: invalid pose job ({where}: {first['msg']})") from exc


class Runner:
    """Holds loaded backends across jobs (one per backend name)."""

    def __init__(self) -> None:
        self.backends: dict[str, Any] = {}

    def backend(self, name: str, job: PoseJob) -> Any:
        from scail.device import resolve_device

        device = str(resolve_device(job.device, what="pose device"))
        key = f"{name}:{device}:{job.mediapipe_model}"
        if key not in self.backends:
            from scail.pose.backends import make_backend

            self.backends[key] = make_backend(name, job.weights_dir, job.cache_dir, device, job.mediapipe_model)
        return self.backends[key]

    def run(self, job: PoseJob, emit: Emit) -> dict[str, Any]:
        """Do one job; returns the summary that goes into .scail/pose_summary.json."""
        from scail.pose.backends import resolve_backend
        from scail.pose.normalize import iter_driving, load_reference, plan_driving
        from scail.pose.postprocess import clean_tracks
        from scail.pose.schema import save_pose

        t0 = time.monotonic()
        name, reason = resolve_backend(job.backend, job.weights_dir)
        emit({"event": "note", "backend": name, "reason": reason})
        plan = plan_driving(job.driving, job.fps, job.max_frames, job.start_s, job.end_s)
        emit({"event": "progress", "done": 0, "total": plan.num_frames, "unit": "frames",
              "desc": f"loading {name}"})
        backend = self.backend(name, job)
        t_load = time.monotonic() - t0

        def on_frame(done: int) -> None:
            emit({"event": "progress", "done": done, "total": max(done, plan.num_frames), "unit": "frames",
                  "desc": f"pose ({name})"})

        t1 = time.monotonic()
        pose = backend.video(iter_driving(job.driving, plan, job.max_frames, job.start_s, job.end_s), plan.size_hw, plan.fps,
                             job.max_people, on_frame)
        if pose.num_frames == 0:
            raise InputError(f"{job.driving}: no frames decoded; is the video empty?")
        t_video = time.monotonic() - t1
        seen = _frames_with_person(pose)
        if not seen.any():
            raise InputError(f"{job.driving}: no person detected in any of the {pose.num_frames} frames; "
                             "the pose stage needs a visible person")
        filled = clean_tracks(pose, max_gap=job.max_gap, smoothing=job.smoothing) if job.postprocess else {}
        check_parent()  # write only while the runner (and its example lock) is alive
        save_pose(pose, job.out_pose)
        summary: dict[str, Any] = {
            "backend": name, "backend_reason": reason, "version": pose.version, "frames": pose.num_frames,
            "fps": pose.fps, "size_hw": list(pose.size), "source_fps": plan.source_fps,
            "source_hw": list(plan.source_hw), "people": pose.num_people,
            "track_ids": [int(t) for t in pose.track_id],
            "frames_without_detection": [int(i) for i in (~seen).nonzero()[0]],
            "frames_filled": filled,
            "frames_missing_after_fill": _missing_per_track(pose) if job.postprocess else {},
            "smoothing": job.smoothing,
            "timings_s": {"load": round(t_load, 2), "video": round(t_video, 2),
                          "per_frame": round(t_video / pose.num_frames, 4)},
        }
        if job.reference is not None and job.out_ref_pose is not None:
            emit({"event": "progress", "done": pose.num_frames, "total": pose.num_frames, "unit": "frames",
                  "desc": "reference image"})
            ref = backend.image(load_reference(job.reference, plan.size_hw))
            ref.fps = pose.fps
            check_parent()
            save_pose(ref, job.out_ref_pose)
            summary["reference_person_found"] = bool(_frames_with_person(ref).any())
        summary["timings_s"]["total"] = round(time.monotonic() - t0, 2)
        return summary

    def close(self) -> None:
        for b in self.backends.values():
            b.close()
        self.backends.clear()


def _frames_with_person(pose: Any) -> Any:
    import numpy as np

    return np.isfinite(pose.body3d[..., 0]).any(axis=(1, 2))


def _missing_per_track(pose: Any) -> dict[str, list[int]]:
    import numpy as np

    missing = ~np.isfinite(pose.body3d[..., 0]).any(axis=2)                  # (N, P)
    return {str(int(t)): missing[:, p].nonzero()[0].tolist() for p, t in enumerate(pose.track_id)}


def run_one(runner: Runner, job_path: Path, emit: Emit) -> int:
    """One job with every outcome reported as an event. Returns the exit code."""
    try:
        job = load_job(job_path)
        emit({"event": "start", "job": str(job_path), "pid": os.getpid()})
        summary = runner.run(job, emit)
    except KeyboardInterrupt:
        emit({"event": "error", "message": "pose worker interrupted", "kind": "interrupted"})
        return 130
    except Interrupted as exc:
        emit({"event": "error", "message": str(exc), "kind": "interrupted"})
        return 130
    except InputError as exc:
        emit({"event": "error", "message": str(exc), "kind": "input"})
        return 1
    except ScailError as exc:
        emit({"event": "error", "message": str(exc), "kind": "error"})
        return 1
    except Exception as exc:
        log.error("pose worker failed:\n%s", traceback.format_exc())
        emit({"event": "error", "message": f"pose worker crashed: {type(exc).__name__}: {exc}",
              "kind": "internal"})
        return 1
    emit({"event": "done", "summary": summary})
    return 0


def _event_stream() -> Emit:
    """Keep the real stdout for events; send fd 1 (stray prints, C++ logs) to stderr."""
    events = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    sys.stdout.flush()
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def emit(event: dict[str, Any]) -> None:
        events.write(json.dumps(event, default=str) + "\n")
        events.flush()

    return emit


def _parent_arg(args: list[str]) -> tuple[list[str], int | None]:
    """(args without `--parent PID`, PID or None)."""
    if "--parent" in args:
        i = args.index("--parent")
        if i + 1 < len(args) and args[i + 1].isdigit():
            return args[:i] + args[i + 2:], int(args[i + 1])
    return args, None


def main(argv: list[str] | None = None) -> int:
    args, parent = _parent_arg(list(sys.argv[1:] if argv is None else argv))
    if parent is not None:
        die_with_parent(parent)  # never outlive the runner (scail/lifeline.py)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's C++ INFO lines
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    emit = _event_stream()
    runner = Runner()
    try:
        if args == ["--serve"]:
            jobs = JobLines(sys.stdin)
            emit({"event": "ready", "pid": os.getpid(), "protocol": PROTOCOL_VERSION})
            for line in jobs:
                if not line.strip():
                    continue
                jobs.busy.set()  # from here, EOF on stdin means the runner died: exit at once
                try:
                    code = run_one(runner, Path(line.strip()), emit)
                finally:
                    jobs.busy.clear()
                if code == 130:
                    return 130  # Ctrl-C / SIGINT from the parent ends the worker
            return 0
        if len(args) != 1:
            emit({"event": "error", "message": "usage: python -m scail.pose.worker JOBFILE | --serve [--parent PID]",
                  "kind": "input"})
            return 2
        return run_one(runner, Path(args[0]), emit)
    except KeyboardInterrupt:
        emit({"event": "error", "message": "pose worker interrupted", "kind": "interrupted"})
        return 130
    finally:
        runner.close()


if __name__ == "__main__":
    sys.exit(main())

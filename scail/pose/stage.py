"""The pose stage: driving video + reference image -> .scail/pose.npz, ref_pose.npz, pose_summary.json.

The work happens in the pose worker (scail/pose/worker.py), in the isolated pose env or, with
`pose.in_process`, in this interpreter. One worker serves the whole batch, so models load once;
`close()` ends it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from scail.atomic import temp_path
from scail.config import PoseConfig, Settings
from scail.example import Example
from scail.pose.client import PoseWorker, worker_python
from scail.pose.flips import FlipReport, fix_flips
from scail.pose.inputs import check_driving, check_reference
from scail.pose.postprocess import clean_tracks
from scail.pose.schema import PoseData, load_pose, save_pose
from scail.pose.worker import PoseJob
from scail.stage import StageContext


class PoseStage:
    """Stage "pose" (see scail/stage.py for the protocol)."""

    name: ClassVar[str] = "pose"
    version: ClassVar[str] = "2"  # 2: flips fixed, clean-up in the parent

    def __init__(self, config: PoseConfig, settings: Settings | None = None) -> None:
        self.config = config
        self.settings = settings or Settings.from_env()
        self._worker: PoseWorker | None = None
        self._resolved: PoseConfig | None = None
        self.backend_reason = ""

    def params(self) -> PoseConfig:
        """The config with `backend: auto` resolved to the backend that will run (mediapipe or nlf),
        so the fingerprint and manifest name what made the pose data, and a change of what `auto`
        picks (nlf weights appear) makes it stale."""
        if self._resolved is None:
            from scail.pose.backends import resolve_backend

            name, self.backend_reason = resolve_backend(self.config.backend, self.settings.weights_dir)
            self._resolved = self.config.model_copy(update={"backend": name})
        return self._resolved

    def inputs(self, example: Example) -> list[Path]:
        return [example.driving(), example.reference()]

    def outputs(self, example: Example) -> list[Path]:
        return [example.pose_data, example.ref_pose_data, summary_path(example)]

    def _get_worker(self, ctx: StageContext) -> PoseWorker:
        if self._worker is None:
            def env_progress(done: int, total: int | None, desc: str) -> None:
                ctx.progress(done, total, unit="packages", desc=f"pose env: {desc}")

            python = worker_python(self.config.in_process, self.settings.cache_dir, env_progress)
            if self.params().backend == "mediapipe" and self.config.mediapipe_model == "heavy":
                self._install_heavy_model(python, ctx)
            self._worker = PoseWorker(python, in_process=self.config.in_process)
        return self._worker

    def _install_heavy_model(self, python: Path | None, ctx: StageContext) -> None:
        """MediaPipe's heavy landmark model into the worker's mediapipe package (once; checked)."""
        from scail.errors import ScailError
        from scail.pose import landmark_model

        env = python.parent.parent if python is not None else None  # <env>/bin/python
        package = landmark_model.mediapipe_dir(env)
        if package is None:
            where = f"the pose env {env}" if env is not None else "this interpreter"
            raise ScailError(f"mediapipe is not installed in {where}; "
                             + ("delete that folder to rebuild it" if env is not None else "drop pose.in_process"))
        ctx.phase("pose model: MediaPipe's heavy landmark model")

        def progress(done: int, total: int | None) -> None:
            ctx.progress(done >> 20, None if total is None else total >> 20, unit="MiB",
                         desc=f"downloading {landmark_model.HEAVY.name}")

        landmark_model.ensure_installed(package, self.settings.weights_dir, on_progress=progress)

    def job(self, example: Example, out_pose: Path | None = None, out_ref_pose: Path | None = None) -> PoseJob:
        """The worker's job. With `out_pose`/`out_ref_pose` (raw files) the worker leaves the
        clean-up to `postprocess` here, in the parent."""
        cfg = self.params()  # backend `auto` resolved: the worker runs what the fingerprint names
        raw = out_pose is not None
        return PoseJob(
            driving=example.driving().resolve(), reference=example.reference().resolve(),
            out_pose=(out_pose or example.pose_data).resolve(),
            out_ref_pose=(out_ref_pose or example.ref_pose_data).resolve(),
            backend=cfg.backend, mediapipe_model=cfg.mediapipe_model, fps=cfg.fps, max_people=cfg.max_people, max_frames=cfg.max_frames,
            start_s=cfg.start_s, end_s=cfg.end_s,
            smoothing=cfg.smoothing, max_gap=cfg.max_gap_frames, postprocess=not raw,
            weights_dir=self.settings.weights_dir, cache_dir=self.settings.cache_dir, device=cfg.device,
        )

    def run(self, example: Example, ctx: StageContext) -> None:
        # the worker writes raw pose data to private temp files; nothing lands under the stage's
        # output names unless every step below succeeds (a failed run leaves no pose.npz behind)
        # temp names of the outputs (scail.atomic's rule): what a killed run leaves is removed before
        # the next run of this stage and by `scail clean`; only this process renames them into place,
        # under the example lock (the worker exits when this process dies: scail/lifeline.py)
        raw_pose, raw_ref = temp_path(example.pose_data), temp_path(example.ref_pose_data)
        try:
            self._run(example, ctx, raw_pose, raw_ref)
        finally:
            for tmp in (raw_pose, raw_ref):
                tmp.unlink(missing_ok=True)

    def _run(self, example: Example, ctx: StageContext, raw_pose: Path, raw_ref: Path) -> None:
        job = self.job(example, raw_pose, raw_ref)
        check_driving(job.driving, self.config.fps, self.config.start_s, self.config.end_s)
        check_reference(job.reference or example.reference())
        ctx.phase("pose env and worker startup")
        worker = self._get_worker(ctx)

        def on_event(event: dict[str, Any]) -> None:
            kind = event.get("event")
            if kind == "progress":
                ctx.progress(int(event.get("done", 0)), event.get("total"), str(event.get("unit", "frames")),
                             str(event.get("desc", "")))
            elif kind == "note":
                ctx.note(backend=event.get("backend"), backend_reason=event.get("reason"))
                ctx.log.info("%s: pose backend %s (%s)", example.name, event.get("backend"), event.get("reason"))
                ctx.phase(f"backend {event.get('backend')}: loading its models")

        summary = worker.run(job, on_event, ctx.cancel, self.config.timeout_s)
        pose = load_pose(raw_pose)
        summary.update(postprocess(pose, self.config))
        with ctx.atomic_output(example.pose_data) as tmp:
            save_pose(pose, tmp)
        with ctx.atomic_output(example.ref_pose_data) as tmp:
            save_pose(load_pose(raw_ref), tmp)
        ctx.note(flips_fixed={t: len(v) for t, v in summary["flips_fixed"].items()},
                 people_found=summary["people_found"])
        people = describe_people(summary["people_found"], pose.num_frames)
        if len(summary["people_found"]) > 1:
            ctx.log.warning("%s: %s; all are animated unless --person N (or `person: N` in scail.yaml) "
                            "picks one", example.name, people)
        else:
            ctx.log.info("%s: %s", example.name, people)
        ctx.note(backend=summary.get("backend"), backend_reason=self.backend_reason or summary.get("backend_reason"),
                 pose_frames=summary.get("frames"), pose_people=summary.get("people"),
                 frames_without_detection=len(summary.get("frames_without_detection", [])))
        with ctx.atomic_output(summary_path(example)) as tmp:
            tmp.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None


def postprocess(pose: PoseData, config: PoseConfig) -> dict[str, Any]:
    """The parent's clean-up of raw pose data from any backend, in place: flips first (a gap must
    not be interpolated between a flipped and a correct frame), then gap filling and smoothing.
    Returns the summary entries it produced."""
    flips = fix_flips(pose) if config.fix_flips else FlipReport()
    filled = clean_tracks(pose, max_gap=config.max_gap_frames, smoothing=config.smoothing)
    missing = ~np.isfinite(pose.body3d[..., 0]).any(axis=2)                          # (N, P)
    return {
        "people_found": people_found(pose),
        "flips_fixed": {t: sorted(i for frames in per.values() for i in frames)
                        for t, per in flips.to_json().items()},
        "flips_fixed_by_kind": flips.to_json(),
        "frames_filled": filled,
        "frames_missing_after_fill": {str(int(t)): missing[:, p].nonzero()[0].tolist()
                                      for p, t in enumerate(pose.track_id)},
    }


def people_found(pose: PoseData) -> list[dict[str, Any]]:
    """Every tracked person with their frame coverage (for choosing one with --person), most seen first."""
    seen = np.isfinite(pose.body3d[..., 0, 0])                                     # (N, P)
    people = [{"person": int(t), "frames": int(seen[:, p].sum()),
               "coverage": round(float(seen[:, p].mean()), 3) if pose.num_frames else 0.0,
               "first_frame": int(np.argmax(seen[:, p])), "last_frame": int(len(seen) - 1 - np.argmax(seen[::-1, p]))}
              for p, t in enumerate(pose.track_id) if seen[:, p].any()]
    return sorted(people, key=lambda d: -d["frames"])


def describe_people(people: list[dict[str, Any]], num_frames: int) -> str:
    """'2 people: person 0 in 65/65 frames (100%), person 1 in 20/65 (31%)'."""
    parts = [f"person {d['person']} in {d['frames']}/{num_frames} frames ({d['coverage']:.0%})" for d in people]
    return f"{len(people)} {'person' if len(people) == 1 else 'people'}: " + ", ".join(parts)


def summary_path(example: Example) -> Path:
    """The human summary (backend, people, frames without detection, timings); `.scail/pose.json` is
    the engine's manifest of this stage."""
    return example.state_dir / "pose_summary.json"

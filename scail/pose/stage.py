"""The pose stage: driving video + reference image -> .scail/pose.npz, ref_pose.npz, pose_summary.json.

The work happens in the pose worker (scail/pose/worker.py), in the isolated pose env or, with
`pose.in_process`, in this interpreter. One worker serves the whole batch, so models load once;
`close()` ends it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from scail.config import PoseConfig, Settings
from scail.example import Example
from scail.pose.client import PoseWorker, worker_python
from scail.pose.worker import PoseJob
from scail.stage import StageContext


class PoseStage:
    """Stage "pose" (see scail/stage.py for the protocol)."""

    name: ClassVar[str] = "pose"
    version: ClassVar[str] = "1"

    def __init__(self, config: PoseConfig, settings: Settings | None = None) -> None:
        self.config = config
        self.settings = settings or Settings.from_env()
        self._worker: PoseWorker | None = None

    def params(self) -> PoseConfig:
        return self.config

    def inputs(self, example: Example) -> list[Path]:
        return [example.driving(), example.reference()]

    def outputs(self, example: Example) -> list[Path]:
        return [example.pose_data, example.ref_pose_data, summary_path(example)]

    def _get_worker(self, ctx: StageContext) -> PoseWorker:
        if self._worker is None:
            def env_progress(done: int, total: int | None, desc: str) -> None:
                ctx.progress(done, total, unit="packages", desc=f"pose env: {desc}")

            python = worker_python(self.config.in_process, self.settings.cache_dir, env_progress)
            self._worker = PoseWorker(python, in_process=self.config.in_process)
        return self._worker

    def job(self, example: Example) -> PoseJob:
        cfg = self.config
        return PoseJob(
            driving=example.driving().resolve(), reference=example.reference().resolve(),
            out_pose=example.pose_data.resolve(), out_ref_pose=example.ref_pose_data.resolve(),
            backend=cfg.backend, fps=cfg.fps, max_people=cfg.max_people, max_frames=cfg.max_frames,
            smoothing=cfg.smoothing, max_gap=cfg.max_gap_frames, weights_dir=self.settings.weights_dir,
            cache_dir=self.settings.cache_dir, device=cfg.device,
        )

    def run(self, example: Example, ctx: StageContext) -> None:
        job = self.job(example)
        worker = self._get_worker(ctx)

        def on_event(event: dict[str, Any]) -> None:
            kind = event.get("event")
            if kind == "progress":
                ctx.progress(int(event.get("done", 0)), event.get("total"), str(event.get("unit", "frames")),
                             str(event.get("desc", "")))
            elif kind == "note":
                ctx.note(backend=event.get("backend"), backend_reason=event.get("reason"))
                ctx.log.info("%s: pose backend %s (%s)", example.name, event.get("backend"), event.get("reason"))
                ctx.progress(0, None, "frames", f"backend {event.get('backend')}")

        summary = worker.run(job, on_event, ctx.cancel, self.config.timeout_s)
        ctx.note(backend=summary.get("backend"), backend_reason=summary.get("backend_reason"),
                 pose_frames=summary.get("frames"), pose_people=summary.get("people"),
                 frames_without_detection=len(summary.get("frames_without_detection", [])))
        with ctx.atomic_output(summary_path(example)) as tmp:
            tmp.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None


def summary_path(example: Example) -> Path:
    """The human summary (backend, people, frames without detection, timings); `.scail/pose.json` is
    the engine's manifest of this stage."""
    return example.state_dir / "pose_summary.json"

"""Stage "render": .scail/pose.npz -> rendered.mp4 (+ rendered_aligned.mp4 with a reference pose)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from scail.config import RenderConfig
from scail.device import resolve_device
from scail.errors import InputError
from scail.example import Example
from scail.pose.schema import PoseData, load_pose
from scail.render.align import AlignBounds
from scail.render.pipeline import PreparedRender, iter_frames, prepare_render
from scail.stage import StageContext


class RenderStage:
    """Stage "render" (see scail/stage.py for the protocol)."""

    name: ClassVar[str] = "render"
    version: ClassVar[str] = "1"

    def __init__(self, config: RenderConfig) -> None:
        self.config = config

    def params(self) -> RenderConfig:
        return self.config

    def inputs(self, example: Example) -> list[Path]:
        if not example.pose_data.is_file():
            raise InputError(f"{example.pose_data}: pose data not found; run 'scail pose' on {example.root} first")
        return [example.pose_data] + ([example.ref_pose_data] if example.ref_pose_data.is_file() else [])

    def _aligned(self, example: Example) -> bool:
        return self.config.align and example.ref_pose_data.is_file()

    def outputs(self, example: Example) -> list[Path]:
        return [example.rendered] + ([example.rendered_aligned] if self._aligned(example) else [])

    def _bounds(self) -> AlignBounds:
        c = self.config
        return AlignBounds(scale=c.align_scale, stretch=c.align_stretch, shift_frac=c.align_shift_frac,
                           face_scale=c.align_face_scale)

    def _prepare(self, pose: PoseData, ref: PoseData | None, align: bool) -> PreparedRender:
        c = self.config
        return prepare_render(pose, c.overlay, ref, radius_mm=c.radius_mm, align=align, align_bounds=self._bounds(),
                              retarget=c.retarget and ref is not None, multi_person_palettes=c.multi_person_palettes)

    def _write(self, prep: PreparedRender, path: Path, ctx: StageContext) -> None:
        from scail.video import VideoWriter

        desc = path.name
        ctx.progress(0, prep.num_frames, "frames", desc)
        device = resolve_device(self.config.device, what="render device")
        with ctx.atomic_output(path) as tmp, VideoWriter(tmp, prep.fps, crf=self.config.crf, atomic=False) as w:
            frames = iter_frames(prep, device, on_progress=lambda done, total: ctx.progress(done, total, "frames", desc),
                                 cpu_threads=self.config.cpu_threads)
            for frame in frames:
                w.write(frame)

    def run(self, example: Example, ctx: StageContext) -> None:
        c = self.config
        ctx.phase("reading pose data")
        pose = load_pose(example.pose_data)
        if pose.num_frames == 0:
            raise InputError(f"{example.pose_data}: pose data has no frames; rerun 'scail pose --force'")
        if c.person is not None:
            pose = choose_person(pose, c.person, example.pose_data)
        ref: PoseData | None = load_pose(example.ref_pose_data) if example.ref_pose_data.is_file() else None
        if c.retarget and ref is None:
            ctx.log.warning("%s: render.retarget needs .scail/ref_pose.npz; driving proportions kept", example.name)
        ctx.phase("preparing the skeleton")
        prep = self._prepare(pose, ref, align=False)
        self._log_warnings(prep, ctx, example)
        ctx.note(render_frames=prep.num_frames, render_size_hw=list(prep.size_hw), render_fps=prep.fps,
                 render_device=str(resolve_device(c.device, what="render device")), render_warnings=list(prep.warnings))
        self._write(prep, example.rendered, ctx)
        if self._aligned(example):
            ctx.phase("aligning to the reference")
            aligned = self._prepare(pose, ref, align=True)
            self._log_warnings(aligned, ctx, example)
            ctx.note(alignment=aligned.alignment.as_dict() if aligned.alignment else None,
                     aligned_warnings=list(aligned.warnings))
            self._write(aligned, example.rendered_aligned, ctx)

    @staticmethod
    def _log_warnings(prep: PreparedRender, ctx: StageContext, example: Example) -> None:
        for msg in prep.warnings:
            ctx.log.warning("%s: render: %s", example.name, msg)

    def close(self) -> None:
        """Nothing heavy is held between examples."""


def choose_person(pose: PoseData, person: int, source: Path) -> PoseData:
    """Only the tracked person `person` (a track id), or a one-line error listing the ones there are."""
    slots = [int(i) for i in np.flatnonzero(pose.track_id == person)]
    seen = np.isfinite(pose.body3d[..., 0, 0])                                     # (N, P)
    if not slots or not seen[:, slots[0]].any():
        found = [int(t) for p, t in enumerate(pose.track_id) if seen[:, p].any()]
        raise InputError(f"{source}: no person {person} in the pose data (people found: {found}; see "
                         ".scail/pose_summary.json); pick one of them with --person or `person:` in scail.yaml")
    return pose.select_people(slots[:1])

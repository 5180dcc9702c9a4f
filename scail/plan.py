"""`scail plan` / `scail run --dry-run`: what a run would do, how long it takes, whether it fits.

Per example: which stages will run (the engine's own freshness answer, as `scail status` and the
pre-flight use it), the frames animate will see (the rendered pose video when it is there and
stays, else the pose data, else the driving video resampled to `pose.fps` over scail.yaml's
start/end), the temporal windows (`animate/windows.py`) or SCAIL-2 segments (`pipeline2.plan_segments`),
the size, the steps, and the estimate of scail/estimate.py on this machine's GPU (scail/gpu_speed.py).
Nothing is decoded beyond the video headers and no model is built.

An example that cannot be planned (no reference, unreadable video) gets its one-line reason and the
batch plan goes on; an example whose peak memory does not fit the GPU gets the settings that would
make it fit (`fixes`), and `check_fit` turns that into the refusal of `scail run`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scail.errors import ScailError
from scail.estimate import AnimateEstimate, AnimateWork, estimate
from scail.example import Example

if TYPE_CHECKING:
    from scail.batch import ExampleJob
    from scail.config import AnimateConfig, PipelineConfig
    from scail.gpu_speed import GpuInfo, GpuSpeed, GpuTable


@dataclass
class ExamplePlan:
    """The plan of one example (JSON: `to_dict`)."""

    name: str
    root: str
    stages: list[tuple[str, str, str]] = field(default_factory=list)
    """(stage, status, reason) as `scail status` reports them."""
    run: list[str] = field(default_factory=list)
    """The stages the run will execute, in order."""
    frames: int | None = None
    frames_from: str = ""
    work: AnimateWork | None = None
    estimate: AnimateEstimate | None = None
    render_s: float | None = None
    fits: bool | None = None
    """None: the GPU's memory is unknown (CPU, or a GPU named without memory)."""
    fixes: list[str] = field(default_factory=list)
    """Settings under which it would fit, as the user types them."""
    error: str = ""

    @property
    def total_s(self) -> float | None:
        """The animate sample (+ render when estimated); None when animate runs at unknown speed."""
        animate = 0.0
        if "animate" in self.run:
            if self.estimate is None or self.estimate.total_s is None:
                return None
            animate = self.estimate.total_s
        return animate + (self.render_s or 0.0)

    def to_dict(self) -> dict[str, Any]:
        work = dataclasses.asdict(self.work) if self.work is not None else None
        return {"name": self.name, "root": self.root,
                "stages": [{"stage": s, "status": st, "reason": r} for s, st, r in self.stages],
                "run": self.run, "frames": self.frames, "frames_from": self.frames_from, "animate": work,
                "estimate": self.estimate.to_dict() if self.estimate else None,
                "render_s": self.render_s, "total_s": self.total_s, "fits": self.fits, "fixes": self.fixes,
                "error": self.error}


@dataclass
class BatchPlan:
    gpu: GpuInfo
    row: GpuSpeed | None
    pipeline: str
    examples: list[ExamplePlan]
    load_s: float | None = None
    """Weights loaded once per batch, plus one compile per distinct window shape."""
    table_files: list[str] = field(default_factory=list)
    headroom: float = 1.0
    """The allocator's reserved / allocated ratio the fit check applies."""

    @property
    def to_run(self) -> list[ExamplePlan]:
        return [e for e in self.examples if e.run]

    @property
    def total_s(self) -> float | None:
        times = [e.total_s for e in self.to_run]
        if any(t is None for t in times):
            return None
        return sum(t for t in times if t is not None) + (self.load_s or 0.0)

    @property
    def peak_gib(self) -> float | None:
        peaks = [e.estimate.peak_gib for e in self.to_run if e.estimate and "animate" in e.run]
        return max(peaks) if peaks else None

    @property
    def unfit(self) -> list[ExamplePlan]:
        return [e for e in self.to_run if e.fits is False]

    def to_dict(self) -> dict[str, Any]:
        return {"gpu": {"name": self.gpu.name, "memory_gib": self.gpu.memory_gib, "local": self.gpu.local,
                        "flash_attn": self.gpu.flash_attn, "fp8_attention": self.gpu.fp8_attention,
                        "table_row": self.row.name if self.row else None,
                        "source": self.row.source if self.row else None,
                        "dit_s_per_step": self.row.dit_s_per_step if self.row else None},
                "pipeline": self.pipeline, "table_files": self.table_files,
                "examples": [e.to_dict() for e in self.examples],
                "totals": {"examples": len(self.examples), "to_run": len(self.to_run), "load_s": self.load_s,
                           "total_s": self.total_s, "peak_gib": self.peak_gib,
                           "unfit": [e.name for e in self.unfit]}}


# ----------------------------------------------------------------------------------------------
# Frames, size, windows
# ----------------------------------------------------------------------------------------------


def _pose_frames(job: ExampleJob, example: Example, run: Sequence[str]) -> tuple[int, str]:
    """Frames of the pose video animate will read, and where that number comes from."""
    from scail.video import probe

    video = example.pose_video()
    if video is not None and "render" not in run:
        return probe(video).num_frames, video.name
    if "pose" not in run and example.pose_data.is_file():
        from scail.pose.schema import load_pose

        return load_pose(example.pose_data).num_frames, ".scail/pose.npz"
    from scail.pose.normalize import plan_driving

    pose = job.config.pose
    driving = example.driving()
    plan = plan_driving(driving, pose.fps, pose.max_frames, pose.start_s, pose.end_s)
    span = f" {pose.start_s:g}-{pose.end_s:g} s" if pose.end_s is not None else (
        f" from {pose.start_s:g} s" if pose.start_s else "")
    return plan.num_frames, f"{driving.name}{span} at {pose.fps:g} fps"


def _size_hw(cfg: AnimateConfig, example: Example) -> tuple[int, int]:
    """The output size animate picks: `size_hw`, else by the reference's orientation."""
    from scail.animate.stage import TINY_RANDOM_DOWNSCALE
    from scail.frame_geometry import target_size_hw
    from scail.images import image_size

    if cfg.size_hw is not None:
        return cfg.size_hw
    h, w = target_size_hw(*image_size(example.reference()))
    down = TINY_RANDOM_DOWNSCALE if cfg.model.startswith("tiny-random") else 1
    return h // down, w // down


def _work(cfg: AnimateConfig, size_hw: tuple[int, int], frames: int, windows: tuple[int, ...],
          extra_refs: int = 0, decoded_frames: int = 0) -> AnimateWork:
    """The `AnimateWork` of these frames and windows under `cfg`'s settings."""
    return AnimateWork(model=cfg.model, size_hw=size_hw, frames=frames, windows=windows, steps=cfg.steps,
                       cfg=cfg.guide_scale != 1.0, fast=cfg.fast, uncond_every=cfg.fast_uncond_every,
                       offload=cfg.offload, dtype=cfg.dtype, extra_refs=extra_refs, gpus=cfg.parallel.gpus,
                       decoded_frames=decoded_frames)


def animate_work(job: ExampleJob, example: Example, run: Sequence[str]) -> tuple[AnimateWork, int, str]:
    """(the work of the animate stage, its frames, where they come from)."""
    from scail.animate import stage2
    from scail.animate.windows import WindowConfig, latent_count

    cfg = job.config.animate
    size = _size_hw(cfg, example)
    if stage2.is_scail2(cfg.model):
        from scail.animate.inputs2 import driving_video, extra_references
        from scail.animate.pipeline2 import plan_segments
        from scail.video import probe

        mode = stage2.resolved_mode(example, cfg)
        driving = driving_video(example, mode)
        # end-to-end and replacement read the raw video (every frame, its own fps); pose mode a
        # skeleton render, which the render stage may still (re)write
        if driving is not None and (mode != "pose" or driving.name == "rendered_v2.mp4" or "render" not in run):
            info = probe(driving)
            frames, source = info.num_frames, f"{driving.name} ({mode}, every frame at {info.fps:g} fps)"
        else:
            frames, source = _pose_frames(job, example, run)
        frames = min(frames, cfg.max_frames or frames)
        segments = plan_segments(frames, cfg.window_frames)
        lengths = tuple(latent_count(e - s) for s, e in segments)
        work = _work(cfg, size, segments[-1][1], lengths, extra_refs=len(extra_references(example.root)),
                     decoded_frames=sum(e - s for s, e in segments))
        return work, frames, source
    frames, source = _pose_frames(job, example, run)
    frames = min(frames, cfg.max_frames or frames)
    windows = WindowConfig(cfg.window_frames, cfg.window_overlap).plan(latent_count(frames))
    spans = tuple(e - s for s, e in windows)
    return _work(cfg, size, frames, spans), frames, source


# ----------------------------------------------------------------------------------------------
# Fit
# ----------------------------------------------------------------------------------------------


def fits(est: AnimateEstimate, memory_gib: float | None, headroom: float) -> bool | None:
    return None if memory_gib is None else est.peak_gib * headroom <= memory_gib


def fixes_for(work: AnimateWork, cfg: AnimateConfig, table: GpuTable, gpu: GpuInfo, row: GpuSpeed | None) -> list[str]:
    """The settings (as typed on the command line) under which `work` would fit `gpu`."""
    from scail.animate.windows import MAX_WINDOW_LATENTS, pixel_count

    mem, head = gpu.memory_gib, table.memory.allocator_headroom

    def ok(w: AnimateWork) -> bool:
        return bool(fits(estimate(w, row, table.memory, gpu.flash_attn, gpu.fp8_attention), mem, head))

    found: list[str] = []
    if not work.fast and work.offload != "blocks" and ok(dataclasses.replace(work, offload="blocks")):
        found.append("--set animate.offload=blocks")
    if not work.fast and work.offload != "blocks" and ok(dataclasses.replace(work, fast=True)):
        preset = " as --pipeline scail-preview-fast" if work.model == "scail-preview-14b" else ""
        found.append(f"--set animate.fast=true (fast mode{preset})")
    longest = max(work.windows)
    for latents in range(min(longest, MAX_WINDOW_LATENTS) - 1, 1, -1):
        if ok(dataclasses.replace(work, windows=(latents,))):
            frames = pixel_count(latents)
            overlap = min(cfg.window_overlap, frames - 5)
            extra = f" --set animate.window_overlap={overlap}" if overlap != cfg.window_overlap else ""
            found.append(f"--set animate.window_frames={frames}{extra} (fewer frames per window)")
            break
    return found


# ----------------------------------------------------------------------------------------------
# The batch
# ----------------------------------------------------------------------------------------------


def plan_example(job: ExampleJob, table: GpuTable, gpu: GpuInfo, row: GpuSpeed | None) -> ExamplePlan:
    """The plan of one job; a problem with its inputs becomes `error` (one line), never an exception."""
    from scail.batch import build_stages
    from scail.engine import one_line
    from scail.preflight import stages_to_run

    example = Example(job.root)
    plan = ExamplePlan(example.name, str(job.root))
    try:
        stages = build_stages(job.config, job.stages, job.prompt)
        statuses, todo = stages_to_run(job, stages)
        plan.stages = [(s.name, st.value, reason) for s, (st, reason) in zip(stages, statuses, strict=True)]
        plan.run = [s.name for s in stages if s.name in todo]
        if "animate" in plan.run:
            work, plan.frames, plan.frames_from = animate_work(job, example, plan.run)
            plan.work = work
            plan.estimate = est = estimate(work, row, table.memory, gpu.flash_attn, gpu.fp8_attention)
            from scail.animate.resume import CHECKPOINT_NAME

            if (example.state_dir / CHECKPOINT_NAME).is_file() and "animate" not in job.force:
                est.notes.append("a mid-clip checkpoint may resume it (less time, if its settings match)")
            plan.fits = fits(est, gpu.memory_gib, table.memory.allocator_headroom)
            if plan.fits is False:
                plan.fixes = fixes_for(work, job.config.animate, table, gpu, row)
        elif "render" in plan.run:
            plan.frames, plan.frames_from = _pose_frames(job, example, plan.run)
        if "render" in plan.run and plan.frames is not None:
            plan.render_s = _render_s(job.config, gpu, row, plan.frames)
    except ScailError as exc:
        plan.error = one_line(exc)
    except (OSError, ValueError) as exc:
        plan.error = f"{example.root}: {one_line(exc)}"
    return plan


def _render_s(config: PipelineConfig, gpu: GpuInfo, row: GpuSpeed | None, frames: int) -> float | None:
    """Render time where it was measured: on the GPU (render.device cuda/auto) of a table row."""
    device = config.render.device
    on_gpu = device.startswith("cuda") or (device == "auto" and gpu.name != "cpu")
    if not on_gpu or row is None or "render_ms_per_frame" not in row.stages:
        return None
    return row.stages["render_ms_per_frame"] * frames / 1e3


def plan_batch(jobs: Sequence[ExampleJob], table: GpuTable, gpu: GpuInfo, pipeline: str) -> BatchPlan:
    """Plan every job; the weights load (and each new window shape compiles) once per batch."""
    row = table.find(gpu.name) if gpu.name != "cpu" else None
    plan = BatchPlan(gpu, row, pipeline, [plan_example(j, table, gpu, row) for j in jobs],
                     table_files=[str(p) for p in table.files], headroom=table.memory.allocator_headroom)
    animated = [e for e in plan.to_run if "animate" in e.run and e.work is not None]
    if animated and row is not None and "load_s" in row.stages:
        shapes = {(e.work.size_hw, w) for e in animated if e.work for w in e.work.windows}
        compile_s = row.stages.get("compile_s", 0.0) * len(shapes) if _compiles(jobs) else 0.0
        plan.load_s = row.stages["load_s"] + compile_s
    return plan


def _compiles(jobs: Sequence[ExampleJob]) -> bool:
    return any(j.config.animate.compile != "off" for j in jobs)


def fits_any_example(cfg: AnimateConfig, table: GpuTable, gpu: GpuInfo) -> bool:
    """Whether every SCAIL-Preview example fits under `cfg`, whatever its length: the largest
    window (`window_frames` at the configured size; both orientations have the same tokens) is an
    upper bound. Lets `scail run` skip the per-example plan in the common case. SCAIL-2 (extra
    references add tokens per example) is never bounded here."""
    from scail.animate.stage import TINY_RANDOM_DOWNSCALE
    from scail.animate.stage2 import is_scail2
    from scail.animate.windows import latent_count

    if is_scail2(cfg.model):
        return False
    down = TINY_RANDOM_DOWNSCALE if cfg.model.startswith("tiny-random") and cfg.size_hw is None else 1
    h, w = cfg.size_hw or (512 // down, 896 // down)
    work = _work(cfg, (h, w), cfg.window_frames, (latent_count(cfg.window_frames),))
    est = estimate(work, table.find(gpu.name), table.memory, gpu.flash_attn, gpu.fp8_attention)
    return bool(fits(est, gpu.memory_gib, table.memory.allocator_headroom))


def check_fit(plan: BatchPlan) -> None:
    """Raise the one-line refusal of `scail run` when an example with animate work cannot fit."""
    unfit = plan.unfit
    if not unfit:
        return
    first = unfit[0]
    assert first.estimate is not None
    need = first.estimate.peak_gib
    others = f" (and {len(unfit) - 1} more)" if len(unfit) > 1 else ""
    fix = ("; it would fit with " + " or ".join(first.fixes)) if first.fixes else (
        "; no single setting makes it fit: try a larger GPU or --gpus N")
    raise ScailError(f"{first.name}{others}: animate needs about {need:.1f} GiB of GPU memory at peak "
                     f"(x{plan.headroom:.2f} allocator headroom), {plan.gpu.name} has {plan.gpu.memory_gib:.1f} GiB"
                     f"{fix}; `scail plan` shows the estimates")


def default_table(extra: Path | None) -> GpuTable:
    """The shipped table plus `extra`, else $SCAIL_GPU_TABLE."""
    from scail.config import Settings
    from scail.gpu_speed import load_table

    return load_table(extra if extra is not None else Settings.from_env().gpu_table)

"""The animate stage for SCAIL-2 models: identity masks, mode, segments, one sample per example.

`AnimateStage` hands over to these functions when `animate.model` is a SCAIL-2 model. The flow:

1. the mode (`animate.scail2_mode`, default by the files present: `inputs2.detect_mode`);
2. missing identity masks are made from the pose stage's tracks (`animate.masks`, `mask_stage`);
   masks in the folder are the user's and are used as they are;
3. the inputs are read and prepared the official way (`inputs2`), the video is generated in
   81-frame segments with SCAIL-2's clean-history continuation (`pipeline2`) and written to
   `samples/<example>_<seed>.mp4`.

Fingerprint inputs: the reference, the driving video, both masks (or, before they exist, the pose
tracks they will be made from), the extra references and their masks, and prompt.txt.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scail.animate import attention
from scail.errors import InputError

if TYPE_CHECKING:
    from scail.animate.inputs2 import Scail2Files, Scail2Mode
    from scail.animate.pipeline import AnimatePipeline
    from scail.config import AnimateConfig
    from scail.example import Example
    from scail.stage import StageContext

SCAIL2_MODELS = ("scail-2-14b", "tiny-random-scail-2")
SEGMENTS_DIR = "scail2-segments"
"""Under `.scail/`: the finished segments of the sample being made (`pipeline2.SegmentStore`)."""
TINY_RANDOM_DOWNSCALE = 4


def is_scail2(model: str) -> bool:
    """Whether `animate.model` names a SCAIL-2 model."""
    return model in SCAIL2_MODELS


def resolved_mode(example: Example, cfg: AnimateConfig) -> Scail2Mode:
    from scail.animate.inputs2 import detect_mode

    return detect_mode(example.root) if cfg.scail2_mode == "auto" else cfg.scail2_mode


def driving_for(example: Example, cfg: AnimateConfig) -> Path:
    """The video that drives the DiT (its masks must follow it frame by frame)."""
    from scail.animate.inputs2 import driving_video

    mode = resolved_mode(example, cfg)
    video = driving_video(example, mode)
    if video is None:
        raise InputError(
            f"{example.root}: SCAIL-2 {mode} mode has no driving video (driving.mp4, rendered_v2.mp4"
            + (", or a skeleton render from the render stage" if mode == "pose" else "") + "); add one"
        )
    return video


def input_files(example: Example, cfg: AnimateConfig) -> list[Path]:
    """The files whose content decides the sample (the stage's fingerprint inputs)."""
    from scail.animate.inputs2 import locate

    try:
        return locate(example, resolved_mode(example, cfg)).all()
    except InputError:
        if cfg.masks == "none":
            raise
    # masks still to be made: they follow from the pose tracks, the driving video and the reference
    paths = [example.reference(), driving_for(example, cfg)]
    paths += [p for p in (example.pose_data, example.ref_pose_data) if p.is_file()]
    return paths


def prepare_files(example: Example, cfg: AnimateConfig, cache_dir: Path | None) -> Scail2Files:
    """Make missing masks (if configured) and locate every input; InputError names what is missing."""
    from scail.animate.inputs2 import locate
    from scail.animate.mask_stage import ensure_masks

    mode = resolved_mode(example, cfg)
    driving = driving_for(example, cfg)
    pose_fps = None
    if mode == "pose" and driving.name != "rendered_v2.mp4" and example.pose_data.is_file():
        from scail.pose.schema import load_pose

        pose_fps = load_pose(example.pose_data).fps  # the skeleton render runs at the pose fps
    ensure_masks(example, driving, mode == "replacement", cfg.masks, pose_fps=pose_fps,
                 sam_weights=cfg.mask_sam_weights, device="cpu", cache_dir=cache_dir)  # fmt: skip
    return locate(example, mode)


def run(
    example: Example, ctx: StageContext, cfg: AnimateConfig, base: AnimatePipeline, prompt: str,
    out: Path, sidecar: Path, record: dict[str, Any], cache_dir: Path | None = None,
) -> None:  # fmt: skip
    """Generate one SCAIL-2 sample and write it to `out` (MP4 tags from `record`) and `sidecar` (the
    record as JSON, as `AnimateStage` does for SCAIL-Preview); notes go to the manifest through `ctx`."""
    import hashlib

    from scail.animate.inputs2 import load_inputs2
    from scail.animate.pipeline2 import ANCHOR_FRAMES, SCAIL2Pipeline, SegmentStore
    from scail.animate.stage import sampling_notes, video_tags, write_sidecar
    from scail.video import VideoWriter

    if cfg.window_frames <= ANCHOR_FRAMES:
        raise InputError(
            f"animate.window_frames {cfg.window_frames}: SCAIL-2 segments must be longer than their "
            f"{ANCHOR_FRAMES}-frame anchor; use 81 (the trained length) or at least 9"
        )
    t0 = time.perf_counter()
    ctx.phase("preparing masks and inputs")
    files = prepare_files(example, cfg, cache_dir)
    inputs = load_inputs2(
        files,
        size_hw=cfg.size_hw,
        max_frames=cfg.max_frames,
        downscale=TINY_RANDOM_DOWNSCALE if cfg.model.startswith("tiny-random") else 1,
    )
    preprocess_s = time.perf_counter() - t0
    ctx.check_cancelled()
    pipe = SCAIL2Pipeline(base)
    # finished segments of a long video survive Ctrl-C / a kill: a rerun continues from the next one
    store = SegmentStore(example.state_dir / SEGMENTS_DIR, str(record.get("fingerprint", "")))
    ctx.phase("encoding text, references and pose (umT5, CLIP, VAE)")
    result = pipe.generate(
        inputs,
        prompt=prompt,
        negative_prompt=cfg.negative_prompt,
        solver=cfg.solver,
        steps=cfg.steps,
        shift=cfg.shift,
        guide_scale=cfg.guide_scale,
        seed=cfg.seed,
        on_progress=ctx.progress_fn(unit="steps", desc="denoising"),
        segment_frames=cfg.window_frames,
        store=store,
    )
    record = {**record, "scail2_mode": inputs.mode, "extra_references": len(inputs.extra_refs)}
    tags = video_tags(prompt, record)
    digest = hashlib.sha256()
    ctx.phase("writing video")
    with ctx.atomic_output(out) as tmp, VideoWriter(tmp, inputs.fps, atomic=False, metadata=tags) as writer:
        for frame in result.frames:
            writer.write(frame)
            digest.update(frame.tobytes())
    h, w = inputs.size_hw
    write_sidecar(ctx, sidecar, record, out, (h, w), int(result.frames.shape[0]), inputs.fps)
    store.discard()
    notes: dict[str, Any] = {
        "scail2_mode": inputs.mode,
        "extra_references": len(inputs.extra_refs),
        "driving": files.driving.name,
        "driving_mask": files.driving_mask.name,
        **sampling_notes(prompt, cfg, result.used_cfg),
        "size_hw": [h, w],
        "frames": int(result.frames.shape[0]),
        "frames_sha256": digest.hexdigest(),
        "segments": [list(s) for s in result.segments],
        "fps": inputs.fps,
        "device": str(pipe.device),
        "gpus": cfg.parallel.gpus,
        "vae_tiles": base.decoded_with_tiles,
        "vae_decode_dtype": str(base.vae.decode_dtype).removeprefix("torch."),
        "attention": attention.describe(base.device, base.dit.compute_dtype),
        "timings_s": {"preprocess_s": round(preprocess_s, 3), **{k: round(v, 3) for k, v in result.timings_s.items()}},
    }
    ctx.note(**notes)

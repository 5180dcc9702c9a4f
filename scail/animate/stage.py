"""The animate stage: rendered pose video + reference image + prompt -> samples/<example>_<seed>.mp4.

Fingerprint (what makes a cached sample stale):
* params: the animate settings that change the video (`AnimateConfig` without `weights_dir`,
  `offload`, `compile` and `checkpoint_every_s`, which do not) and the `--prompt` override;
* inputs: the pose video (rendered_aligned.mp4, else rendered.mp4), the reference image, and
  prompt.txt when it exists and no override is given. Together with the override this covers the
  example's resolved prompt, so editing prompt.txt reruns animate and nothing else.

The models load on the first `run` and stay loaded for the whole batch; `close()` frees them.
A run saves its sampler state to `.scail/animate-resume.safetensors` (keyed by the fingerprint), so
a rerun after Ctrl-C or a kill continues mid-clip (`resume.py`); the file goes once the sample is written.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from scail.config import AnimateConfig
from scail.errors import InputError
from scail.example import Example
from scail.stage import StageContext

if TYPE_CHECKING:
    from scail.animate.pipeline import AnimatePipeline

TINY_RANDOM_DOWNSCALE = 4
"""tiny-random runs at a quarter of the official size (128x224 / 224x128) unless size_hw is set: seconds on a CPU."""

log = logging.getLogger(__name__)

_NOT_IN_FINGERPRINT = frozenset({"weights_dir", "offload", "compile", "checkpoint_every_s", "parallel"})
"""Settings that change where weights come from or how memory is managed, not the video."""


class AnimateParams(BaseModel):
    """What enters the animate fingerprint and manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    settings: dict[str, Any]
    """The resolved AnimateConfig, minus weights_dir, offload, compile and checkpoint_every_s (they do not change the video)."""
    prompt_override: str | None = None
    """--prompt; None means each example's prompt.txt (or the empty prompt)."""


class AnimateStage:
    """Stage protocol implementation for the SCAIL animation (see scail/stage.py)."""

    name: ClassVar[str] = "animate"
    version: ClassVar[str] = "2"

    def __init__(self, config: AnimateConfig, prompt_override: str | None = None) -> None:
        self.config = config
        self.prompt_override = prompt_override
        self._params = AnimateParams(
            settings=config.model_dump(mode="json", exclude=set(_NOT_IN_FINGERPRINT)),
            prompt_override=prompt_override.strip() if prompt_override is not None else None,
        )
        self._pipeline: AnimatePipeline | None = None
        self.builds = 0
        """How many times models were built (once per batch)."""

    # --------------------------------------------------------------------------------------------
    # Stage protocol
    # --------------------------------------------------------------------------------------------

    def params(self) -> AnimateParams:
        return self._params

    def pose_video(self, example: Example) -> Path:
        video = example.pose_video()
        if video is None:
            raise InputError(
                f"{example.root}: no rendered_aligned.mp4 or rendered.mp4; run `scail run` (pose + render) "
                "or put your own rendered.mp4 there"
            )
        return video

    def inputs(self, example: Example) -> list[Path]:
        paths = [self.pose_video(example), example.reference()]
        source = example.prompt_source(self.prompt_override)  # prompt.txt or scail.yaml's prompt
        if source is not None:
            paths.append(source)
        return paths

    def outputs(self, example: Example) -> list[Path]:
        return [example.samples_dir / f"{example.name}_{self.config.seed}.mp4"]

    def run(self, example: Example, ctx: StageContext) -> None:
        """Encode, sample (windowed, checkpointed to .scail/ so a rerun resumes), then decode
        straight into the H.264 file latent frame by latent frame."""
        from scail.animate.preprocess import load_inputs
        from scail.animate.resume import CHECKPOINT_NAME, Checkpointer
        from scail.animate.windows import WindowConfig
        from scail.video import VideoWriter

        cfg = self.config
        pipe = self.pipeline()
        ctx.note(model=pipe.label or cfg.model)
        prompt = example.prompt(self.prompt_override)
        t0 = time.perf_counter()
        inputs = load_inputs(
            example.reference(),
            self.pose_video(example),
            size_hw=cfg.size_hw,
            max_frames=cfg.max_frames,
            downscale=TINY_RANDOM_DOWNSCALE if cfg.model == "tiny-random" else 1,
        )
        preprocess_s = time.perf_counter() - t0
        ctx.check_cancelled()
        cond = pipe.prepare(inputs.ref_image, inputs.pose_chunks(), prompt, cfg.negative_prompt, cfg.guide_scale)
        ctx.check_cancelled()
        windows = WindowConfig(cfg.window_frames, cfg.window_overlap, cfg.window_blend, cfg.window_color)
        num_windows = len(windows.plan(cond.num_latents))
        desc = "denoising" if num_windows == 1 else f"denoising {num_windows} windows x {cfg.steps} steps"
        checkpoint = Checkpointer(example.state_dir / CHECKPOINT_NAME, ctx.fingerprint or self._key(example),
                                  cfg.checkpoint_every_s)
        latent = pipe.sample(
            cond,
            solver=cfg.solver,
            steps=cfg.steps,
            shift=cfg.shift,
            guide_scale=cfg.guide_scale,
            seed=cfg.seed,
            on_progress=ctx.progress_fn(unit="steps" if num_windows == 1 else "window steps", desc=desc),
            windows=windows,
            checkpoint=checkpoint,
            schedule=cfg.schedule,
            step_list=list(cfg.denoising_step_list) if cfg.denoising_step_list else None,
        )
        out = self.outputs(example)[0]
        t2 = time.perf_counter()
        written = 0
        # the frames' own hash: H.264 bytes differ between runs on the same frames, so comparing runs
        # (local vs Ray, 1 vs N GPUs) needs this
        digest = hashlib.sha256()
        with ctx.atomic_output(out) as tmp, VideoWriter(tmp, inputs.fps, atomic=False) as writer:
            for piece in pipe.decode_frames(latent, cond.num_frames):  # (n, H, W, 3) uint8
                for frame in piece.cpu().numpy():
                    writer.write(frame)
                    digest.update(frame.tobytes())
                written += int(piece.shape[0])
                ctx.progress(written, cond.num_frames, unit="frames", desc="decoding")
        checkpoint.discard()
        cond.timings_s["vae_decode_s"] = time.perf_counter() - t2
        h, w = inputs.size_hw
        ctx.note(
            prompt=prompt,
            negative_prompt=cfg.negative_prompt,
            solver=cfg.solver,
            steps=cfg.steps,
            shift=cfg.shift,
            guide_scale=cfg.guide_scale,
            cfg_branches=2 if cond.use_cfg else 1,
            seed=cfg.seed,
            size_hw=[h, w],
            pose_frames_in_file=inputs.source_frames,
            frames=written,
            frames_sha256=digest.hexdigest(),
            windows=num_windows,
            fps=inputs.fps,
            device=str(pipe.device),
            gpus=cfg.parallel.gpus,
            dit_dtype=str(next(pipe.dit.parameters()).dtype).removeprefix("torch."),
            timings_s={"preprocess_s": round(preprocess_s, 3), **{k: round(v, 3) for k, v in cond.timings_s.items()}},
        )

    def _key(self, example: Example) -> str:
        """The resume key when no engine fingerprint is given (direct API use): params + input hashes."""
        from scail.cache import HashCache, fingerprint, hash_files

        inputs = hash_files(self.inputs(example), HashCache(example))
        return fingerprint(self.name, self.version, self._params.model_dump(mode="json"), inputs)

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None

    # --------------------------------------------------------------------------------------------

    def pipeline(self) -> AnimatePipeline:
        """The models, built on first use and kept for the batch."""
        if self._pipeline is None:
            from scail.animate.build import build_pipeline

            t0 = time.perf_counter()
            self._pipeline = build_pipeline(self.config)
            self.builds += 1
            log.info("animate models ready (%s) in %.1f s", self._pipeline.label, time.perf_counter() - t0)
        return self._pipeline

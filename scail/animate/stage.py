"""The animate stage: rendered pose video + reference image + prompt -> samples/<name>_<seed>_<fp>.mp4.

Every sample is named by the fingerprint of what made it (`<fp>`: its first 8 hex digits), so a
new prompt, seed, preset or checkpoint adds a sample instead of overwriting the last one. Beside
each sample a sidecar `<same name>.json` and the MP4's own tags record the prompt, seed, preset and
model; `samples/<name>_latest.mp4` is the sample of the most recent run (scail/outputs.py).

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
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from scail.animate import attention
from scail.cache import now_iso
from scail.config import AnimateConfig
from scail.errors import InputError
from scail.example import Example
from scail.outputs import latest_path, sample_stem
from scail.stage import StageContext

if TYPE_CHECKING:
    from scail.animate.pipeline import AnimatePipeline
    from scail.animate.random_weights import RandomWeights

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
    weights: dict[str, str] = {}
    """`file_identity` of each checkpoint file the model loads (none for tiny-random): another
    checkpoint in --weights-dir makes every sample stale, a copied folder does not."""


def video_tags(prompt: str, record: dict[str, Any]) -> dict[str, str]:
    """The MP4 tags of a sample: the prompt as title, `record` as JSON comment and one `scail_*`
    tag per entry (but the prompt and the weights)."""
    return {"title": prompt[:255], "comment": json.dumps(record, ensure_ascii=False),
            **{f"scail_{k}": str(v) for k, v in record.items() if k not in ("prompt", "weights")}}  # fmt: skip


def write_sidecar(
    ctx: StageContext, sidecar: Path, record: dict[str, Any], video: Path, size_hw: tuple[int, int],
    frames: int, fps: float,
) -> None:  # fmt: skip
    """Write the sample's sidecar JSON (atomically): `record` plus the video's name, size, frame
    count, fps and the time it was written."""
    h, w = size_hw
    with ctx.atomic_output(sidecar) as tmp:
        doc = {**record, "video": video.name, "size_hw": [h, w], "frames": frames, "fps": fps, "created": now_iso()}
        tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def sampling_notes(prompt: str, cfg: AnimateConfig, used_cfg: bool) -> dict[str, Any]:
    """The manifest notes on how a sample was drawn: prompts, sampler settings, CFG branches, seed."""
    return {"prompt": prompt, "negative_prompt": cfg.negative_prompt, "solver": cfg.solver, "steps": cfg.steps,
            "shift": cfg.shift, "guide_scale": cfg.guide_scale, "cfg_branches": 2 if used_cfg else 1,
            "seed": cfg.seed}  # fmt: skip


class AnimateStage:
    """Stage protocol implementation for the SCAIL animation (see scail/stage.py)."""

    name: ClassVar[str] = "animate"
    version: ClassVar[str] = "2"

    def __init__(self, config: AnimateConfig, prompt_override: str | None = None, preset: str = "",
                 weights: RandomWeights | None = None) -> None:
        self.config = config
        self.weights = weights
        """Random networks in place of the weights folder's files (benchmarks and tests, `random_weights.py`)."""
        self.prompt_override = prompt_override
        self.preset = preset
        """The pipeline preset's name (recorded in the sample's metadata; not in the fingerprint: the
        resolved settings are)."""
        self._settings = config.model_dump(mode="json", exclude=set(_NOT_IN_FINGERPRINT) | {"dit_file"})
        # the DiT file and the LoRA files enter by content (`weights_identity`), not by path: a moved
        # or renamed LoRA keeps its samples; the strengths, in order, are settings
        self._settings["loras"] = [{"strength": lora.strength} for lora in config.loras]
        self._params: AnimateParams | None = None
        self._pipeline: AnimatePipeline | None = None
        self.builds = 0
        """How many times models were built (once per batch)."""

    # --------------------------------------------------------------------------------------------
    # Stage protocol
    # --------------------------------------------------------------------------------------------

    def params(self) -> AnimateParams:
        """The fingerprinted settings; the weights' identities are read on first use (raises
        `CheckpointError` when the weights are missing: the pre-flight check reports that once)."""
        if self._params is None:
            override = self.prompt_override.strip() if self.prompt_override is not None else None
            self._params = AnimateParams(settings=self._settings, prompt_override=override,
                                         weights=self.weights_identity())
        return self._params

    def weights_identity(self) -> dict[str, str]:
        """{component: file_identity} of every checkpoint file this model loads: the weights folder's
        (none for tiny-random), `animate.dit_file` in place of its DiT, and each LoRA (`lora0`, ...)."""
        from scail.identity import file_identity

        cfg = self.config
        files: dict[str, Path] = {}
        if self.weights is not None:
            ids = self.weights.identity()
            ids.update((f"lora{i}", file_identity(lora.path)) for i, lora in enumerate(cfg.loras))
            return ids
        if not cfg.model.startswith("tiny-random"):
            from scail.animate.build import weights_dir
            from scail.animate.weights import resolve

            paths = resolve(weights_dir(cfg), need_dit=cfg.dit_file is None, model=cfg.model)
            files = {"dit": paths.dit, "vae": paths.vae, "t5": paths.t5, "tokenizer": paths.tokenizer,
                     "clip": paths.clip}
        if cfg.dit_file is not None:
            files["dit"] = cfg.dit_file
        files.update((f"lora{i}", lora.path) for i, lora in enumerate(cfg.loras))
        return {name: file_identity(path) for name, path in files.items()}

    def pose_video(self, example: Example) -> Path:
        video = example.pose_video()
        if video is None:
            raise InputError(
                f"{example.root}: no rendered_aligned.mp4 or rendered.mp4; run `scail run` (pose + render) "
                "or put your own rendered.mp4 there"
            )
        return video

    def inputs(self, example: Example) -> list[Path]:
        from scail.animate import stage2

        if stage2.is_scail2(self.config.model):
            paths = stage2.input_files(example, self.config)
        else:
            paths = [self.pose_video(example), example.reference()]
        source = example.prompt_source(self.prompt_override)  # prompt.txt or scail.yaml's prompt
        if source is not None:
            paths.append(source)
        return paths

    def outputs(self, example: Example) -> list[Path]:
        """The sample (and its sidecar) of the current settings and inputs (fingerprints them)."""
        return self.outputs_for(example, self._fingerprint(example))

    def _fingerprint(self, example: Example) -> str:
        from scail.engine import stage_fingerprint

        return stage_fingerprint(self, example)

    def outputs_for(self, example: Example, fingerprint: str) -> list[Path]:
        stem = sample_stem(example, self.config.seed, fingerprint)
        return [example.samples_dir / f"{stem}.mp4", example.samples_dir / f"{stem}.json"]

    def pointers(self, example: Example, outputs: list[Path]) -> list[tuple[Path, Path]]:
        return [(latest_path(example), outputs[0])]

    def run(self, example: Example, ctx: StageContext) -> None:
        """Encode, sample (windowed, checkpointed to .scail/ so a rerun resumes), then decode
        straight into the H.264 file latent frame by latent frame."""
        from scail.animate import stage2
        from scail.animate.preprocess import load_inputs
        from scail.animate.resume import CHECKPOINT_NAME, Checkpointer
        from scail.animate.windows import WindowConfig
        from scail.video import VideoWriter, WriteBehind

        cfg = self.config
        if self._pipeline is None:
            ctx.phase("loading weights (DiT, VAE, umT5, CLIP)")
        pipe = self.pipeline()
        ctx.note(model=pipe.label or cfg.model)
        prompt = example.prompt(self.prompt_override)
        self._warn_if_cut(prompt, pipe, example, ctx)
        if stage2.is_scail2(cfg.model):  # SCAIL-2: masks, modes, its own continuation (stage2.py)
            fingerprint = ctx.fingerprint or self._fingerprint(example)
            out, sidecar = self.outputs_for(example, fingerprint)
            record = self._record(prompt, fingerprint, pipe.label or cfg.model)
            stage2.run(example, ctx, cfg, pipe, prompt, out, sidecar, record)
            return
        t0 = time.perf_counter()
        ctx.phase("reading the reference and the pose video")
        inputs = load_inputs(
            example.reference(),
            self.pose_video(example),
            size_hw=cfg.size_hw,
            max_frames=cfg.max_frames,
            downscale=TINY_RANDOM_DOWNSCALE if cfg.model.startswith("tiny-random") else 1,
        )
        preprocess_s = time.perf_counter() - t0
        ctx.check_cancelled()
        cond = pipe.prepare(inputs.ref_image, inputs.pose_chunks(), prompt, cfg.negative_prompt, cfg.guide_scale,
                            on_phase=ctx.phase)
        ctx.check_cancelled()
        windows = WindowConfig(cfg.window_frames, cfg.window_overlap, cfg.window_blend, cfg.window_color)
        num_windows = len(windows.plan(cond.num_latents))
        desc = "denoising" if num_windows == 1 else f"denoising {num_windows} windows x {cfg.steps} steps"
        fingerprint = ctx.fingerprint or self._fingerprint(example)  # the engine passes it; a direct call has none
        checkpoint = Checkpointer(example.state_dir / CHECKPOINT_NAME, fingerprint, cfg.checkpoint_every_s)
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
        out, sidecar = self.outputs_for(example, fingerprint)
        record = self._record(prompt, fingerprint, pipe.label or cfg.model)
        tags = video_tags(prompt, record)
        t2 = time.perf_counter()
        written = 0
        # the frames' own hash: H.264 bytes differ between runs on the same frames, so comparing runs
        # (local vs Ray, 1 vs N GPUs) needs this
        digest = hashlib.sha256()
        decode = "VAE decode + writing video"
        ctx.progress(0, cond.num_frames, unit="frames", desc=decode)  # the first piece takes a while
        with (
            ctx.atomic_output(out) as tmp,
            VideoWriter(tmp, inputs.fps, atomic=False, metadata=tags) as writer,
            WriteBehind(writer, on_frame=lambda frame: digest.update(frame.tobytes())) as behind,
        ):  # the frames are encoded on a thread while the VAE decodes the next ones
            for piece in pipe.decode_frames(latent, cond.num_frames):  # (n, H, W, 3) uint8
                behind.put(piece.cpu().numpy())
                written += int(piece.shape[0])
                ctx.progress(written, cond.num_frames, unit="frames", desc=decode)
            t3 = time.perf_counter()
        close_s = time.perf_counter() - t3  # the last pieces, flushing the encoder, closing the file
        checkpoint.discard()
        # write_s: the encoding the decode did not hide (waits for the writer thread, the final flush)
        cond.timings_s["vae_decode_s"] = time.perf_counter() - t2 - behind.wait_s - close_s
        cond.timings_s["write_s"] = behind.wait_s + close_s
        cond.timings_s["encode_s"] = behind.encode_s
        h, w = inputs.size_hw
        write_sidecar(ctx, sidecar, record, out, (h, w), written, inputs.fps)
        ctx.note(
            **sampling_notes(prompt, cfg, cond.use_cfg),
            size_hw=[h, w],
            pose_frames_in_file=inputs.source_frames,
            frames=written,
            frames_sha256=digest.hexdigest(),
            windows=num_windows,
            fps=inputs.fps,
            device=str(pipe.device),
            gpus=cfg.parallel.gpus,
            vae_tiles=pipe.decoded_with_tiles,
            vae_decode_dtype=str(pipe.vae.decode_dtype).removeprefix("torch."),
            attention=attention.describe(pipe.device, pipe.dit.compute_dtype),
            dit_dtype=str(next(pipe.dit.parameters()).dtype).removeprefix("torch."),
            timings_s={"preprocess_s": round(preprocess_s, 3), **{k: round(v, 3) for k, v in cond.timings_s.items()}},
        )

    @staticmethod
    def _warn_if_cut(prompt: str, pipe: AnimatePipeline, example: Example, ctx: StageContext) -> None:
        """The official pipeline silently keeps the first 511 tokens (+ `</s>`); say how much is lost."""
        tokenizer = pipe.text_encoder.tokenizer
        total, cut = tokenizer.overflow(prompt)
        if cut:
            ctx.log.warning("%s: the prompt is %d tokens; the text encoder reads %d (with </s>), so the last %d "
                            "(%.0f%%) were cut; shorten it", example.name, total, tokenizer.text_len, cut,
                            100.0 * cut / total)
            ctx.note(prompt_tokens=total, prompt_tokens_cut=cut)

    def _record(self, prompt: str, fingerprint: str, model: str) -> dict[str, Any]:
        """What made a sample: written into its MP4 tags and its sidecar JSON."""
        import scail

        cfg = self.config
        return {"prompt": prompt, "negative_prompt": cfg.negative_prompt, "seed": cfg.seed,
                "preset": self.preset, "model": model, "solver": cfg.solver, "steps": cfg.steps,
                "shift": cfg.shift, "guide_scale": cfg.guide_scale, "fingerprint": fingerprint,
                "weights": self.params().weights, "scail_version": scail.__version__}

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
            self._pipeline = build_pipeline(self.config, weights=self.weights)
            self.builds += 1
            log.info("animate models ready (%s) in %.1f s", self._pipeline.label, time.perf_counter() - t0)
        return self._pipeline

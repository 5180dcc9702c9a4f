"""The SCAIL animate pipeline: reference image + pose video + prompt -> video frames.

    ref (3, H, W) ──► VAE ──► ref latent (1, 1, 16, h, w)          h, w = H/8, W/8
                 └──► CLIP (squashed to its input size) ──► (1, 257, 1280)
    pose (3, T, H/2, W/2) ──► VAE ──► pose latent (1, F, 16, h/2, w/2)   F = 1 + (T-1)//4
    prompt / negative prompt ──► umT5 ──► zero-padded to 512 rows
    noise (16, F, h, w) ──► sampler (euler | unipc | dpm++) with text-only CFG ──► VAE decode ──► uint8

The order of operations and the numerics follow the wan branch's `SCAILPipeline.generate`
(fixtures/scail/pipeline reproduces it end to end); the SAT branch computes the same function with
its own sampler (scail-model.md §6). Differences from the official code, on purpose:

* the noise comes from a CPU generator seeded with `seed`, so a seed gives the same video on any
  device (official: the CUDA generator (wan), or the global CPU stream reseeded to 1234 (SAT));
* when the prompt equals the negative prompt the two CFG branches are identical, so only one runs;
* the VAE runs in float32 and decodes the float32 latent (SAT: bfloat16 for both).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch

from scail.animate.fast import GuidanceReuse
from scail.animate.sampler import ScheduleName, Solver, make_schedule, sample

if TYPE_CHECKING:
    import numpy as np

    from scail.animate.clip import CLIPImageEncoder
    from scail.animate.dit import DiT
    from scail.animate.fast import StepCache
    from scail.animate.t5 import TextEncoder
    from scail.animate.vae import TileConfig, WanVAE

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, "int | None"], None]
Offload = Literal["none", "encoders", "blocks"]


@dataclass
class Animation:
    """The result of `AnimatePipeline.generate`.

    Attributes:
        frames: (N, H, W, 3) uint8 RGB, N = 1 + 4 (F - 1).
        latent: (16, F, h, w) float32 final latent (on the pipeline's device).
        video: (3, N, H, W) float32 decoded video in [-1, 1].
        used_cfg: whether the unconditional branch ran.
    """

    frames: np.ndarray
    latent: torch.Tensor
    video: torch.Tensor
    used_cfg: bool
    timings_s: dict[str, float] = field(default_factory=dict)


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """(3, N, H, W) in [-1, 1] -> (N, H, W, 3) uint8, truncating as the official writers do."""
    x = (video.clamp(-1, 1) + 1) / 2 * 255  # official: ((x + 1) / 2 * 255).to(uint8), no rounding
    return x.to(torch.uint8).permute(1, 2, 3, 0)


def velocity_fn(
    net: Callable[..., torch.Tensor],
    context: torch.Tensor,
    ref_latent: torch.Tensor,
    pose_latent: torch.Tensor,
    clip_features: torch.Tensor,
    guidance: GuidanceReuse | None,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The sampler's `denoise(x, t)` around a DiT (or a `StepCache`): the (guided) velocity.

    x is the wan-layout latent (16, F, h, w). With `guidance`, `context` is [uncond, cond] and the
    DiT sees the CFG pair as batch 2 (or the cond row alone on steps that reuse the guidance);
    without, `context` is the one prompt.
    """

    def run(x: torch.Tensor, t: torch.Tensor, pair: bool) -> torch.Tensor:  # -> (B, 16, F, h, w) f32
        xin = x.permute(1, 0, 2, 3)[None]  # (1, F, 16, h, w)
        xin = xin.expand(2, -1, -1, -1, -1) if pair else xin
        ctx = context if pair else context[-1:]
        return net(xin, t, ctx, ref_latent, pose_latent, clip_features).permute(0, 2, 1, 3, 4)

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if guidance is None:
            return run(x, t, False)[0]
        return guidance.velocity(lambda pair: run(x, t, pair))

    return denoise


class AnimatePipeline:
    """Holds the four networks for a batch and turns preprocessed inputs into video frames.

    Args:
        dit: the SCAIL DiT (weights in their compute dtype, on `device`).
        vae: the Wan VAE (on `device`).
        text_encoder: umT5 + tokenizer.
        image_encoder: CLIP vision tower wrapper.
        device: where the DiT and VAE run (and the encoders while they encode).
        offload: "encoders": T5 and CLIP live on the CPU and visit `device` only to encode.
        label: a short name of the model set for logs and manifests.
        vae_tile: decode the video in these overlapping spatial tiles (bounded memory), or whole frames.
    """

    def __init__(
        self,
        dit: DiT,
        vae: WanVAE,
        text_encoder: TextEncoder,
        image_encoder: CLIPImageEncoder,
        device: torch.device | str = "cpu",
        offload: Offload = "encoders",
        label: str = "",
        vae_tile: TileConfig | None = None,
    ) -> None:
        self.dit = dit
        self.vae = vae
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        self.device = torch.device(device)
        self.offload = offload
        self.label = label
        self.vae_tile = vae_tile
        self.block_offload: object | None = None
        """The DiT's `offload.BlockOffload` when offload == "blocks" (kept alive with the pipeline)."""
        self.step_cache: StepCache | None = None
        """Fast mode's `fast.StepCache` around the DiT (None: every step runs the DiT)."""
        self.uncond_every = 1
        """Fast mode: run CFG's unconditional branch every n-th step only (`fast.GuidanceReuse`; 1: exact)."""

    # ------------------------------------------------------------------------------------------
    # encoders
    # ------------------------------------------------------------------------------------------

    def _visit(self, module: torch.nn.Module) -> _Visit:
        return _Visit(module, self.device, self.offload != "none")

    def encode_text(self, prompts: list[str]) -> list[torch.Tensor]:
        """Trimmed umT5 features [(L_i, text_dim)] on `device` (official `T5EncoderModel.__call__`)."""
        with self._visit(self.text_encoder.model):
            return [c.to(self.device) for c in self.text_encoder.encode_trimmed(prompts)]

    def encode_image(self, ref_image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) in [-1, 1] -> (1, Li, clip_dim) CLIP tokens on `device`."""
        with self._visit(self.image_encoder.model):
            return self.image_encoder.encode(ref_image[None]).to(self.device)

    # ------------------------------------------------------------------------------------------
    # generate
    # ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        ref_image: torch.Tensor,
        pose_video: torch.Tensor,
        prompt: str = "",
        negative_prompt: str = "",
        solver: Solver = "euler",
        steps: int = 50,
        shift: float = 5.0,
        guide_scale: float = 4.0,
        seed: int = 42,
        on_progress: ProgressFn | None = None,
        noise: torch.Tensor | None = None,
        schedule: ScheduleName = "default",
        step_list: list[int] | None = None,
    ) -> Animation:
        """Animate the reference image with the pose video.

        Args:
            ref_image: (3, H, W) float32 in [-1, 1], already resized and cropped (`preprocess`).
            pose_video: (3, T, H/2, W/2) float32 in [-1, 1], the half-resolution pose video.
            prompt, negative_prompt: text; CFG drops only the text (pose, reference, CLIP stay).
            solver, steps, shift: the sampler (see `sampler.py`).
            guide_scale: CFG scale; ignored (one branch) when prompt == negative_prompt or scale == 1.
            seed: seeds the CPU generator of the initial noise (16, F, h, w).
            on_progress: (done, total) after each denoising step.
            noise: use this initial noise (16, F, h, w) instead of drawing it (tests, parity).
            schedule, step_list: a step-distilled recipe's noise levels (`sampler.make_schedule`).

        Returns:
            An `Animation` with N = 1 + 4 (F - 1) frames of size H x W.
        """
        import time

        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        dev = self.device
        _, h_px, w_px = ref_image.shape
        if pose_video.shape[2] * 2 != h_px or pose_video.shape[3] * 2 != w_px:
            raise ValueError(
                f"pose video {tuple(pose_video.shape)} must be half the reference's size {h_px}x{w_px}"
            )

        # VAE encodes: the half-resolution pose video, then the reference as a one-frame video
        pose_latent = self.vae.encode(pose_video[None].to(dev))  # (1, 16, F, h/2, w/2)
        ref_latent = self.vae.encode(ref_image[None, :, None].to(dev))  # (1, 16, 1, h, w)
        pose_latent = pose_latent.permute(0, 2, 1, 3, 4)  # (1, F, 16, h/2, w/2) DiT layout
        ref_latent = ref_latent.permute(0, 2, 1, 3, 4)  # (1, 1, 16, h, w)
        timings["vae_encode_s"] = time.perf_counter() - t0

        use_cfg = prompt != negative_prompt and guide_scale != 1.0
        texts = [negative_prompt, prompt] if use_cfg else [prompt]
        text_len = self.dit.config.text_len
        from scail.animate.dit import pad_context

        contexts = [pad_context(c[None], text_len) for c in self.encode_text(texts)]  # (1, 512, text_dim) each
        context = torch.cat(contexts)  # (1 or 2, 512, text_dim): [uncond, cond] as the SAT batch
        clip_features = self.encode_image(ref_image)  # (1, Li, clip_dim)
        timings["encoders_s"] = time.perf_counter() - t0 - timings["vae_encode_s"]

        f, (h, w) = pose_latent.shape[1], ref_latent.shape[-2:]
        z = self.vae.cfg.z_dim
        if noise is None:
            gen = torch.Generator(device="cpu").manual_seed(seed)
            noise = torch.randn(z, f, h, w, dtype=torch.float32, generator=gen)  # wan layout (C, F, h, w)
        elif tuple(noise.shape) != (z, f, h, w):
            raise ValueError(f"noise must be {(z, f, h, w)}, got {tuple(noise.shape)}")

        if schedule == "lightx2v" and step_list:
            steps = len(step_list)  # the recipe's list sets the step count
        net: Callable[..., torch.Tensor] = self.dit
        if self.step_cache is not None:
            self.step_cache.reset(steps)
            net = self.step_cache

        guidance = GuidanceReuse(guide_scale, self.uncond_every) if use_cfg else None
        denoise = velocity_fn(net, context, ref_latent, pose_latent, clip_features, guidance)

        t1 = time.perf_counter()
        plan = make_schedule(solver, steps, shift, schedule, step_list)
        latent = sample(denoise, noise.to(dev), plan, on_progress)  # (16, F, h, w) float32
        timings["sampling_s"] = time.perf_counter() - t1
        if guidance is not None and self.uncond_every > 1:
            timings["uncond_reused_steps"] = float(guidance.reused)
        if self.step_cache is not None:
            timings["cache_skipped_steps"] = float(self.step_cache.skipped)
            log.info("step cache: %d of %d steps skipped", self.step_cache.skipped, steps)

        t2 = time.perf_counter()
        video = self.vae.decode(latent[None], tile=self.vae_tile)[0]  # (3, N, H, W) clamped to [-1, 1]
        frames = to_uint8(video).cpu().numpy()
        timings["vae_decode_s"] = time.perf_counter() - t2
        return Animation(frames=frames, latent=latent, video=video, used_cfg=use_cfg, timings_s=timings)

    def close(self) -> None:
        """Drop the networks (frees GPU memory once no other reference is held)."""
        remove = getattr(self.block_offload, "remove", None)
        if remove is not None:
            remove()
        for name in ("dit", "vae", "text_encoder", "image_encoder", "block_offload", "step_cache"):
            setattr(self, name, None)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class _Visit:
    """Context manager: move a module to `device` for a block and back to the CPU afterwards."""

    def __init__(self, module: torch.nn.Module, device: torch.device, offload: bool) -> None:
        self.module, self.device, self.offload = module, device, offload

    def __enter__(self) -> None:
        self.module.to(self.device)

    def __exit__(self, *exc: object) -> None:
        if self.offload and self.device.type != "cpu":
            self.module.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

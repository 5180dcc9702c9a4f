"""The SCAIL animate pipeline: reference image + pose video + prompt -> video frames.

    ref (3, H, W) ──► VAE ──► ref latent (1, 1, 16, h, w)          h, w = H/8, W/8
                 └──► CLIP (squashed to its input size) ──► (1, 257, 1280)
    pose (3, T, H/2, W/2) ──► VAE ──► pose latent (1, F, 16, h/2, w/2)   F = 1 + ceil((T-1)/4)
                                 (streamed in chunks; the last padded with the last frame)
    prompt / negative prompt ──► umT5 ──► zero-padded to 512 rows
    noise (16, F, h, w) ──► sampler (euler | unipc | dpm++) with text-only CFG, over temporal windows
                            of <= 21 latent frames (windows.py) ──► VAE decode, streamed ──► T frames uint8

The order of operations and the numerics follow the wan branch's `SCAILPipeline.generate`
(fixtures/scail/pipeline reproduces it end to end); the SAT branch computes the same function with
its own sampler (scail-model.md §6). Differences from the official code, on purpose:

* the noise comes from a CPU generator seeded with `seed`, so a seed gives the same video on any
  device (official: the CUDA generator (wan), or the global CPU stream reseeded to 1234 (SAT));
* when the prompt equals the negative prompt the two CFG branches are identical, so only one runs;
* the VAE runs in float32 and decodes the float32 latent (SAT: bfloat16 for both).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import torch

from scail.animate.dit import pad_context
from scail.animate.fast import StepCache
from scail.animate.offload import Visitor
from scail.animate.preprocess import PoseChunks
from scail.animate.sampler import GuidanceReuse, ScheduleName, Solver, make_schedule, sample, velocity_fn
from scail.animate.windows import WindowConfig, WindowedDenoiser, blend_weights
from scail.errors import Interrupted

if TYPE_CHECKING:
    import numpy as np

    from scail.animate.clip import CLIPImageEncoder
    from scail.animate.dit import DiT
    from scail.animate.launch import ParallelGroup
    from scail.animate.lora import LoraFile
    from scail.animate.resume import Checkpoint, Checkpointer
    from scail.animate.t5 import TextEncoder
    from scail.animate.vae import TileConfig, WanVAE
    from scail.stage import PhaseFn, ProgressFn

log = logging.getLogger(__name__)

Offload = Literal["none", "encoders", "blocks"]


@dataclass
class Animation:
    """The result of `AnimatePipeline.generate`.

    Attributes:
        frames: (N, H, W, 3) uint8 RGB, N = T, the pose video's frames (the padding is dropped).
        latent: (16, F, h, w) float32 final latent (on the pipeline's device).
        video: (3, N, H, W) float32 decoded video in [-1, 1].
        used_cfg: whether the unconditional branch ran.
    """

    frames: np.ndarray
    latent: torch.Tensor
    video: torch.Tensor
    used_cfg: bool
    timings_s: dict[str, float] = field(default_factory=dict)


@dataclass
class Conditions:
    """The encoded inputs of one sample (`AnimatePipeline.prepare`), on the pipeline's device.

    Attributes:
        ref_latent: (1, 1, 16, h, w) the reference's VAE latent (DiT layout).
        pose_latent: (1, F, 16, h/2, w/2) the half-resolution pose video's latent.
        context: (1 | 2, 512, text_dim) umT5 features, [uncond, cond] with CFG.
        clip_features: (1, Li, clip_dim) CLIP tokens of the reference.
        use_cfg: whether the unconditional branch runs.
        num_frames: the pose video's real frames: the output's frame count (<= 1 + 4 (F - 1)).
    """

    ref_latent: torch.Tensor
    pose_latent: torch.Tensor
    context: torch.Tensor
    clip_features: torch.Tensor
    use_cfg: bool
    num_frames: int
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def num_latents(self) -> int:
        return int(self.pose_latent.shape[1])


def _tensor_chunks(pose: torch.Tensor) -> Iterator[torch.Tensor]:
    """(3, T, H, W) -> the VAE's chunks (3, 1 | 4, H, W), the last one padded with the last frame."""
    t = pose.shape[1]
    if t < 1:
        raise ValueError("the pose video has no frames")
    yield pose[:, :1]
    for start in range(1, t, 4):
        chunk = pose[:, start : start + 4]
        if chunk.shape[1] < 4:
            chunk = torch.cat([chunk, chunk[:, -1:].expand(-1, 4 - chunk.shape[1], -1, -1)], dim=1)
        yield chunk


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """(3, N, H, W) in [-1, 1] -> (N, H, W, 3) uint8, truncating as the official writers do."""
    x = (video.clamp(-1, 1) + 1) / 2 * 255  # official: ((x + 1) / 2 * 255).to(uint8), no rounding
    return x.to(torch.uint8).permute(1, 2, 3, 0)


_TEXT_CACHE_SIZE = 64
"""Prompts whose umT5 features a pipeline keeps (a batch's distinct prompts, usually far fewer)."""


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
        self.pending_loras: list[tuple[LoraFile, float]] = []
        """LoRAs to attach at run time once the DiT's linears are final (`lora.attach_loras`); [] when merged."""
        self.uncond_every = 1
        """Fast mode: run CFG's unconditional branch every n-th step only (`sampler.GuidanceReuse`; 1: exact)."""
        self.parallel: ParallelGroup | None = None
        """The other ranks when `animate.parallel.gpus` > 1 (`launch.ParallelGroup`): they denoise with this DiT."""
        self.vae_tile_auto = False
        """`vae_tile` only where whole frames do not fit the free GPU memory (animate.vae_tiling=auto)."""
        self.decoded_with_tiles: bool | None = None
        """Whether the last decode used `vae_tile` (None before the first decode)."""
        self._visitors: dict[int, Visitor] = {}
        """The encoders' `offload.Visitor`s (their weights' pinned CPU home), made on first use."""
        self._text_features: dict[str, torch.Tensor] = {}
        """umT5 features by prompt, oldest first (at most `_TEXT_CACHE_SIZE`; a few KB to a MB each)."""

    # ------------------------------------------------------------------------------------------
    # encoders
    # ------------------------------------------------------------------------------------------

    def _since(self, t0: float) -> float:
        """Seconds since `t0` once the device has finished the work queued so far (true stage timings)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0

    def adopt_visitors(self, visitors: Iterable[Visitor]) -> None:
        """Use these `Visitor`s for their modules (the encoders): `build.build_scail_preview` makes them
        before the DiT loads and pins the encoders' weights meanwhile (`Visitor.settle_in_background`)."""
        for visitor in visitors:
            if visitor.offload != (self.offload != "none") or visitor.device != self.device:
                raise ValueError(f"a visitor of {type(visitor.module).__name__} for {visitor.device} "
                                 f"(offload {visitor.offload}) does not match this pipeline's plan")
            self._visitors[id(visitor.module)] = visitor

    def _visit(self, module: torch.nn.Module) -> Visitor:
        visitor = self._visitors.get(id(module))
        if visitor is None or visitor.module is not module:
            visitor = self._visitors[id(module)] = Visitor(module, self.device, self.offload != "none")
        return visitor

    def encode_text(self, prompts: list[str]) -> list[torch.Tensor]:
        """Trimmed umT5 features [(L_i, text_dim)] on `device` (official `T5EncoderModel.__call__`).

        A prompt seen before in this batch (the negative prompt of every clip, a prompt shared by
        several examples) is not encoded again: umT5 is deterministic, so its features are reused.
        """
        todo = list(dict.fromkeys(p for p in prompts if p not in self._text_features))
        if todo:
            with self._visit(self.text_encoder.model):
                features = [c.to(self.device) for c in self.text_encoder.encode_trimmed(todo)]
            for p, f in zip(todo, features, strict=True):
                if len(self._text_features) >= _TEXT_CACHE_SIZE:
                    self._text_features.pop(next(iter(self._text_features)))  # the oldest prompt goes
                self._text_features[p] = f
        return [self._text_features[p] for p in prompts]

    def encode_image(self, ref_image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) in [-1, 1] -> (1, Li, clip_dim) CLIP tokens on `device`."""
        with self._visit(self.image_encoder.model):
            return self.image_encoder.encode(ref_image[None]).to(self.device)

    # ------------------------------------------------------------------------------------------
    # generate
    # ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def prepare(
        self,
        ref_image: torch.Tensor,
        pose_video: torch.Tensor | PoseChunks,
        prompt: str = "",
        negative_prompt: str = "",
        guide_scale: float = 4.0,
        on_phase: PhaseFn | None = None,
    ) -> Conditions:
        """Encode the inputs of one sample: VAE (pose streamed chunk by chunk, then the reference), umT5, CLIP.

        Args:
            ref_image: (3, H, W) float32 in [-1, 1], already resized and cropped (`preprocess`).
            pose_video: (3, T, H/2, W/2) float32 in [-1, 1], or the same streamed from its file
                (`preprocess.PoseChunks`); padded to 4k + 1 frames with its last frame.
            prompt, negative_prompt, guide_scale: CFG runs both branches only when the prompts
                differ and guide_scale != 1.
            on_phase: told each encoder's name as it starts (the progress display's label).
        """
        phase = on_phase or (lambda label: None)
        t0 = time.perf_counter()
        dev = self.device
        _, h_px, w_px = ref_image.shape
        chunks: Iterable[torch.Tensor]
        if isinstance(pose_video, torch.Tensor):
            chunks, num_frames = _tensor_chunks(pose_video), int(pose_video.shape[1])
        else:
            chunks, num_frames = pose_video, -1

        def checked() -> Iterator[torch.Tensor]:
            for chunk in chunks:  # (3, n, H/2, W/2)
                if chunk.shape[2] * 2 != h_px or chunk.shape[3] * 2 != w_px:
                    raise ValueError(f"pose video {tuple(chunk.shape)} must be half the reference's size {h_px}x{w_px}")
                yield chunk[None]

        phase("VAE encode (pose video, reference)")
        pose_latent = torch.cat(list(self.vae.encode_stream(checked())), dim=2)  # (1, 16, F, h/2, w/2)
        if num_frames < 0:
            assert isinstance(pose_video, PoseChunks)
            num_frames = pose_video.frames
        ref_latent = self.vae.encode(ref_image[None, :, None].to(dev))  # (1, 16, 1, h, w)
        timings = {"vae_encode_s": self._since(t0)}

        use_cfg = prompt != negative_prompt and guide_scale != 1.0
        texts = [negative_prompt, prompt] if use_cfg else [prompt]
        text_len = self.dit.config.text_len
        t1 = time.perf_counter()
        phase("encoding text (umT5)")
        contexts = [pad_context(c[None], text_len) for c in self.encode_text(texts)]  # (1, 512, text_dim) each
        timings["text_encoder_s"] = self._since(t1)
        t1 = time.perf_counter()
        phase("encoding the reference (CLIP)")
        clip_features = self.encode_image(ref_image)  # (1, Li, clip_dim)
        timings["clip_s"] = self._since(t1)
        timings["encoders_s"] = timings["text_encoder_s"] + timings["clip_s"]
        return Conditions(
            ref_latent=ref_latent.permute(0, 2, 1, 3, 4),  # (1, 1, 16, h, w) DiT layout
            pose_latent=pose_latent.permute(0, 2, 1, 3, 4),  # (1, F, 16, h/2, w/2)
            context=torch.cat(contexts),  # (1 or 2, 512, text_dim): [uncond, cond] as the SAT batch
            clip_features=clip_features,
            use_cfg=use_cfg,
            num_frames=num_frames,
            timings_s=timings,
        )

    @torch.no_grad()
    def sample(
        self,
        cond: Conditions,
        solver: Solver = "euler",
        steps: int = 50,
        shift: float = 5.0,
        guide_scale: float = 4.0,
        seed: int = 42,
        on_progress: ProgressFn | None = None,
        noise: torch.Tensor | None = None,
        windows: WindowConfig | None = None,
        checkpoint: Checkpointer | None = None,
        schedule: ScheduleName = "default",
        step_list: list[int] | None = None,
    ) -> torch.Tensor:
        """Denoise the latent (16, F, h, w) of one sample over temporal windows (`windows.py`).

        Args:
            cond: from `prepare`.
            solver, steps, shift: the sampler (see `sampler.py`).
            guide_scale: CFG scale (used when `cond.use_cfg`).
            seed: seeds the CPU generator of the initial noise (16, F, h, w).
            on_progress: (done, total) after each window of each step: total = windows x steps (a
                resumed run counts the window steps left).
            noise: use this initial noise instead of drawing it (tests, parity).
            windows: window length, overlap, blend and colour tie (default `WindowConfig()`).
            checkpoint: saves the sampler state as it goes and continues from a saved one (`resume.py`).
            schedule, step_list: a step-distilled recipe's noise levels (`sampler.make_schedule`).

        Returns:
            (16, F, h, w) float32 final latent on the pipeline's device.
        """
        windows = windows or WindowConfig()
        f, (h, w) = cond.num_latents, cond.ref_latent.shape[-2:]
        z = self.dit.config.latent_channels
        if noise is not None and tuple(noise.shape) != (z, f, h, w):
            raise ValueError(f"noise must be {(z, f, h, w)}, got {tuple(noise.shape)}")
        resumed = checkpoint.load((z, f, h, w), self.device) if checkpoint is not None else None
        job = SampleJob(cond, solver, steps, shift, guide_scale, seed, noise, windows, schedule, step_list, resumed)
        if self.parallel is not None:  # rank 0 of a parallel group: the other ranks run the same loop
            self.parallel.start(job)
            on_progress = self.parallel.progress_fn(on_progress)
        return run_sampling(self, job, on_progress, checkpoint)

    def decode_tile(self, latent: torch.Tensor) -> TileConfig | None:
        """The tiles to decode `latent` (16, F, h, w) with: `vae_tile`, except that with `vae_tile_auto`
        on a GPU whole frames are decoded (as the official code does, and ~2x faster than 256-px tiles)
        where the free memory holds them (`vae.untiled_decode_bytes`)."""
        from scail.animate.vae import untiled_decode_bytes

        tile = self.vae_tile
        if tile is not None and self.vae_tile_auto and self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            free += torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
            h_px, w_px = (int(n) * self.vae.cfg.spatial_stride for n in latent.shape[-2:])
            if free >= untiled_decode_bytes(h_px, w_px):
                tile = None
        self.decoded_with_tiles = tile is not None
        return tile

    @torch.no_grad()
    def decode_frames(self, latent: torch.Tensor, num_frames: int | None = None) -> Iterator[torch.Tensor]:
        """Decode a latent (16, F, h, w) latent frame by latent frame: (n, H, W, 3) uint8 pieces (on the
        pipeline's device), stopping after `num_frames` frames (the padding of the last chunk is dropped).

        Memory does not grow with F: one latent frame's activations (and tile) at a time.
        """
        left = num_frames if num_frames is not None else 1 + 4 * (latent.shape[1] - 1)
        for piece in self.vae.decode_stream(latent[None], tile=self.decode_tile(latent)):  # (1, 3, n, H, W)
            if left <= 0:
                break
            piece = piece[0, :, :left]
            left -= piece.shape[1]
            yield to_uint8(piece)

    @torch.no_grad()
    def generate(
        self,
        ref_image: torch.Tensor,
        pose_video: torch.Tensor | PoseChunks,
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
        windows: WindowConfig | None = None,
    ) -> Animation:
        """Animate the reference image with the pose video, all in memory (`prepare`, `sample`, decode).

        For long videos the animate stage streams the decode into the video file instead
        (`decode_frames`). Arguments as `prepare` and `sample`.

        Returns:
            An `Animation` with as many frames as the pose video, of size H x W.
        """
        cond = self.prepare(ref_image, pose_video, prompt, negative_prompt, guide_scale)
        latent = self.sample(cond, solver, steps, shift, guide_scale, seed, on_progress, noise, windows,
                             schedule=schedule, step_list=step_list)
        t2 = time.perf_counter()
        pieces = [p[0] for p in self.vae.decode_stream(latent[None], tile=self.decode_tile(latent))]
        video = torch.cat(pieces, dim=1)[:, : cond.num_frames]  # (3, N, H, W) clamped to [-1, 1]
        frames = to_uint8(video).cpu().numpy()
        cond.timings_s["vae_decode_s"] = self._since(t2)
        return Animation(frames=frames, latent=latent, video=video, used_cfg=cond.use_cfg, timings_s=cond.timings_s)

    def close(self) -> None:
        """Drop the networks (frees GPU memory once no other reference is held)."""
        if self.parallel is not None:
            self.parallel.close()
        remove = getattr(self.block_offload, "remove", None)
        if remove is not None:
            remove()
        for name in ("parallel", "dit", "vae", "text_encoder", "image_encoder", "block_offload", "step_cache"):
            setattr(self, name, None)
        for visitor in self._visitors.values():
            try:
                visitor.wait_settled()  # a pinning thread still at work holds the encoder
            except Exception as exc:  # the pipeline is going away: its error no longer matters
                log.debug("pinning %s failed: %s", type(visitor.module).__name__, exc)
        self._visitors.clear()  # they hold the encoders and their pinned CPU home
        self._text_features.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class SamplingModels(Protocol):
    """What the sampling loop needs: the DiT side of a pipeline (`AnimatePipeline`, or a parallel
    worker's `DiTModels`)."""

    dit: DiT
    device: torch.device
    step_cache: StepCache | None
    uncond_every: int


@dataclass
class DiTModels:
    """The DiT side alone: what the other ranks of a sequence-parallel group load (`build.build_dit_models`)."""

    dit: DiT
    device: torch.device
    step_cache: StepCache | None = None
    uncond_every: int = 1
    block_offload: object | None = None  # kept alive with the models (offload "blocks")


@dataclass
class SampleJob:
    """One sampling run's inputs (`AnimatePipeline.sample`'s arguments, the checkpoint loaded): what
    rank 0 of a parallel group sends to the other ranks, which run `run_sampling` on it too."""

    cond: Conditions
    solver: Solver
    steps: int
    shift: float
    guide_scale: float
    seed: int
    noise: torch.Tensor | None
    windows: WindowConfig
    schedule: ScheduleName
    step_list: list[int] | None
    resumed: Checkpoint | None

    def to(self, device: torch.device | str) -> SampleJob:
        """A copy with every tensor on `device`."""
        return cast(SampleJob, tensors_to(self, torch.device(device)))


def tensors_to(obj: Any, device: torch.device) -> Any:
    """`obj` with the tensors inside its dataclasses, tuples, lists and dicts moved to `device`."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: tensors_to(getattr(obj, f.name), device)
                                          for f in dataclasses.fields(obj) if f.init})
    if isinstance(obj, (list, tuple)):
        return type(obj)(tensors_to(x, device) for x in obj)
    if isinstance(obj, dict):
        return {k: tensors_to(v, device) for k, v in obj.items()}
    return obj


def run_sampling(
    models: SamplingModels,
    job: SampleJob,
    on_progress: ProgressFn | None = None,
    checkpoint: Checkpointer | None = None,
) -> torch.Tensor:
    """The sampling loop of `AnimatePipeline.sample` on `models`: (16, F, h, w) float32 latent.

    Every rank of a parallel group runs this on the same job; only rank 0 passes a checkpoint.
    """
    t0 = time.perf_counter()
    dev = models.device
    cond, steps, windows, noise = job.cond, job.steps, job.windows, job.noise
    solver, shift, guide_scale, schedule, step_list = job.solver, job.shift, job.guide_scale, job.schedule, job.step_list
    f, (h, w) = cond.num_latents, cond.ref_latent.shape[-2:]
    z = models.dit.config.latent_channels
    if noise is None:
        gen = torch.Generator(device="cpu").manual_seed(job.seed)
        noise = torch.randn(z, f, h, w, dtype=torch.float32, generator=gen)  # wan layout (C, F, h, w)

    if schedule == "lightx2v" and step_list:
        steps = len(step_list)  # the recipe's list sets the step count
    spans = windows.plan(f)
    weights = blend_weights(spans, windows.blend)
    plan = make_schedule(solver, steps, shift, schedule, step_list)
    guidances: list[GuidanceReuse] = []
    caches: list[StepCache] = []

    def window_fn(k: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        s, e = spans[k]
        net: Callable[..., torch.Tensor] = models.dit
        if models.step_cache is not None and len(spans) == 1:
            models.step_cache.reset(steps)
            caches.append(models.step_cache)
            net = models.step_cache
        guidance = GuidanceReuse(guide_scale, models.uncond_every) if cond.use_cfg else None
        if guidance is not None:
            guidances.append(guidance)
        return velocity_fn(net, cond.context, cond.ref_latent, cond.pose_latent[:, s:e], cond.clip_features,
                           guidance)

    resumed = job.resumed
    total = steps * len(spans)
    # a resumed run counts only the window steps left, so the progress bar's ETA is right
    skip = 0 if resumed is None else resumed.state.step * len(spans) + (
        resumed.partial.done if resumed.partial is not None else 0)
    if skip:
        log.info("resuming from the checkpoint: %d of %d window steps already done", skip, total)

    def on_window(step: int, done: int) -> None:
        if checkpoint is not None:
            checkpoint.tick()
        if on_progress is not None:
            on_progress(step * len(spans) + done - skip, total - skip)

    denoise = WindowedDenoiser(
        spans, weights, window_fn, plan.sigmas, windows.color,
        ref_latent=cond.ref_latent[0].permute(1, 0, 2, 3),  # (16, 1, h, w)
        on_window=on_window,
        start_step=resumed.state.step if resumed is not None else 0,
        partial=resumed.partial if resumed is not None else None,
    )
    if len(spans) > 1:
        log.info("%d latent frames in %d windows %s (%s blend)", f, len(spans), spans, windows.blend)
        if models.step_cache is not None:
            # a skipped step reuses the blocks' residual of its own input: one (B, L, D) float32 tensor
            # per window (~2 GiB at 14B, 512x896), memory that would grow with the video's length
            log.warning("fast mode: the step cache is off for a video in %d windows (its memory would grow "
                        "with the length); FP8 and the reused guidance stay on", len(spans))
    if checkpoint is not None:
        checkpoint.partial = lambda: denoise.partial
    try:
        latent = sample(denoise, noise.to(dev), plan, state=resumed.state if resumed is not None else None,
                        on_step=checkpoint.on_step if checkpoint is not None else None)
    except (KeyboardInterrupt, Interrupted):
        if checkpoint is not None:
            checkpoint.save()  # the last consistent state: no finished window is lost
        raise
    if checkpoint is not None:
        checkpoint.save()  # the finished latent: a kill while decoding does not sample again
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    cond.timings_s["sampling_s"] = time.perf_counter() - t0
    cond.timings_s["windows"] = float(len(spans))
    if models.uncond_every > 1:
        cond.timings_s["uncond_reused_steps"] = float(sum(g.reused for g in guidances))
    if caches:
        skipped = sum(c.skipped for c in caches)
        cond.timings_s["cache_skipped_steps"] = float(skipped)
        log.info("step cache: %d of %d window steps skipped", skipped, total)
    return latent

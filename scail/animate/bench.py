"""Benchmark of the animate stage: DiT s/step, TFLOP/s, peak memory and a whole sample's time split.

Runs without the CLI's dependencies (no pydantic, typer or scail.config), so that on a bare GPU box

    python -m scail.animate.bench --preset 14b --device cuda

works; `scail bench animate` is the same with the CLI around it. Every network has random weights
built on the meta device and materialised directly on the target device (the 14B DiT never exists
on the CPU). The FLOP count is analytic (`dit_flops`): matmuls as 2*M*N*K, attention as
4*Lq*Lk*D per sample (QK^T and PV), with the CFG pair as batch 2.

Modes (one table row each, per shape):
  * resident: DiT in bf16 on the GPU for the whole sample; umT5 streamed block by block and CLIP
    visiting, both gone before sampling; VAE decode tiled.
  * offload: as resident, with the DiT blocks streamed from pinned CPU memory (`offload.py`).
  * fast: FP8 block linears + step cache (`fast.py`); its latent and decoded video are compared
    with the resident run on the same seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from scail.animate.dit import DiT, DiTConfig

from scail.animate.flops import FlopCount, dit_flops, token_counts  # noqa: F401 (moved; re-exported)

log = logging.getLogger(__name__)

# Measured on one H200 for the official SCAIL SAT DiT (issue 6): bf16, 512x896x81, CFG batch 2.
OFFICIAL_S_PER_STEP = 12.39
OFFICIAL_TFLOPS = 509.0
OFFICIAL_PEAK_GIB = 43.1
GIB = 2**30


# ----------------------------------------------------------------------------------------------
# FLOP count
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Shapes and presets
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A sample size in pixels: height x width x frames (frames = 1 + 4k)."""

    height: int
    width: int
    frames: int

    @classmethod
    def parse(cls, text: str) -> Shape:
        try:
            h, w, t = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise ValueError(f"shape {text!r} must look like 512x896x81 (height x width x frames)") from None
        if h % 32 or w % 32 or (t - 1) % 4:
            raise ValueError(f"shape {text!r}: height and width must be multiples of 32, frames 1 + 4k")
        return cls(h, w, t)

    @property
    def latent(self) -> tuple[int, int, int]:
        """(F, h, w) of the latent."""
        return 1 + (self.frames - 1) // 4, self.height // 8, self.width // 8

    def __str__(self) -> str:
        return f"{self.height}x{self.width}x{self.frames}"


@dataclass(frozen=True)
class Preset:
    name: str
    dit: Callable[[], Any]
    vae: Callable[[], Any]
    t5: Callable[[], Any]
    clip: Callable[[], Any]
    shapes: tuple[str, ...]


def presets() -> dict[str, Preset]:
    from scail.animate.clip import CLIPConfig
    from scail.animate.dit import DiTConfig
    from scail.animate.t5 import T5Config
    from scail.animate.vae import VAEConfig

    return {
        "14b": Preset(
            "14b", DiTConfig.scail_14b, VAEConfig.wan21, T5Config.umt5_xxl, CLIPConfig.vit_h_14,
            ("512x896x81", "896x512x81"),
        ),
        "tiny": Preset("tiny", DiTConfig.tiny, VAEConfig.tiny, T5Config.tiny, CLIPConfig.tiny, ("64x128x9", "128x64x9")),
    }  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Random networks, materialised on the device
# ----------------------------------------------------------------------------------------------


def random_state(
    model: nn.Module,
    device: torch.device,
    dtype: torch.dtype,
    seed: int,
    fp32: Callable[[str], bool] = lambda name: False,
) -> dict[str, torch.Tensor]:
    """Random tensors for every parameter of `model` (may be on the meta device), made on `device`.

    Weights N(0, 1/fan_in), biases N(0, 0.05^2), norm scales 1 + N(0, 0.1^2), adaLN tables
    N(0, 1/D): a random network whose activations stay O(1), for timing and A/B comparisons.
    """
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        t = torch.empty(p.shape, dtype=torch.float32 if fp32(name) else dtype, device=device)
        if name.endswith("modulation"):
            t.normal_(0.0, p.shape[-1] ** -0.5, generator=gen)
        elif p.dim() == 1 and "norm" in name and name.endswith("weight"):
            t.normal_(1.0, 0.1, generator=gen)
        elif p.dim() == 1:
            t.normal_(0.0, 0.05, generator=gen)
        else:
            t.normal_(0.0, math.prod(p.shape[1:]) ** -0.5, generator=gen)
        state[name] = t
    return state


def random_dit(cfg: DiTConfig, device: torch.device, dtype: torch.dtype, seed: int = 0) -> DiT:
    """The DiT built on meta and given random weights directly on `device` (fp32 params kept fp32)."""
    import torch

    from scail.animate.dit import DiT, is_fp32_param

    with torch.device("meta"):
        model = DiT(cfg)
    model.load_state_dict(random_state(model, device, dtype, seed, is_fp32_param), strict=True, assign=True)
    return model.eval().requires_grad_(False)


def random_module(build: Callable[[], nn.Module], device: torch.device, dtype: torch.dtype, seed: int) -> nn.Module:
    """Any module built on meta, random weights on `device` in `dtype`."""
    import torch

    with torch.device("meta"):
        model = build()
    model.load_state_dict(random_state(model, device, dtype, seed), strict=True, assign=True)
    return model.eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------------


class Meter:
    """Wall time (device-synchronised) and peak device memory of named stages."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self.peak_gib: dict[str, float] = {}
        self.peak_reserved_gib: dict[str, float] = {}

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        import torch

        cuda = self.device.type == "cuda"
        self.sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        yield
        self.sync()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
        if cuda:
            peak = torch.cuda.max_memory_allocated(self.device) / GIB
            self.peak_gib[name] = max(self.peak_gib.get(name, 0.0), peak)
            reserved = torch.cuda.max_memory_reserved(self.device) / GIB
            self.peak_reserved_gib[name] = max(self.peak_reserved_gib.get(name, 0.0), reserved)


def free_memory(device: torch.device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def allocated_gib(device: torch.device) -> float:
    import torch

    return torch.cuda.memory_allocated(device) / GIB if device.type == "cuda" else 0.0


# ----------------------------------------------------------------------------------------------
# The benchmark
# ----------------------------------------------------------------------------------------------


@dataclass
class Options:
    preset: str = "14b"
    device: str = "cuda"
    shapes: tuple[str, ...] = ()  # default: the preset's
    steps: int = 3  # denoising steps per timed sample
    modes: tuple[str, ...] = ("resident", "offload", "fast")
    compile: bool = True
    attention: str = "auto"  # "auto": the fastest available (cuDNN SDPA on CUDA)
    cache_thresholds: tuple[float, ...] = (0.1,)  # the first for the fast rows; all in the quality run
    quality_steps: int = 0  # >0: a separate bf16-vs-fast comparison with this many steps (first shape)
    tile: int = 0  # VAE decode tile side in latent pixels (0: untiled)
    ffn_chunks: int = 1  # DiT FFN token chunks (same output; 1 and 4 measured alike on the H200)
    rows_in_turn: bool = True  # the CFG pair through each block one row after the other (less memory)
    fp8_attention: bool = True  # fast mode: FP8 self-attention too (flash-attn 3 on Hopper)
    uncond_every: int = 1  # fast mode: CFG's unconditional branch every n-th step (fast.GuidanceReuse)
    seed: int = 0
    json_path: str = ""


@dataclass
class Row:
    shape: str
    mode: str
    s_per_step: float = float("nan")
    tflops: float = float("nan")
    peak_denoise_gib: float = float("nan")
    peak_sample_gib: float = float("nan")
    t5_s: float = float("nan")
    clip_s: float = float("nan")
    vae_encode_s: float = float("nan")
    denoise_s: float = float("nan")
    vae_decode_s: float = float("nan")
    warmup_s: float = float("nan")  # first forward (torch.compile) before the timed sample
    latent_rel_err: float = float("nan")
    psnr_db: float = float("nan")
    notes: str = ""
    extra: dict[str, float] = field(default_factory=dict)


def _pick_attention(name: str, device: torch.device) -> str:
    from scail.animate import attention as attn

    if name != "auto":
        attn.set_backend(name)  # type: ignore[arg-type]
        return name
    if device.type == "cuda":
        # measured on an H200 at the DiT's shape: cuDNN SDPA 575 TFLOP/s, flash SDPA 364 (issue 6);
        # flash-attn 3 would be preferred when installed ("auto" picks it)
        choice = "flash_attn_3" if "flash_attn_3" in attn.available_backends() else "sdpa_cudnn"
    else:
        choice = "sdpa"
    attn.set_backend(choice)  # type: ignore[arg-type]
    return choice


class Bench:
    """Builds the random networks once and runs samples in the requested modes."""

    def __init__(self, opts: Options, on_line: Callable[[str], None] = lambda s: None) -> None:
        import torch

        self.opts = opts
        self.say = on_line
        self.device = torch.device(opts.device)
        self.cuda = self.device.type == "cuda"
        self.dtype = torch.bfloat16 if self.cuda else torch.float32
        self.preset = presets()[opts.preset]
        self.dit_cfg = self.preset.dit()
        self.attention = _pick_attention(opts.attention, self.device)
        self.say(f"attention backend: {self.attention}; dtype {self.dtype}; device {self.device}")
        self.dit: Any = None
        self.vae: Any = None
        self.t5: Any = None
        self.clip: Any = None

    # -- building ----------------------------------------------------------------------------

    def build_dit(self, fast: bool = False, rows_in_turn: bool | None = None) -> None:
        import torch

        from scail.animate import attention
        from scail.animate.fast import enable_fast

        self.drop_dit()
        t0 = time.perf_counter()
        dit = random_dit(self.dit_cfg, self.device, self.dtype, self.opts.seed)
        attention.set_fp8(False)
        if fast:
            enable_fast(dit, fp8_attention=self.opts.fp8_attention)
        dit.set_ffn_chunks(self.opts.ffn_chunks)
        dit.set_rows_in_turn(self.opts.rows_in_turn if rows_in_turn is None else rows_in_turn)
        if self.opts.compile and self.cuda:  # on the CPU inductor's C++ build costs minutes for nothing
            dit.compile_blocks()
        self.dit = dit
        if self.cuda:
            torch.cuda.synchronize()
        fp8_attn = fast and attention.fp8_active(self.device)
        self.say(
            f"DiT {'fp8 linears' + (' + fp8 attention' if fp8_attn else '') if fast else 'bf16'} built on "
            f"{self.device} in {time.perf_counter() - t0:.1f}s, {allocated_gib(self.device):.2f} GiB allocated"
        )

    def drop_dit(self) -> None:
        self.dit = None
        free_memory(self.device)

    def build_aux(self) -> None:
        """VAE (float32, as the pipeline), umT5 (bf16) and CLIP (fp16 on GPU), random."""
        import torch

        from scail.animate.clip import CLIPVisionTower
        from scail.animate.offload import offload_t5_blocks
        from scail.animate.t5 import T5Encoder
        from scail.animate.vae import VideoVAE, WanVAE

        p = self.preset
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):  # PyTorch's default init (127M parameters, ~1 s on the CPU)
            torch.manual_seed(self.opts.seed + 1)
            self.vae = WanVAE(VideoVAE(p.vae()).to(self.device))
        # random weights are drawn on the device (fast), then the encoders go where they wait between
        # uses (as the pipeline's offload="encoders"): umT5's blocks into pinned CPU memory, streamed
        # back block by block to encode; CLIP to the CPU, visiting the device to encode
        enc_dtype = torch.bfloat16 if self.cuda else torch.float32
        self.t5 = random_module(lambda: T5Encoder(p.t5()), self.device, enc_dtype, self.opts.seed + 2)
        self._t5_streamer: Any = offload_t5_blocks(self.t5, self.device) if self.cuda else None
        clip_dtype = torch.float16 if self.cuda else torch.float32
        self.clip = random_module(lambda: CLIPVisionTower(p.clip()), self.device, clip_dtype, self.opts.seed + 3)
        self.clip.to("cpu")
        free_memory(self.device)
        self.say(f"VAE, umT5, CLIP built in {time.perf_counter() - t0:.1f}s; {allocated_gib(self.device):.2f} GiB allocated")

    # -- one sample --------------------------------------------------------------------------

    def encode_prompts(self, meter: Meter, batch: int) -> torch.Tensor:
        """umT5 on `batch` prompts of full length, its blocks streamed onto the device (`offload.py`)."""
        import torch

        from scail.animate.dit import pad_context

        cfg = self.t5.cfg
        with meter.stage("t5"):
            gen = torch.Generator().manual_seed(self.opts.seed)
            ids = torch.randint(2, cfg.vocab_size, (batch, cfg.text_len), generator=gen)  # CPU: the lookup stays there
            mask = torch.ones_like(ids)
            with torch.no_grad():
                ctx = self.t5(ids, mask).to(self.device)  # (B, 512, 4096)
            ctx = pad_context(ctx, self.dit_cfg.text_len)
            if self._t5_streamer is not None:
                self._t5_streamer.release()  # nothing of umT5 stays on the device but its final norm
        return ctx

    def encode_image(self, meter: Meter, ref: torch.Tensor) -> torch.Tensor:
        import torch

        from scail.animate.clip import CLIPImageEncoder

        with meter.stage("clip"):
            self.clip.to(self.device)  # visits the device for the encode, as the pipeline's _Visit
            with torch.no_grad():
                feats = CLIPImageEncoder(self.clip).encode(ref[None])  # (1, 257, 1280)
            self.clip.to("cpu")
        free_memory(self.device)
        return feats

    def sample(
        self,
        shape: Shape,
        steps: int,
        denoiser: Callable[..., torch.Tensor] | None = None,
        cfg_pair: bool = True,
        uncond_every: int = 1,
    ) -> tuple[Meter, torch.Tensor, torch.Tensor]:
        """One whole sample: encoders, VAE encode, `steps` Euler steps (CFG as batch 2, the unconditional
        branch every `uncond_every` steps), tiled decode.

        Returns (meter, final latent (16, F, h, w), decoded video (3, N, H, W)).
        """
        import torch

        from scail.animate.sampler import GuidanceReuse, make_schedule, sample, velocity_fn
        from scail.animate.vae import TileConfig

        meter = Meter(self.device)
        gen = torch.Generator().manual_seed(self.opts.seed + 10)
        ref_img = torch.rand(3, shape.height, shape.width, generator=gen) * 2 - 1
        pose_vid = torch.rand(3, shape.frames, shape.height // 2, shape.width // 2, generator=gen) * 2 - 1
        batch = 2 if cfg_pair else 1
        context = self.encode_prompts(meter, batch)
        clip_features = self.encode_image(meter, ref_img)
        with meter.stage("vae_encode"):
            pose_latent = self.vae.encode(pose_vid[None].to(self.device)).permute(0, 2, 1, 3, 4)
            ref_latent = self.vae.encode(ref_img[None, :, None].to(self.device)).permute(0, 2, 1, 3, 4)
        free_memory(self.device)
        f, h, w = shape.latent
        noise = torch.randn(16, f, h, w, generator=torch.Generator().manual_seed(self.opts.seed + 20))
        net = denoiser or self.dit

        guidance = GuidanceReuse(4.0, uncond_every) if cfg_pair else None
        denoise = velocity_fn(net, context, ref_latent, pose_latent, clip_features, guidance)

        schedule = make_schedule("euler", steps, 5.0)
        with meter.stage("denoise"), torch.no_grad():
            latent = sample(denoise, noise.to(self.device), schedule)
        tile = TileConfig(size=self.opts.tile, overlap=min(8, self.opts.tile // 4)) if self.opts.tile else None
        with meter.stage("vae_decode"):
            video = self.vae.decode(latent[None], tile=tile)[0]
        return meter, latent, video

    def warmup(self, shape: Shape, denoiser: Callable[..., torch.Tensor] | None = None) -> float:
        """One forward at `shape` with batch 2 (compiles the blocks); returns its seconds."""
        import torch

        f, h, w = shape.latent
        dev, c = self.device, self.dit_cfg
        net = denoiser or self.dit
        t0 = time.perf_counter()
        with torch.no_grad():
            net(
                torch.randn(2, f, 16, h, w, device=dev),
                torch.tensor([500.0], device=dev),
                torch.randn(2, c.text_len, c.text_dim, device=dev, dtype=self.dtype),
                torch.randn(1, 1, 16, h, w, device=dev),
                torch.randn(1, f, 16, h // 2, w // 2, device=dev),
                torch.randn(1, self.preset.clip().num_tokens, c.clip_dim, device=dev),
            )
        Meter(self.device).sync()
        return time.perf_counter() - t0

    def row(self, shape: Shape, mode: str, meter: Meter, steps: int, calls: float | None = None) -> Row:
        f, h, w = shape.latent
        ph, pw = self.dit_cfg.patch_size[1:]
        flops = dit_flops(self.dit_cfg, f, h // ph, w // pw, batch=2)
        s_step = meter.seconds["denoise"] / steps
        dit_calls = steps if calls is None else calls
        r = Row(
            shape=str(shape),
            mode=mode,
            s_per_step=s_step,
            tflops=flops.total * dit_calls / meter.seconds["denoise"] / 1e12,
            t5_s=meter.seconds.get("t5", float("nan")),
            clip_s=meter.seconds.get("clip", float("nan")),
            vae_encode_s=meter.seconds.get("vae_encode", float("nan")),
            denoise_s=meter.seconds["denoise"],
            vae_decode_s=meter.seconds.get("vae_decode", float("nan")),
        )
        if meter.peak_gib:
            r.peak_denoise_gib = meter.peak_gib.get("denoise", float("nan"))
            r.peak_sample_gib = max(meter.peak_gib.values())
            r.extra.update({f"peak_{k}_gib": v for k, v in meter.peak_gib.items()})
            r.extra.update({f"reserved_{k}_gib": v for k, v in meter.peak_reserved_gib.items()})
        return r

    # -- modes -------------------------------------------------------------------------------

    def run(self) -> list[Row]:

        opts = self.opts
        shapes = [Shape.parse(s) for s in (opts.shapes or self.preset.shapes)]
        rows: list[Row] = []
        self.build_aux()
        reference: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if "resident" in opts.modes or "fast" in opts.modes:
            self.build_dit()
            for shape in shapes:
                warm = self.warmup(shape)
                meter, latent, video = self.sample(shape, opts.steps)
                r = self.row(shape, "resident", meter, opts.steps)
                r.warmup_s = warm
                r.notes = (f"{str(self.dtype).removeprefix('torch.')}, {self.attention}, compile={opts.compile and self.cuda}, "
                           f"rows {'in turn' if opts.rows_in_turn else 'batched'}")
                rows.append(r)
                self.say(format_row(r))
                reference[str(shape)] = (latent.cpu(), video.cpu())
        if "fast" in opts.modes:
            rows += self.run_fast(shapes, reference)
        if "offload" in opts.modes:
            rows += self.run_offload(shapes)
        return rows

    def run_offload(self, shapes: list[Shape]) -> list[Row]:

        from scail.animate.offload import offload_dit_blocks

        rows = []
        self.build_dit()
        t0 = time.perf_counter()
        streamer = offload_dit_blocks(self.dit, self.device)
        free_memory(self.device)
        setup = time.perf_counter() - t0
        self.say(f"offload set up in {setup:.1f}s; {allocated_gib(self.device):.2f} GiB left on the device")
        for shape in shapes:
            warm = self.warmup(shape)
            meter, _, _ = self.sample(shape, self.opts.steps)
            r = self.row(shape, "offload", meter, self.opts.steps)
            r.warmup_s = warm
            r.notes = f"{str(self.dtype).removeprefix('torch.')}, blocks streamed ({streamer.copies} copies, setup {setup:.0f}s)"
            rows.append(r)
            self.say(format_row(r))
        streamer.remove()
        self.drop_dit()
        return rows

    def run_fast(self, shapes: list[Shape], reference: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> list[Row]:
        from scail.animate.fast import StepCache, psnr, relative_error

        rows = []
        self.build_dit(fast=True)
        for shape in shapes:
            cache = StepCache(self.dit, self.opts.cache_thresholds[0])
            warm = self.warmup(shape)
            cache.reset(self.opts.steps)
            meter, latent, video = self.sample(shape, self.opts.steps, denoiser=cache, uncond_every=self.opts.uncond_every)
            r = self.row(shape, "fast", meter, self.opts.steps, calls=cache.computed_rows / 2)
            r.warmup_s = warm
            from scail.animate import attention

            attn = "fp8 attention" if attention.fp8_active(self.device) else "bf16 attention"
            r.notes = (f"fp8 linears + {attn} + step cache {self.opts.cache_thresholds[0]} "
                       f"({cache.skipped}/{self.opts.steps} skipped) + uncond every {self.opts.uncond_every} "
                       f"({cache.one_row_steps}/{self.opts.steps} steps cond only)")
            ref = reference.get(str(shape))
            if ref is not None:
                r.latent_rel_err = relative_error(latent.cpu(), ref[0])
                r.psnr_db = psnr(video.cpu(), ref[1])
            rows.append(r)
            self.say(format_row(r))
            del cache, latent, video  # the cache holds the fp8 model: drop it before `quality` rebuilds
        if self.opts.quality_steps > 0:
            rows += self.quality(shapes[0])
        self.drop_dit()
        return rows

    def quality(self, shape: Shape) -> list[Row]:
        """bf16 vs fp8 vs fp8 + cache over `quality_steps` steps at `shape` (same seed); the fp8 DiT
        must be built (and warm) on entry; none is left on exit."""
        from scail.animate.fast import StepCache, psnr, relative_error

        n = self.opts.quality_steps
        rows = []
        runs = []
        for threshold in self.opts.cache_thresholds:
            cache = StepCache(self.dit, threshold)
            cache.reset(n)
            m, lat, vid = self.sample(shape, n, denoiser=cache, uncond_every=self.opts.uncond_every)
            note = (f"fp8 + cache {threshold}: {cache.skipped}/{n} skipped; uncond every {self.opts.uncond_every}: "
                    f"{cache.one_row_steps}/{n} steps cond only")
            runs.append((f"fast x{n}", m, lat.cpu(), vid.cpu(), cache.computed_rows / 2, note))
            del cache, lat, vid
        from scail.animate import attention

        fp8_attn = attention.fp8_active(self.device)
        m, lat, vid = self.sample(shape, n)  # fp8, every step
        runs.append((f"fp8 x{n}", m, lat.cpu(), vid.cpu(), n,
                     "fp8 linears" + (" + fp8 attention" if fp8_attn else "") + ", every step"))
        del lat, vid
        if fp8_attn:  # the same model with the attention back in bf16 (the op reads the switch per call)
            attention.set_fp8(False)
            m, lat, vid = self.sample(shape, n)
            runs.append((f"fp8 lin x{n}", m, lat.cpu(), vid.cpu(), n, "fp8 linears, bf16 attention, every step"))
            del lat, vid
        self.build_dit()
        self.warmup(shape)
        m_ref, lat_ref, vid_ref = self.sample(shape, n)
        lat_ref, vid_ref = lat_ref.cpu(), vid_ref.cpu()
        for mode, m, lat, vid, calls, note in (
            (f"bf16 x{n}", m_ref, lat_ref, vid_ref, n, "reference"),
            *runs,
        ):
            r = self.row(shape, mode, m, n, calls=calls)
            r.notes = note
            if lat is not lat_ref:
                r.latent_rel_err = relative_error(lat, lat_ref)
                r.psnr_db = psnr(vid, vid_ref)
            rows.append(r)
            self.say(format_row(r))
        self.drop_dit()
        return rows


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------

COLUMNS = (
    ("shape", "shape", "{}"),
    ("mode", "mode", "{}"),
    ("s_per_step", "s/step", "{:.2f}"),
    ("tflops", "TFLOP/s", "{:.4g}"),
    ("peak_denoise_gib", "peak denoise GiB", "{:.1f}"),
    ("peak_sample_gib", "peak sample GiB", "{:.1f}"),
    ("t5_s", "T5 s", "{:.2f}"),
    ("clip_s", "CLIP s", "{:.2f}"),
    ("vae_encode_s", "VAE enc s", "{:.2f}"),
    ("denoise_s", "denoise s", "{:.1f}"),
    ("vae_decode_s", "VAE dec s", "{:.2f}"),
    ("latent_rel_err", "latent rel err", "{:.3g}"),
    ("psnr_db", "PSNR dB", "{:.1f}"),
    ("notes", "notes", "{}"),
)


def _cell(value: Any, fmt: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return fmt.format(value)


def format_row(r: Row) -> str:
    return " | ".join(f"{title}={_cell(getattr(r, key), fmt)}" for key, title, fmt in COLUMNS)


def format_table(rows: Sequence[Row], official: bool = True) -> str:
    """A Markdown table of `rows`, with the official implementation's numbers as the first row."""
    header = [title for _, title, _ in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    if official:
        ref = Row("512x896x81", "official SAT (issue 6)", OFFICIAL_S_PER_STEP, OFFICIAL_TFLOPS)
        ref.peak_sample_gib = OFFICIAL_PEAK_GIB
        ref.notes = "H200, bf16, measured by the issue"
        rows = [ref, *rows]
    for r in rows:
        lines.append("| " + " | ".join(_cell(getattr(r, key), fmt) for key, _, fmt in COLUMNS) + " |")
    return "\n".join(lines)


def run_benchmark(opts: Options, on_line: Callable[[str], None] = lambda s: None) -> list[Row]:
    """Run the benchmark described by `opts`; `on_line` receives progress lines."""
    import torch

    if opts.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA device")
    flops = None
    if opts.preset == "14b":
        shape = Shape.parse((opts.shapes or presets()["14b"].shapes)[0])
        f, h, w = shape.latent
        flops = dit_flops(presets()["14b"].dit(), f, h // 2, w // 2)
        on_line(
            f"analytic FLOPs per step at {shape} (CFG batch 2): {flops.total / 1e15:.3f} PFLOP "
            f"(linear {flops.linear / 1e15:.3f}, attention {flops.attention / 1e15:.3f} = "
            f"{flops.attention / flops.total:.0%}, other {flops.other / 1e15:.4f})"
        )
    return Bench(opts, on_line).run()


# ----------------------------------------------------------------------------------------------
# Micro-benchmarks (a bare GPU box: attention kernels and one DiT step, eager vs compiled)
# ----------------------------------------------------------------------------------------------


def bench_attention(seq: int, heads: int = 40, head_dim: int = 128, batch: int = 2, reps: int = 3) -> dict[str, float]:
    """TFLOP/s of each SDPA backend at one self-attention shape (bf16, CUDA)."""
    import torch

    from scail.animate import attention as attn

    q, k, v = (torch.randn(batch, seq, heads, head_dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    flops = 4 * batch * heads * seq * seq * head_dim
    out: dict[str, float] = {}
    before = attn.get_backend()
    for name in ("sdpa_cudnn", "sdpa_flash", "sdpa_efficient", *(n for n in attn.available_backends() if n.startswith("flash_attn"))):
        attn.set_backend(name)  # type: ignore[arg-type]
        try:
            attn.attention(q, k, v)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(reps):
                attn.attention(q, k, v)
            torch.cuda.synchronize()
            out[name] = flops * reps / (time.perf_counter() - t0) / 1e12
        except Exception as exc:  # a kernel that does not apply to this shape/GPU
            log.warning("attention backend %s failed: %s", name, exc)
    attn.set_backend(before)  # type: ignore[arg-type]
    if attn.fp8_kernel_available(q.device):
        attn.set_fp8(True)
        try:
            attn.attention(q, k, v)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(reps):
                attn.attention(q, k, v)  # includes quantizing q, k, v
            torch.cuda.synchronize()
            out["flash_attn_3_fp8"] = flops * reps / (time.perf_counter() - t0) / 1e12
        finally:
            attn.set_fp8(False)
    return out


def bench_step(
    opts: Options, shape: Shape, variants: Sequence[str] = ("eager", "compiled"), reps: int = 1,
    on_line: Callable[[str], None] = lambda s: None,
) -> list[Row]:
    """s/step of the DiT alone (one CFG-pair forward) at `shape`, per variant: eager, compiled, fp8 (linears),
    fast (fp8 linears + fp8 attention); a "-batched" suffix runs the CFG pair as one batch through the
    blocks, else as `opts.rows_in_turn` says."""
    import torch

    bench = Bench(dataclasses.replace(opts, compile=False), on_line)
    bench.clip = None
    rows = []
    f, h, w = shape.latent
    flops = dit_flops(bench.dit_cfg, f, h // 2, w // 2)
    for variant in variants:
        kind, _, batched = variant.partition("-")
        bench.opts.compile = kind != "eager"
        bench.opts.fp8_attention = kind == "fast"
        bench.build_dit(fast=kind in ("fp8", "fast"), rows_in_turn=False if batched else None)
        dev, c = bench.device, bench.dit_cfg
        args = (
            torch.randn(2, f, 16, h, w, device=dev),
            torch.tensor([500.0], device=dev),
            torch.randn(2, c.text_len, c.text_dim, device=dev, dtype=bench.dtype),
            torch.randn(1, 1, 16, h, w, device=dev),
            torch.randn(1, f, 16, h // 2, w // 2, device=dev),
            torch.randn(1, 257, c.clip_dim, device=dev),
        )
        meter = Meter(dev)
        with meter.stage("warmup"), torch.no_grad():
            bench.dit(*args)
        with meter.stage("denoise"), torch.no_grad():
            for _ in range(reps):
                bench.dit(*args)
        r = Row(str(shape), f"step {variant}")
        r.s_per_step = meter.seconds["denoise"] / reps
        r.tflops = flops.total / r.s_per_step / 1e12
        r.peak_denoise_gib = meter.peak_gib.get("denoise", float("nan"))
        r.warmup_s = meter.seconds["warmup"]
        r.notes = f"warmup {r.warmup_s:.1f}s, {bench.attention}, rows {'batched' if batched else ('in turn' if opts.rows_in_turn else 'batched')}"
        rows.append(r)
        on_line(format_row(r))
        bench.drop_dit()
    return rows


def profile_blocks(opts: Options, shape: Shape, on_line: Callable[[str], None], layers: int = 2) -> None:
    """Kernel time table of one forward of a `layers`-block DiT at full width (compiled as the bench)."""
    from torch.profiler import ProfilerActivity, profile

    bench = Bench(opts, on_line)
    bench.dit_cfg = dataclasses.replace(bench.dit_cfg, num_layers=layers)
    bench.build_dit()
    bench.warmup(shape)
    cuda = bench.device.type == "cuda"
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        bench.warmup(shape)
    on_line(prof.key_averages().table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total", row_limit=30, max_name_column_width=90))
    bench.drop_dit()


def write_sat(folder: str, cfg: DiTConfig, seed: int, on_line: Callable[[str], None], device: str = "cuda") -> None:
    """A random DiT saved as the released checkpoint is laid out: <folder>/model/latest + 1/mp_rank_00_model_states.pt."""
    from pathlib import Path

    import torch

    from scail.animate.dit_loader import SAT_FILE, wan_to_sat

    t0 = time.perf_counter()
    dev = torch.device(device)
    dit = random_dit(cfg, dev, torch.bfloat16, seed)
    state = {k: v.cpu() for k, v in wan_to_sat(dit.state_dict()).items()}
    del dit
    free_memory(dev)
    model = Path(folder) / "model"
    (model / "1").mkdir(parents=True, exist_ok=True)
    torch.save({"module": state}, model / "1" / SAT_FILE)
    (model / "latest").write_text("1\n", encoding="utf-8")
    size = (model / "1" / SAT_FILE).stat().st_size
    on_line(f"wrote {model} ({size / 1e9:.1f} GB, {len(state)} tensors) in {time.perf_counter() - t0:.1f}s")


def cold_start(folder: str, opts: Options, on_line: Callable[[str], None]) -> Row:
    """Seconds from launch ($SCAIL_T0, epoch seconds set by the shell; else process start) to the
    first denoising step, loading the DiT from a SAT folder (VAE, umT5 and CLIP are random: built
    on the device, not read from disk)."""
    import os

    t_launch = float(os.environ.get("SCAIL_T0", "0")) or _process_start()
    import torch  # noqa: F401  (timed: the import is part of the cold start)

    from scail.animate.dit_loader import load_dit

    t_import = time.time() - t_launch
    bench = Bench(opts, on_line)
    dit = load_dit(folder, num_heads=bench.dit_cfg.num_heads, dtype=bench.dtype, device=bench.device)
    Meter(bench.device).sync()
    t_dit = time.time() - t_launch
    dit.set_ffn_chunks(opts.ffn_chunks)
    dit.set_rows_in_turn(opts.rows_in_turn)
    if opts.compile:
        dit.compile_blocks()
    bench.dit = dit
    bench.build_aux()
    t_aux = time.time() - t_launch
    marks: list[float] = []

    def first(*args: Any) -> Any:
        marks.append(time.time() - t_launch)
        out = dit(*args)
        Meter(bench.device).sync()
        marks.append(time.time() - t_launch)
        return out

    shape = Shape.parse((opts.shapes or bench.preset.shapes)[0])
    bench.sample(shape, 1, denoiser=first)
    r = Row(str(shape), "cold start")
    r.extra = {"import_s": t_import, "dit_loaded_s": t_dit, "aux_built_s": t_aux,
               "first_step_start_s": marks[0], "first_step_end_s": marks[1]}  # fmt: skip
    r.notes = (
        f"launch->first step {marks[0]:.1f}s (torch import {t_import:.1f}s, DiT loaded {t_dit:.1f}s, "
        f"VAE/umT5/CLIP {t_aux:.1f}s), first step done {marks[1]:.1f}s (includes torch.compile)"
    )
    on_line(r.notes)
    return r


def _process_start() -> float:
    """Epoch seconds at which this process started (Linux /proc), else now."""
    import os

    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()


# ----------------------------------------------------------------------------------------------
# Command line (python -m scail.animate.bench)
# ----------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> tuple[Options, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m scail.animate.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="14b", choices=sorted(presets()))
    p.add_argument("--device", default="cuda")
    p.add_argument("--shapes", default="", help="comma-separated HxWxT (default: the preset's two shapes)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--modes", default="resident,offload,fast")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--attention", default="auto")
    p.add_argument("--cache-threshold", default="0.1", help="step-cache threshold(s), comma-separated")
    p.add_argument("--quality-steps", type=int, default=0)
    p.add_argument("--tile", type=int, default=0, help="VAE decode tile side in latent pixels (0: untiled)")
    p.add_argument("--ffn-chunks", type=int, default=1)
    p.add_argument("--rows", choices=("in-turn", "batched"), default="in-turn",
                   help="CFG pair through each block one row after the other (less memory) or as one batch")
    p.add_argument("--no-fp8-attention", action="store_true", help="fast mode keeps the attention in bf16")
    p.add_argument("--uncond-every", type=int, default=1, help="fast mode: CFG's unconditional branch every n-th step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--write-sat", default="", help="write a random full-size DiT in the released SAT layout to this folder")
    p.add_argument("--cold-start", default="", help="time launch -> first denoising step loading the DiT from this folder")
    p.add_argument("--json", default="")
    p.add_argument("--micro", default="", help="comma-separated: attention, profile, step-eager, step-compiled, "
                   "step-fp8, step-fast, and any step variant with -batched (e.g. step-compiled-batched)")
    a = p.parse_args(argv)
    opts = Options(
        preset=a.preset,
        device=a.device,
        shapes=tuple(s for s in a.shapes.split(",") if s),
        steps=a.steps,
        modes=tuple(m for m in a.modes.split(",") if m),
        compile=not a.no_compile,
        attention=a.attention,
        cache_thresholds=tuple(float(v) for v in a.cache_threshold.split(",") if v),
        quality_steps=a.quality_steps,
        tile=a.tile,
        ffn_chunks=a.ffn_chunks,
        rows_in_turn=a.rows == "in-turn",
        fp8_attention=not a.no_fp8_attention,
        uncond_every=a.uncond_every,
        seed=a.seed,
        json_path=a.json,
    )
    return opts, a


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    opts, a = parse_args(argv)

    def say(line: str) -> None:
        print(line, flush=True)

    rows: list[Row] = []
    if a.write_sat:
        write_sat(a.write_sat, presets()[opts.preset].dit(), opts.seed, say, opts.device)
    if a.cold_start:
        rows.append(cold_start(a.cold_start, opts, say))
    micro = [m for m in a.micro.split(",") if m]
    if "profile" in micro:
        profile_blocks(opts, Shape.parse((opts.shapes or presets()[opts.preset].shapes)[0]), say)
    if micro:
        shape = Shape.parse((opts.shapes or presets()[opts.preset].shapes)[0])
        if "attention" in micro:
            f, h, w = shape.latent
            seq = sum(token_counts(f, h // 2, w // 2))
            say(f"attention TFLOP/s at L={seq}: {json.dumps({k: round(v) for k, v in bench_attention(seq).items()})}")
        variants = [m.removeprefix("step-") for m in micro if m.startswith("step-")]
        if variants:
            rows += bench_step(opts, shape, variants, on_line=say)
    if opts.modes:
        rows += run_benchmark(opts, say)
    say(format_table(rows))
    if opts.json_path:
        with open(opts.json_path, "w", encoding="utf-8") as fh:
            json.dump([dataclasses.asdict(r) for r in rows], fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time and GPU memory of one animate sample, from stage formulas and the measured GPU table.

Why formulas scaled from one measured point: a SCAIL step is compute-bound (benchmarks/README.md: attention
63 % and block linears 37 % of 6.310 PFLOP at 512x896x81, both at a steady TFLOP/s), so the time of a
window step is the measured s/step at the reference shape times the ratio of their FLOP counts
(`scail.animate.flops.dit_flops`, attention quadratic in the window's tokens). At the reference shape
the estimate *is* the measured number. CFG off halves the batch; fast mode's unconditional branch
every n-th step runs the pair on 1/n of the steps (for n = 2 the prediction equals the measured step;
benchmarks/README.md).

Memory: weights from the DiT's parameter count (bf16; fp32 for the time embedding, adaLN tables and
head; FP8 block linears in fast mode; two streamed blocks with block offload) plus the rest of the
measured peak at the reference shape, scaled with the tokens of one window (flash attention keeps
the activations linear in the tokens). The fit check multiplies by the allocator's measured
reserved/allocated ratio.

The DiT config classes are imported from scail.animate (torch is imported, no model is built).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scail.animate.dit import DiTConfig
    from scail.animate.flops import FlopCount
    from scail.gpu_speed import GpuSpeed, MemoryCalibration

GIB = 2**30
REFERENCE_HW = (512, 896)
REFERENCE_FRAMES = 81
REFERENCE_LATENTS = 21
REFERENCE_PFLOP = 6.310
"""The DiT step at the reference shape with the CFG pair (`reference_flops()` computes it exactly)."""
SPARE_BLOCKS_OFFLOAD = 2
"""Blocks resident at once with `offload: blocks` (the double buffer of scail/animate/offload.py)."""


# ----------------------------------------------------------------------------------------------
# The model: parameter counts and FLOPs
# ----------------------------------------------------------------------------------------------


def dit_config(model: str) -> DiTConfig:
    """The DiT hyper-parameters of `AnimateConfig.model` (no weights are read)."""
    from scail.animate.dit import DiTConfig
    from scail.animate.dit2 import SCAIL2Config

    return {"scail-preview-14b": DiTConfig.scail_14b, "tiny-random": DiTConfig.tiny,
            "scail-2-14b": SCAIL2Config.scail_14b, "tiny-random-scail-2": SCAIL2Config.tiny}[model]()


@dataclass(frozen=True)
class ParamCount:
    """Parameters of a DiT by where they live (the structure of scail/animate/dit.py)."""

    total: int
    fp32: int
    """Kept in float32 whatever the dtype (`dit.is_fp32_param`)."""
    block_linear: int
    """Weight matrices of the blocks' linears: FP8 in fast mode."""
    per_block: int


def param_count(cfg: DiTConfig) -> ParamCount:
    """Counted from the hyper-parameters (a test checks it against the module on the meta device)."""
    import math

    d, f, c = cfg.dim, cfg.ffn_dim, cfg.clip_dim
    p = math.prod(cfg.patch_size)
    linear = lambda i, o: i * o + o  # noqa: E731 - weight + bias
    block = 4 * linear(d, d) + 2 * d  # self-attention + qk norms
    block += 6 * linear(d, d) + 3 * d  # cross-attention (text k/v, CLIP k/v) + norms
    block += 2 * d  # norm3 (affine LayerNorm)
    block += linear(d, f) + linear(f, d)  # FFN
    block += 6 * d  # modulation (fp32)
    time = linear(cfg.freq_dim, d) + linear(d, d) + linear(d, 6 * d)  # time embedding + projection (fp32)
    head = linear(d, p * cfg.latent_channels) + 2 * d  # fp32
    other = 2 * linear(cfg.in_channels * p, d)  # video and pose patch embeddings
    other += linear(cfg.text_dim, d) + linear(d, d)  # text embedding
    other += 2 * c + linear(c, c) + linear(c, d) + 2 * d  # CLIP projection
    mask_dim = getattr(cfg, "mask_dim", 0)
    if mask_dim:
        other += linear(mask_dim * p, d)  # SCAIL-2's identity-mask patch embedding
    total = cfg.num_layers * block + time + head + other
    return ParamCount(total=total, fp32=cfg.num_layers * 6 * d + time + head,
                      block_linear=cfg.num_layers * (10 * d * d + 2 * d * f), per_block=block)


def window_flops(cfg: DiTConfig, latents: int, size_hw: tuple[int, int], batch: float,
                 extra_refs: int = 0) -> float:
    """FLOPs of one DiT forward on one window: `batch` samples (2: the CFG pair) of `latents` frames.

    SCAIL-2's extra references add one frame of tokens each; they are counted by growing the
    sequence (linears linear, attention quadratic in it).
    """
    from scail.animate.flops import dit_flops, token_counts

    gh, gw = size_hw[0] // 16, size_hw[1] // 16
    flops: FlopCount = dit_flops(cfg, latents, gh, gw, batch=1)
    grow = 1.0
    if extra_refs:
        seq = sum(token_counts(latents, gh, gw))
        grow = (seq + extra_refs * gh * gw) / seq
    return batch * (flops.linear * grow + flops.attention * grow * grow + flops.other)


def window_tokens(latents: int, size_hw: tuple[int, int], extra_refs: int = 0) -> int:
    """Tokens of one window's sequence: reference(s) + video + pose."""
    from scail.animate.flops import token_counts

    gh, gw = size_hw[0] // 16, size_hw[1] // 16
    return sum(token_counts(latents, gh, gw)) + extra_refs * gh * gw


@functools.cache
def reference_flops() -> float:
    """FLOPs of the measured step: SCAIL-Preview 14B, 512x896x81, CFG pair (6.310 PFLOP)."""
    return window_flops(dit_config("scail-preview-14b"), REFERENCE_LATENTS, REFERENCE_HW, 2)


# ----------------------------------------------------------------------------------------------
# One sample
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnimateWork:
    """What one animate run computes: its windows (or SCAIL-2 segments) and settings."""

    model: str
    size_hw: tuple[int, int]
    frames: int
    """Output frames."""
    windows: tuple[int, ...]
    """Latent frames of each window (SCAIL-Preview) or segment (SCAIL-2), each denoised every step
    (windows) or `steps` times in turn (segments): either way steps x windows DiT forwards."""
    steps: int
    cfg: bool
    fast: bool = False
    uncond_every: int = 1
    offload: str = "encoders"
    dtype: str = "bfloat16"
    extra_refs: int = 0
    gpus: int = 1
    decoded_frames: int = 0
    """Frames the VAE decodes (SCAIL-2: every segment, overlaps included); default `frames`."""


@dataclass
class AnimateEstimate:
    """Estimated cost of one `AnimateWork` on one GPU model (None: no measured speed)."""

    pflop_per_step: float
    """All windows, one sampler step."""
    pflop_total: float
    tokens: int
    """Of the largest window."""
    dit_mode: str
    """Which measured s/step it scales (`gpu_speed.DIT_KEYS`)."""
    s_per_window_step: float | None
    """One DiT step of the largest window: the table's value at the reference shape."""
    s_per_step: float | None
    stage_s: dict[str, float | None] = field(default_factory=dict)
    """t5, clip, vae_encode, denoise, vae_decode (per sample)."""
    total_s: float | None = None
    weights_gib: float = 0.0
    peak_gib: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        r = lambda v: None if v is None else round(v, 3)  # noqa: E731
        return {"pflop_per_step": r(self.pflop_per_step), "pflop_total": r(self.pflop_total),
                "tokens": self.tokens, "dit_mode": self.dit_mode, "s_per_window_step": r(self.s_per_window_step),
                "s_per_step": r(self.s_per_step), "stage_s": {k: r(v) for k, v in self.stage_s.items()},
                "total_s": r(self.total_s), "weights_gib": round(self.weights_gib, 2),
                "peak_gib": round(self.peak_gib, 2), "notes": self.notes}


def dit_mode(work: AnimateWork, flash_attn: bool, fp8_attention: str | None = None) -> str:
    """The table entry this work's DiT step scales from: `flash_attn` (3 or 4) for the bf16
    attention, `fp8_attention` (``flash_attn_3``, ``cudnn`` or None) for fast mode's."""
    if work.fast:
        return {"flash_attn_3": "fast", "cudnn": "fast_cudnn"}.get(fp8_attention or "", "fast_sdpa")
    if work.offload == "blocks":
        return "offload" if flash_attn else "offload_sdpa"
    return "bf16" if flash_attn else "bf16_sdpa"


def _reference_s(row: GpuSpeed | None, mode: str) -> float | None:
    if row is None:
        return None
    dit = row.dit_s_per_step
    if mode == "offload_sdpa":  # offload costs what it costs with flash-attn 3, on the SDPA step
        if {"offload", "bf16", "bf16_sdpa"} <= dit.keys():
            return dit["offload"] * dit["bf16_sdpa"] / dit["bf16"]
        return None
    return dit.get(mode)


def estimate(work: AnimateWork, row: GpuSpeed | None, memory: MemoryCalibration, flash_attn: bool,
             fp8_attention: str | None = None) -> AnimateEstimate:
    """Time (when `row` has the speeds) and peak memory of one sample."""
    cfg = dit_config(work.model)
    batch = 2.0 if work.cfg else 1.0
    if work.cfg and work.fast and work.uncond_every > 1:
        batch = 1.0 + 1.0 / work.uncond_every
    per_window = [window_flops(cfg, n, work.size_hw, batch, work.extra_refs) for n in work.windows]
    per_step = sum(per_window)
    mode = dit_mode(work, flash_attn, fp8_attention)
    ref_s = _reference_s(row, mode)
    notes: list[str] = []
    s_window = s_step = None
    if ref_s is not None:
        rate = reference_flops() / ref_s  # effective FLOP/s at the measured shape
        s_window = max(per_window) / rate / work.gpus
        s_step = per_step / rate / work.gpus
        if work.gpus > 1:
            notes.append(f"{work.gpus} GPUs: ideal scaling assumed (sequence parallel speed not measured)")
    elif row is not None:
        notes.append(f"no measured s/step for {mode} on {row.name}")
    est = AnimateEstimate(pflop_per_step=per_step / 1e15, pflop_total=per_step * work.steps / 1e15,
                          tokens=max(window_tokens(n, work.size_hw, work.extra_refs) for n in work.windows),
                          dit_mode=mode, s_per_window_step=s_window, s_per_step=s_step, notes=notes)
    _times(est, work, row)
    _memory(est, work, cfg, memory)
    return est


def _times(est: AnimateEstimate, work: AnimateWork, row: GpuSpeed | None) -> None:
    stages = row.stages if row is not None else {}
    scale = work.size_hw[0] * work.size_hw[1] / (REFERENCE_HW[0] * REFERENCE_HW[1])
    decoded = work.decoded_frames or work.frames

    def per(key: str, factor: float = 1.0) -> float | None:
        return stages[key] * factor if key in stages else None

    est.stage_s = {
        "t5": per("t5_s"),
        "clip": per("clip_s"),
        "vae_encode": per("vae_encode_s", scale * decoded / REFERENCE_FRAMES),
        "denoise": est.s_per_step * work.steps if est.s_per_step is not None else None,
        "vae_decode": per("vae_decode_s", scale * decoded / REFERENCE_FRAMES),
    }
    known = [v for v in est.stage_s.values() if v is not None]
    est.total_s = sum(known) if est.stage_s["denoise"] is not None else None


def weights_gib(cfg: DiTConfig, mode: str, dtype: str = "bfloat16") -> float:
    """GiB of DiT weights on the GPU: resident, fast (FP8 block linears) or offload (two blocks)."""
    n = param_count(cfg)
    size = 4 if dtype == "float32" else 2
    resident = n.total * size + n.fp32 * (4 - size)
    if mode == "fast":
        return (resident - n.block_linear * (size - 1)) / GIB
    if mode == "offload":
        block = n.per_block * size + 6 * cfg.dim * (4 - size)  # its modulation is fp32
        return (resident - (cfg.num_layers - SPARE_BLOCKS_OFFLOAD) * block) / GIB
    return resident / GIB


def memory_mode(work: AnimateWork) -> str:
    return "fast" if work.fast else "offload" if work.offload == "blocks" else "resident"


def _memory(est: AnimateEstimate, work: AnimateWork, cfg: DiTConfig, memory: MemoryCalibration) -> None:
    mode = memory_mode(work)
    ref_cfg = dit_config("scail-preview-14b")
    measured = {"resident": memory.resident, "offload": memory.offload, "fast": memory.fast}[mode]
    rest_ref = measured - weights_gib(ref_cfg, mode)  # activations and buffers at 48,832 tokens
    ref_tokens = window_tokens(REFERENCE_LATENTS, REFERENCE_HW)
    act_scale = (2.0 if work.dtype == "float32" else 1.0) * est.tokens / ref_tokens / work.gpus
    est.weights_gib = weights_gib(cfg, mode, work.dtype)
    est.peak_gib = est.weights_gib + rest_ref * act_scale
    if work.offload == "none":
        est.peak_gib += memory.encoders

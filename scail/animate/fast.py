"""Opt-in fast mode for the DiT: FP8 matmuls and a step-skipping cache. Not numerically equal to the
official model; the benchmark measures what it costs (latent relative error, PSNR of the video).

* `quantize_fp8(dit)`: the large block linears (self-attention q/k/v/o, cross-attention q/o, FFN)
  become `FP8Linear`: float8 e4m3 weights with one scale per output row, activations quantized per
  token on the fly, product through `torch._scaled_mm` (Hopper / Ada; float32-emulated elsewhere,
  so the CPU tests run the same arithmetic). Halves the block weights' memory.
* FP8 self-attention (`scail.animate.attention.set_fp8`): q, k, v in float8 e4m3 with one scale per
  (row, head), through flash-attn 3's FP8 kernel on Hopper. `enable_fast` turns on both.
* `sampler.GuidanceReuse` (with `uncond_every` > 1): the unconditional CFG branch every n-th step
  only, its difference to the conditional one reused in between (FasterCache's CFG cache).
* `StepCache`: TeaCache-style skipping. At each step the modulated input of the first block is
  compared with the one at the previous step; the relative L1 changes are accumulated, and while
  the sum stays under `threshold` the blocks are skipped and the residual they added at the last
  computed step is reused. threshold 0 computes every step (exactly `dit.forward`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from scail.animate.dit import DiT, DiTBlock
    from scail.animate.pipeline import AnimatePipeline

log = logging.getLogger(__name__)

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite e4m3fn value


def _rowwise_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, K) -> (x_fp8 (M, K), scale (M, 1) float32) with x ~= x_fp8 * scale."""
    amax = x.abs().amax(dim=1, keepdim=True).float().clamp_(min=1e-12)
    scale = amax / FP8_MAX
    return (x.float() / scale).to(FP8), scale


def fp8_supported(device: torch.device) -> bool:
    """Whether `torch._scaled_mm` runs on `device` (CUDA compute capability 8.9 or newer)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


class FP8Linear(nn.Module):
    """A linear layer with float8 weights (per-output-row scales) and per-token float8 activations.

    Output in the input's dtype. On devices without FP8 matmuls the same quantized values are
    multiplied in float32.
    """

    weight_fp8: torch.Tensor  # (N, K) float8 e4m3
    weight_scale: torch.Tensor  # (1, N) float32

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w_fp8, w_scale = _rowwise_fp8(linear.weight.data)  # (N, K), (N, 1)
        self.register_buffer("weight_fp8", w_fp8)
        self.register_buffer("weight_scale", w_scale.t().contiguous())  # (1, N) float32
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.data, requires_grad=False)
        self.use_scaled_mm = fp8_supported(w_fp8.device) and self.in_features % 16 == 0 and self.out_features % 16 == 0

    @classmethod
    def from_fp8(cls, weight_fp8: torch.Tensor, row_scale: torch.Tensor, bias: torch.Tensor | None) -> FP8Linear:
        """An FP8Linear over float8 weights as a checkpoint stores them (weight = weight_fp8 * row_scale
        per output row), used as they are instead of being quantized again (`quant.fp8_linears`)."""
        n, k = weight_fp8.shape
        layer = cls(nn.Linear(k, n, bias=bias is not None, device="meta"))
        layer.weight_fp8 = weight_fp8
        layer.weight_scale = row_scale.to(device=weight_fp8.device, dtype=torch.float32).reshape(1, n).contiguous()
        if bias is not None:
            layer.bias = nn.Parameter(bias, requires_grad=False)
        layer.use_scaled_mm = fp8_supported(weight_fp8.device) and k % 16 == 0 and n % 16 == 0
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # (M, K)
        xq, x_scale = _rowwise_fp8(x2)
        if self.use_scaled_mm and x2.shape[0] % 16 == 0:
            out = torch._scaled_mm(
                xq, self.weight_fp8.t(), scale_a=x_scale, scale_b=self.weight_scale, out_dtype=torch.bfloat16
            )
        else:
            w = self.weight_fp8.float() * self.weight_scale.t()  # (N, K)
            out = (xq.float() * x_scale) @ w.t()
        out = out.to(x.dtype)
        if self.bias is not None:
            out = out + self.bias.to(x.dtype)
        return out.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8 e4m3 rowwise"


FP8_LINEARS: tuple[str, ...] = (
    "self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.o", "ffn.0", "ffn.2",
)  # fmt: skip


@torch.no_grad()
def quantize_fp8(dit: DiT, names: tuple[str, ...] = FP8_LINEARS) -> DiT:
    """Replace the named linears of every block by `FP8Linear`, in place (the bf16 weights are freed)."""
    for block in dit.blocks:
        for name in names:
            parent_name, _, child = name.rpartition(".")
            parent = block.get_submodule(parent_name)
            linear = parent.get_submodule(child)
            if isinstance(linear, nn.Linear):
                setattr(parent, child, FP8Linear(linear))
    if any(p.is_cuda for p in dit.blocks.parameters()):
        torch.cuda.empty_cache()
    return dit


def enable_fast(dit: DiT, fp8_attention: bool = True) -> DiT:
    """Fast mode's arithmetic on `dit`: FP8 block linears (`quantize_fp8`) and, for the whole process,
    FP8 self-attention (`attention.set_fp8`; bf16 where flash-attn 3 on Hopper is missing)."""
    from scail.animate import attention

    quantize_fp8(dit)
    attention.set_fp8(fp8_attention)
    return dit


class StepCache:
    """TeaCache-style step skipping around a DiT (see the module docstring).

    Use `cache(x, t, context, ref, pose, clip)` in place of `dit(...)` inside one sampling run, and
    `reset(steps)` before each run. One scalar is read back to the host per step (the decision).

    Args:
        dit: the model.
        threshold: accumulated relative L1 change of the first block's modulated input under
            which steps are skipped; 0 never skips.
        max_skips: at most this many skipped steps in a row.
        stride: the change is measured on every `stride`-th token (cheaper, same signal).
    """

    def __init__(self, dit: DiT, threshold: float, max_skips: int = 2, stride: int = 8) -> None:
        self.dit, self.threshold, self.max_skips, self.stride = dit, threshold, max_skips, stride
        self.reset(None)

    def reset(self, steps: int | None) -> None:
        """Start a sampling run of `steps` steps (the first and the last step are always computed)."""
        self.steps = steps
        self.step = 0
        self.computed = 0
        self.computed_rows = 0  # rows through the blocks (a CFG pair is 2, a reused-guidance step 1)
        self.skipped = 0
        self._acc = 0.0
        self._in_row = 0
        self._prev: torch.Tensor | None = None
        self._residual: torch.Tensor | None = None

    @property
    def one_row_steps(self) -> int:
        """Computed steps that ran the cond row alone (reused guidance) instead of the CFG pair."""
        return 2 * self.computed - self.computed_rows

    def _indicator(self, tokens: torch.Tensor, e0: torch.Tensor) -> torch.Tensor:
        """The first block's modulated input of the last row (the conditional one of a CFG pair)."""
        block = cast("DiTBlock", self.dit.blocks[0])
        shift, scale = (block.modulation.float() + e0[-1:])[:, :2].unbind(1)  # (1, D) each
        sub = tokens[-1:, :: self.stride]
        return block.norm1(sub) * (1 + scale[:, None]) + shift[:, None]

    @torch.no_grad()
    def __call__(self, *inputs: torch.Tensor, **dit_kwargs: Any) -> torch.Tensor:
        """As the DiT's forward, on the same inputs (x, timesteps, context, ref_latent, pose_latent,
        clip_features; `dit_kwargs`: the SCAIL-2 DiT's extra inputs, masks and references)."""
        dit = self.dit
        tokens, cond = dit.embed(*inputs, **dit_kwargs)
        ind = self._indicator(tokens, cond.e0)
        b = tokens.shape[0]
        last = self.steps is not None and self.step >= self.steps - 1
        # rows line up from the end: a batch of 1 is the conditional row of the pair ([uncond, cond])
        have = self._residual is not None and self._residual.shape[0] >= b
        compute = self._prev is None or not have or last or self.threshold <= 0
        if not compute:
            assert self._prev is not None
            rel = ((ind - self._prev).abs().mean() / self._prev.abs().mean().clamp(min=1e-12)).item()
            if dit.parallel is not None:  # every rank of a parallel group must take rank 0's decision
                rel = dit.parallel.agree(rel)
            self._acc += rel
            compute = self._acc >= self.threshold or self._in_row >= self.max_skips
        if compute:
            out = dit.run_blocks(tokens, cond)
            residual = out - tokens
            if self._residual is not None and self._residual.shape[0] > b:
                self._residual[-b:] = residual  # keep the older rows this step did not compute
            else:
                self._residual = residual
            self._acc, self._in_row = 0.0, 0
            self.computed += 1
            self.computed_rows += b
        else:
            assert self._residual is not None
            out = tokens + self._residual[-b:]
            self._in_row += 1
            self.skipped += 1
        self._prev = ind
        self.step += 1
        return dit.unembed(out, cond)


def psnr(a: torch.Tensor, b: torch.Tensor, value_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio in dB of `a` against `b` (values spanning `value_range`)."""
    mse = F.mse_loss(a.double(), b.double()).item()
    if mse == 0:
        return float("inf")
    return 10.0 * torch.log10(torch.tensor(value_range**2 / mse, dtype=torch.float64)).item()


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64."""
    return ((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-30)).item()


def apply_fast_mode(pipeline: AnimatePipeline, cache_threshold: float, uncond_every: int = 1) -> AnimatePipeline:
    """Opt-in fast mode on a built pipeline (`AnimateConfig.fast`): FP8 linears and self-attention,
    the step cache, the CFG unconditional branch every `uncond_every` steps (`sampler.GuidanceReuse`)."""
    log.warning("fast mode: FP8, a step cache (threshold %g), unconditional branch every %d steps; the video "
                "is not the official model's bit for bit (quality cost measured in benchmarks/README.md)",
                cache_threshold, uncond_every)
    enable_fast(pipeline.dit)
    pipeline.step_cache = StepCache(pipeline.dit, cache_threshold)
    pipeline.uncond_every = uncond_every
    pipeline.label += " [fast]"
    return pipeline

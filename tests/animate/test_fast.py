"""Fast mode: FP8 linears and the step cache (threshold 0 is exactly the plain model)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from scail.animate.bench import random_dit
from scail.animate.dit import DiTConfig
from scail.animate.fast import FP8Linear, StepCache, psnr, quantize_fp8, relative_error
from scail.animate.sampler import make_schedule, sample


def inputs() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(1)
    b, t, h, w = 2, 3, 8, 12
    return (
        torch.randn(1, 7, 32, generator=gen), torch.randn(1, 1, 16, h, w, generator=gen),
        torch.randn(1, t, 16, h // 2, w // 2, generator=gen), torch.randn(1, 5, 32, generator=gen),
        torch.randn(16, t, h, w, generator=gen), torch.tensor(b),
    )  # fmt: skip


def run(net: object, steps: int) -> torch.Tensor:
    context, ref, pose, clip, noise, _ = inputs()

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        xin = x.permute(1, 0, 2, 3)[None].expand(2, -1, -1, -1, -1)
        v = net(xin, t, context, ref, pose, clip).permute(0, 2, 1, 3, 4)  # type: ignore[operator]
        return v[0] + 4.0 * (v[1] - v[0])

    with torch.no_grad():
        return sample(denoise, noise, make_schedule("euler", steps, 5.0))


def test_step_cache_threshold_zero_is_exact() -> None:
    dit = random_dit(DiTConfig.tiny(), torch.device("cpu"), torch.float32, seed=4)
    cache = StepCache(dit, threshold=0.0)
    cache.reset(6)
    assert torch.equal(run(cache, 6), run(dit, 6))
    assert (cache.computed, cache.skipped) == (6, 0)


def test_step_cache_skips_but_computes_first_and_last() -> None:
    dit = random_dit(DiTConfig.tiny(), torch.device("cpu"), torch.float32, seed=4)
    calls: list[int] = []
    original = dit.run_blocks

    def counting(tokens: torch.Tensor, cond: object) -> torch.Tensor:
        calls.append(cache.step)
        return original(tokens, cond)  # type: ignore[arg-type]

    dit.run_blocks = counting  # type: ignore[method-assign]
    cache = StepCache(dit, threshold=1e9, max_skips=2)
    cache.reset(7)
    out = run(cache, 7)
    assert calls == [0, 3, 6]  # max 2 skips in a row, last step always computed
    assert (cache.computed, cache.skipped) == (3, 4)
    assert torch.isfinite(out).all()


def test_fp8_linear_matches_quantized_reference() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32)
    x = torch.randn(5, 7, 64)
    fp8 = FP8Linear(lin)
    got = fp8(x)
    # reference: quantize each weight row and each token by its amax / 448, multiply in float64
    w_scale = lin.weight.abs().amax(1, keepdim=True) / 448
    x_scale = x.abs().amax(-1, keepdim=True) / 448
    wq = (lin.weight / w_scale).to(torch.float8_e4m3fn).double() * w_scale.double()
    xq = (x / x_scale).to(torch.float8_e4m3fn).double() * x_scale.double()
    ref = xq @ wq.t() + lin.bias.double()
    assert relative_error(got, ref) < 1e-5
    assert 1e-3 < relative_error(got, lin(x).detach()) < 0.1  # FP8 costs a few percent, not more
    assert got.shape == (5, 7, 32) and fp8.weight_fp8.dtype == torch.float8_e4m3fn


def test_quantize_fp8_replaces_block_linears_only() -> None:
    dit = random_dit(dataclasses.replace(DiTConfig.tiny(), num_layers=2), torch.device("cpu"), torch.float32, 2)
    reference = run(dit, 3)
    quantize_fp8(dit)
    block = dit.blocks[0]
    assert isinstance(block.ffn[0], FP8Linear) and isinstance(block.self_attn.q, FP8Linear)
    assert isinstance(block.cross_attn.k, torch.nn.Linear) and not isinstance(block.cross_attn.k, FP8Linear)
    assert block.compute_dtype == torch.float32
    err = relative_error(run(dit, 3), reference)
    assert 0 < err < 0.2


def test_psnr_and_relative_error() -> None:
    a = torch.zeros(100)
    b = torch.full((100,), 0.02)
    assert psnr(a, a) == float("inf")
    assert psnr(b, a) == pytest.approx(10 * torch.log10(torch.tensor(4 / 0.02**2)).item())
    assert relative_error(a + 1, torch.ones(100)) == 0.0

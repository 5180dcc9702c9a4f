"""Fast mode: FP8 linears and the step cache (threshold 0 is exactly the plain model)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import pytest
import torch

from scail.animate.dit import DiTConfig
from scail.animate.fast import FP8Linear, StepCache, psnr, quantize_fp8, relative_error
from scail.animate.random_weights import random_dit
from scail.animate.sampler import make_schedule, sample


@contextlib.contextmanager
def fp8_attention() -> Iterator[None]:
    """FP8 self-attention on for the block (a process-wide switch), off again afterwards."""
    from scail.animate import attention

    attention.set_fp8(True)
    try:
        yield
    finally:
        attention.set_fp8(False)


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


def test_quantize_heads_scales_per_row_and_head() -> None:
    from scail.animate.attention import FP8_MAX, quantize_heads

    x = torch.randn(2, 64, 3, 16) * torch.tensor([1.0, 10.0, 0.1])[None, None, :, None]
    x8, descale = quantize_heads(x)
    assert x8.dtype == torch.float8_e4m3fn and descale.shape == (2, 3)
    back = x8.float() * descale[:, None, :, None]
    assert relative_error(back, x) < 0.05  # e4m3 keeps 3 mantissa bits
    assert torch.allclose(x8.float().abs().amax(dim=(1, 3)), torch.full((2, 3), FP8_MAX))


def test_fp8_attention_applies_to_long_attention_only() -> None:
    from scail.animate import attention as attn

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, attn.FP8_MIN_KEYS, 2, 16, generator=gen) for _ in range(3))
    short = (q[:, :64], k[:, :64], v[:, :64])
    exact, exact_short = attn.attention(q, k, v), attn.attention(*short)
    with fp8_attention():
        fast, fast_short = attn.attention(q, k, v), attn.attention(*short)
    assert torch.equal(fast_short, exact_short)  # cross-attention-sized: untouched
    err = relative_error(fast, exact)
    assert 1e-4 < err < 0.1, err  # quantized, but close


def test_fast_mode_through_the_pipeline_config() -> None:
    """animate.fast=true builds the FP8 model with a step cache; the video differs from, but stays near, the exact one."""
    from pydantic import ValidationError

    from scail.animate import attention as attn
    from scail.animate.build import build_pipeline
    from scail.config import AnimateConfig

    gen = torch.Generator().manual_seed(3)
    ref, pose = torch.rand(3, 64, 96, generator=gen) * 2 - 1, torch.rand(3, 5, 32, 48, generator=gen) * 2 - 1
    kw = {"prompt": "a dancer", "steps": 6, "seed": 1}
    exact = build_pipeline(AnimateConfig(model="tiny-random", device="cpu")).generate(ref, pose, **kw)
    try:
        pipe = build_pipeline(AnimateConfig(model="tiny-random", device="cpu", fast=True, fast_cache_threshold=1e9,
                                            fast_uncond_every=2))
        assert pipe.step_cache is not None and "[fast]" in pipe.label and attn.fp8_enabled()
        assert isinstance(pipe.dit.blocks[0].ffn[0], FP8Linear)
        out = pipe.generate(ref, pose, **kw)
    finally:
        attn.set_fp8(False)
    assert out.timings_s["cache_skipped_steps"] >= 1 and out.timings_s["uncond_reused_steps"] >= 1
    assert out.frames.shape == exact.frames.shape and not torch.equal(out.latent, exact.latent)
    assert relative_error(out.latent, exact.latent) < 0.5
    with pytest.raises(ValidationError, match="offload=blocks"):
        AnimateConfig(fast=True, offload="blocks")


def test_fp8_attention_centres_keys_and_values() -> None:
    """A large component shared by every key and value (softmax-neutral) costs FP8 no precision."""
    from scail.animate import attention as attn

    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, attn.FP8_MIN_KEYS, 2, 16, generator=gen) for _ in range(3))
    k_off, v_off = k + 20.0, v + 20.0
    exact = _exact(q, k, v)  # = attention(q, k_off, v_off) - 20 in exact arithmetic
    with fp8_attention():
        err = relative_error(attn.attention(q, k, v), exact)
        err_off = relative_error(attn.attention(q, k_off, v_off) - 20.0, exact)
    assert 1e-4 < err < 0.1 and err_off < 2 * err, (err, err_off)


def _exact(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from scail.animate import attention as attn

    return attn.attention(q.double(), k.double(), v.double()).float()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp8_attention_on_cuda_is_close() -> None:
    """flash-attn 3's FP8 kernel (Hopper) against float64 attention; elsewhere the bf16 fallback."""
    from scail.animate import attention as attn

    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 4096, 4, 128, generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    v = v + 3.0  # a shared component, removed by the centring
    ref = _exact(q, k, v)  # (fp8 is off here)
    with fp8_attention():
        out = attn.attention(q, k, v)
    assert out.dtype == torch.bfloat16 and out.shape == q.shape
    assert relative_error(out.float(), ref) < 0.05


def run_guided(net: object, steps: int, every: int) -> tuple[torch.Tensor, list[bool]]:
    """`run` with CFG through `GuidanceReuse`, recording which steps ran the pair."""
    from scail.animate.sampler import GuidanceReuse

    context2 = torch.cat([inputs()[0], inputs()[0].flip(1)])  # [uncond, cond] texts differ
    _, ref, pose, clip, noise, _ = inputs()
    guidance = GuidanceReuse(4.0, every)
    pairs: list[bool] = []

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        def run_rows(pair: bool) -> torch.Tensor:
            pairs.append(pair)
            xin = x.permute(1, 0, 2, 3)[None].expand(2 if pair else 1, -1, -1, -1, -1)
            ctx = context2 if pair else context2[-1:]
            return net(xin, t, ctx, ref, pose, clip).permute(0, 2, 1, 3, 4)  # type: ignore[operator]

        return guidance.velocity(run_rows)

    with torch.no_grad():
        return sample(denoise, noise, make_schedule("euler", steps, 5.0)), pairs


def test_guidance_reuse_runs_the_pair_every_nth_step() -> None:
    from scail.animate.sampler import GuidanceReuse

    dit = random_dit(DiTConfig.tiny(), torch.device("cpu"), torch.float32, seed=4)
    exact, pairs1 = run_guided(dit, 6, every=1)
    assert pairs1 == [True] * 6
    out, pairs2 = run_guided(dit, 6, every=2)
    assert pairs2 == [True, False] * 3
    assert not torch.equal(out, exact) and relative_error(out, exact) < 0.5
    # a reused step is cond + (s - 1) * (cond - uncond) of the last pair
    g = GuidanceReuse(3.0, every=2)
    first = g.velocity(lambda pair: torch.tensor([[1.0], [2.0]]))  # uncond 1, cond 2
    second = g.velocity(lambda pair: torch.tensor([[5.0]]))  # cond only
    assert first.item() == 1.0 + 3.0 * (2.0 - 1.0) and second.item() == 5.0 + 2.0 * (2.0 - 1.0)
    assert g.reused == 1
    with pytest.raises(ValueError, match=">= 1"):
        GuidanceReuse(4.0, every=0)


def test_step_cache_follows_batch_changes_of_guidance_reuse() -> None:
    """With reused guidance the cache sees batches of 2 and 1; threshold 0 stays exact."""
    dit = random_dit(DiTConfig.tiny(), torch.device("cpu"), torch.float32, seed=4)
    cache = StepCache(dit, threshold=0.0)
    cache.reset(6)
    assert torch.equal(run_guided(cache, 6, every=2)[0], run_guided(dit, 6, every=2)[0])
    assert (cache.computed, cache.computed_rows, cache.one_row_steps) == (6, 9, 3)
    skipping = StepCache(dit, threshold=1e9, max_skips=2)
    skipping.reset(6)
    out, _ = run_guided(skipping, 6, every=2)
    assert skipping.skipped >= 1 and torch.isfinite(out).all()


def test_a_plain_pipeline_after_a_fast_one_runs_without_fp8_attention() -> None:
    """FP8 attention is a process-wide switch; each pipeline built sets it to its own mode."""
    from scail.animate import attention as attn
    from scail.animate.build import build_pipeline
    from scail.config import AnimateConfig

    try:
        build_pipeline(AnimateConfig(model="tiny-random", device="cpu", fast=True))
        assert attn.fp8_enabled()
        build_pipeline(AnimateConfig(model="tiny-random", device="cpu"))
        assert not attn.fp8_enabled()
    finally:
        attn.set_fp8(False)

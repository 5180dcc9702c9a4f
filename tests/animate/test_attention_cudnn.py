"""cuDNN's FP8 attention (fast mode on Hopper without flash-attn 3): the per-tensor scaling on the CPU
through `emulate`, and the kernel itself against that emulation on a Hopper GPU."""

from __future__ import annotations

import math

import pytest
import torch

from scail.animate import attention, attention_cudnn
from scail.animate.fast import relative_error


def _exact(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    qd, kd, vd = (x.double().transpose(1, 2) for x in (q, k, v))
    w = torch.softmax(qd @ kd.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return (w @ vd).transpose(1, 2).float()


def _inputs(lk: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 96, 3, 32, generator=g) * 1.5
    k, v = torch.randn(2, lk, 3, 32, generator=g), torch.randn(2, lk, 3, 32, generator=g)
    return q, k, v


def test_quantize_is_one_scale_per_tensor() -> None:
    x = torch.randn(2, 64, 3, 16) * torch.tensor([1.0, 10.0, 0.1])[None, None, :, None]
    x8, descale = attention_cudnn.quantize(x)
    assert x8.dtype == torch.float8_e4m3fn and descale.shape == (1, 1, 1, 1)
    assert x8.float().abs().max().item() == attention_cudnn.FP8_MAX
    assert relative_error(x8.float() * descale, x) < 0.05  # e4m3 keeps 3 mantissa bits


def test_emulated_kernel_is_as_close_as_flash_attn_3s_arithmetic_and_cannot_overflow() -> None:
    q, k, v = _inputs(lk=2 * attention.FP8_MIN_KEYS)
    exact = _exact(q, k, v)
    attention.set_fp8(True)  # on the CPU: flash-attn 3's per-(batch, head) quantization through SDPA
    try:
        per_head = relative_error(attention.attention(q, k, v), exact)
    finally:
        attention.set_fp8(False)
    bf16_out = relative_error(attention_cudnn.emulate(q, k, v, out_bf16=True), exact)
    fp8_out = relative_error(attention_cudnn.emulate(q, k, v), exact)
    assert 1e-3 < per_head < 0.1 and bf16_out < 1.1 * per_head, (per_head, bf16_out)
    assert bf16_out < fp8_out < 1.2 * per_head, (bf16_out, fp8_out)  # rounding O to e4m3 costs a little
    # a query that attends to one value row returns that row, the largest |O| the output scale must hold
    k_peak = k.clone()
    k_peak[:, 7] = q[:, 0] * 40
    one_row = attention_cudnn.emulate(q, k_peak, v)[:, 0]
    assert torch.isfinite(one_row).all() and relative_error(one_row, v[:, 7]) < 0.08


def test_centring_keeps_a_shared_offset_from_eating_the_precision() -> None:
    """The flash-attn 3 path's centring (in `attention._attention_fp8`) is what makes a shared large
    component harmless under one scale per tensor too."""
    q, k, v = _inputs(seed=1)
    exact = _exact(q, k, v)
    v_off = v + 30.0
    raw = attention_cudnn.emulate(q, k, v_off) - 30.0
    centred = attention_cudnn.emulate(q, k, v_off - v_off.mean(dim=1, keepdim=True)) + (v_off.mean(dim=1, keepdim=True)
                                                                                        - 30.0)
    assert relative_error(centred, exact) < 0.1 < relative_error(raw, exact)


def test_no_fp8_kernel_on_the_cpu_and_a_hint_that_names_the_extra() -> None:
    assert attention.fp8_kernel(torch.device("cpu")) is None
    assert not attention_cudnn.available(torch.device("cpu"))
    assert "scail[fp8-attn]" in attention.FP8_KERNEL_HINT
    err = attention_cudnn.import_error()
    assert err is None or "scail[fp8-attn]" in err or "cuDNN" in err


def _hopper_with_cudnn_fp8() -> bool:
    return torch.cuda.is_available() and attention_cudnn.available(torch.device("cuda"))


@pytest.mark.gpu
@pytest.mark.skipif(not _hopper_with_cudnn_fp8(), reason="needs a Hopper GPU and nvidia-cudnn-frontend")
def test_cudnn_kernel_matches_its_emulation_and_the_exact_attention() -> None:
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, 2048, 4, 128, generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    out = attention_cudnn.attention(q, k, v)
    assert out.dtype == torch.bfloat16 and out.shape == q.shape
    graph = attention_cudnn._graph(1, 2048, 2048, 4, 128, torch.cuda.current_device())
    emulated = attention_cudnn.emulate(q.float(), k.float(), v.float(), out_bf16=graph.out_bf16)
    exact = _exact(q.float(), k.float(), v.float())
    # the kernel keeps a running row maximum and rounds in its own order: as close to the exact
    # attention as the emulation, not bit for bit the emulation (5.7 % apart on an H100)
    kernel_err, emulated_err = relative_error(out.float(), exact), relative_error(emulated.float(), exact)
    assert kernel_err < 1.3 * emulated_err and kernel_err < 0.1, (kernel_err, emulated_err)
    # through the product's seam with fast mode's switch: the cuDNN kernel unless flash-attn 3 is built
    attention.set_fp8(True)
    try:
        seam = attention.attention(q, k, v + 3.0)
    finally:
        attention.set_fp8(False)
    # a bf16 output near 3 keeps ~1/128 of it: the output's own rounding, then the kernel's error
    rounding = relative_error((exact + 3.0).to(torch.bfloat16).float() - 3.0, exact)
    assert relative_error(seam.float() - 3.0, exact) < rounding + 0.1, rounding


def test_describe_names_the_kernels_for_the_sidecar() -> None:
    cpu = torch.device("cpu")
    assert attention.describe(cpu, torch.float32) == "sdpa"
    attention.set_fp8(True)
    try:
        assert attention.describe(cpu, torch.float32) == "sdpa, fp8 self-attention: cpu emulation"
    finally:
        attention.set_fp8(False)


def test_finish_dequantizes_and_adds_the_mean_in_one_bf16_pass() -> None:
    """The kernel's e4m3 output (scaled by 1/descale_v) back to bf16 with the values' mean added."""
    g = torch.Generator().manual_seed(2)
    o = torch.randn(2, 64, 3, 16, generator=g) * 0.02
    mean = torch.randn(2, 1, 3, 16, generator=g)
    o8, descale = attention_cudnn.quantize(o)
    want = o8.float() * descale + mean
    got = attention_cudnn.finish(o8, descale, mean)
    assert got.dtype == torch.bfloat16 and got.shape == o.shape
    assert relative_error(got.float(), want) < 0.01  # bf16 rounding of the sum, nothing more
    assert relative_error(attention_cudnn.finish(o8, descale, None).float(), o8.float() * descale) < 0.01
    bf16_out = o.to(torch.bfloat16)
    assert torch.equal(attention_cudnn.finish(bf16_out.clone(), None, None), bf16_out)
    assert relative_error(attention_cudnn.finish(bf16_out.clone(), None, mean).float(), o + mean) < 0.01


def test_the_fused_centring_and_quantizing_equal_the_eager_steps() -> None:
    """`attention_centred` compiles the steps around the kernel on a GPU; compiled here (inductor's
    CPU code), they give the eager arithmetic: the same scales, the same values to e4m3 rounding."""
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, 256, 2, 32, generator=g).to(torch.bfloat16)
    k = (torch.randn(1, 256, 2, 32, generator=g) + 4.0).to(torch.bfloat16)  # a shared component to centre away
    v = (torch.randn(1, 256, 2, 32, generator=g) - 2.0).to(torch.bfloat16)
    eager = attention_cudnn.centre_and_quantize(q, k, v)
    fused = attention_cudnn._fused(attention_cudnn.centre_and_quantize)(q, k, v)
    assert not attention_cudnn._fuse_failed, attention_cudnn._fuse_failed
    for got, want in zip(fused, eager, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
    for i in (3, 4, 5, 6):  # dq, dk, dv, v_mean
        torch.testing.assert_close(fused[i], eager[i], rtol=1e-5, atol=1e-6)
    for x8, d in ((0, 3), (1, 4), (2, 5)):  # a value a rounding tie apart at most
        assert relative_error(fused[x8].float() * fused[d], eager[x8].float() * eager[d]) < 1e-3
    centred_k = k.float() - k.float().mean(dim=1, keepdim=True)
    assert relative_error(fused[1].float() * fused[4], centred_k) < 0.05
    out8, descale = attention_cudnn.quantize(torch.randn(1, 256, 2, 32, generator=g) * 0.1)
    fused_finish = attention_cudnn._fused(attention_cudnn.finish)(out8, descale, fused[6])
    torch.testing.assert_close(fused_finish, attention_cudnn.finish(out8, descale, fused[6]), rtol=1e-2, atol=1e-2)

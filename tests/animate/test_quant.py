"""Quantized checkpoints: each format is recognised and round-trips to the expected dequantised weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from scail.animate.checkpoint import read_tensors
from scail.animate.fast import FP8_LINEARS, FP8Linear, _rowwise_fp8
from scail.animate.quant import (
    dequantize,
    detect_format,
    fp8_linears,
    row_scales,
    safetensors_metadata,
)
from scail.errors import CheckpointError

FP8 = torch.float8_e4m3fn


def weights(seed: int = 0) -> dict[str, torch.Tensor]:
    """A few wan-named tensors: two block linears, a norm, a modulation table, a conv."""
    g = torch.Generator().manual_seed(seed)
    return {
        "blocks.0.self_attn.q.weight": torch.randn(64, 32, generator=g) * 0.05,
        "blocks.0.self_attn.q.bias": torch.randn(64, generator=g),
        "blocks.0.ffn.0.weight": torch.randn(128, 64, generator=g) * 0.02,
        "blocks.0.ffn.0.bias": torch.randn(128, generator=g),
        "blocks.0.norm3.weight": torch.randn(64, generator=g),
        "blocks.0.modulation": torch.randn(1, 6, 64, generator=g),
        "patch_embedding.weight": torch.randn(64, 20, 1, 2, 2, generator=g),
    }


LINEARS = ("blocks.0.self_attn.q.weight", "blocks.0.ffn.0.weight")


def legacy_scaled_fp8(w: dict[str, torch.Tensor], prefix: str = "model.diffusion_model.") -> dict[str, torch.Tensor]:
    """ComfyUI's legacy scaled fp8 (kijai's *_fp8_e4m3fn_scaled_KJ): per-tensor scale_weight + marker."""
    out = {f"{prefix}{k}": v.to(torch.bfloat16) for k, v in w.items() if k not in LINEARS}
    for k in LINEARS:
        scale = w[k].abs().max() / 448.0
        out[f"{prefix}{k}"] = (w[k] / scale).to(FP8)
        out[f"{prefix}{k.removesuffix('.weight')}.scale_weight"] = scale.reshape(1)
        out[f"{prefix}{k.removesuffix('.weight')}.scale_input"] = torch.ones(1)
    out["scaled_fp8"] = torch.empty(0, dtype=FP8)
    return out


def test_legacy_fp8_scaled_round_trips(tmp_path: Path) -> None:
    w = weights()
    file = tmp_path / "Wan21-14B-SCAIL-preview_fp8_e4m3fn_scaled_KJ.safetensors"
    save_file(legacy_scaled_fp8(w), str(file))
    tensors = read_tensors(file)
    fmt = detect_format(tensors, safetensors_metadata(file))
    assert fmt.name == "fp8_e4m3fn_scaled"
    assert set(fmt.weights) == {f"model.diffusion_model.{k}" for k in LINEARS}
    assert "bfloat16" in fmt.describe() and "2 quantized weights" in fmt.describe()
    plain = dequantize(tensors, fmt, torch.float32)
    assert "scaled_fp8" not in plain and not any(k.endswith(("scale_weight", "scale_input")) for k in plain)
    for k in LINEARS:
        stored = tensors[f"model.diffusion_model.{k}"]
        scale = tensors[f"model.diffusion_model.{k.removesuffix('.weight')}.scale_weight"]
        got = plain[f"model.diffusion_model.{k}"]
        assert got.dtype == torch.float32 and torch.equal(got, stored.float() * scale)  # exact
        assert ((got - w[k]).norm() / w[k].norm()).item() < 0.05  # and close to the original
    assert torch.equal(plain["model.diffusion_model.blocks.0.norm3.weight"], w["blocks.0.norm3.weight"].bfloat16())


def comfy_quant(w: dict[str, torch.Tensor], fmt: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """ComfyUI's current format (QUANTIZATION.md): weight_scale/input_scale + comfy_quant JSON tensors."""
    out = {k: v.to(torch.bfloat16) for k, v in w.items() if k not in LINEARS}
    layers = {}
    for k in LINEARS:
        layer = k.removesuffix(".weight")
        if fmt == "float8_e4m3fn":
            scale = (w[k].abs().max() / 448.0).float()
            out[k] = (w[k] / scale).to(FP8)
            out[f"{layer}.weight_scale"] = scale  # 0-dim
            out[f"{layer}.input_scale"] = torch.tensor(1.0)
            config = {"format": fmt}
        else:  # int8_blockwise, 32x32 blocks
            n, kk = w[k].shape
            blocks = w[k].reshape(n // 32, 32, kk // 32, 32)
            scale = blocks.abs().amax(dim=(1, 3)) / 127.0  # (n/32, k/32)
            q = (blocks / scale[:, None, :, None]).round().clamp(-127, 127).to(torch.int8)
            out[k] = q.reshape(n, kk)
            out[f"{layer}.weight_scale"] = scale
            config = {"format": fmt, "group_size": 32}
        out[f"{layer}.comfy_quant"] = torch.tensor(list(json.dumps(config).encode()), dtype=torch.uint8)
        layers[layer] = config
    return out, {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})}


def test_comfy_quant_fp8_round_trips(tmp_path: Path) -> None:
    tensors, meta = comfy_quant(weights(), "float8_e4m3fn")
    file = tmp_path / "wan2.1_SCAIL_fp8_scaled.safetensors"
    save_file(tensors, str(file), metadata=meta)
    loaded = read_tensors(file)
    fmt = detect_format(loaded, safetensors_metadata(file))
    assert fmt.name == "comfy-quant float8_e4m3fn"
    plain = dequantize(loaded, fmt, torch.bfloat16)
    assert not any(k.endswith(("comfy_quant", "weight_scale", "input_scale")) for k in plain)
    k = "blocks.0.ffn.0.weight"
    assert torch.equal(plain[k], (loaded[k].float() * loaded["blocks.0.ffn.0.weight_scale"]).bfloat16())


def test_int8_blockwise_round_trips(tmp_path: Path) -> None:
    w = weights()
    tensors, meta = comfy_quant(w, "int8_blockwise")
    file = tmp_path / "int8.safetensors"
    save_file(tensors, str(file), metadata=meta)
    loaded = read_tensors(file)
    fmt = detect_format(loaded, safetensors_metadata(file))
    assert fmt.name == "int8_blockwise" and fmt.weights["blocks.0.ffn.0.weight"].group == 32
    plain = dequantize(loaded, fmt, torch.float32)
    k = "blocks.0.ffn.0.weight"
    q, s = loaded[k], loaded["blocks.0.ffn.0.weight_scale"]
    expected = (q.float().reshape(4, 32, 2, 32) * s[:, None, :, None]).reshape(128, 64)
    assert torch.equal(plain[k], expected)
    assert ((plain[k] - w[k]).norm() / w[k].norm()).item() < 0.02


def test_int8_per_row_round_trips() -> None:
    """LightX2V's int8 layout: int8 weight + one float32 scale per output row, (N, 1)."""
    w = weights()["blocks.0.ffn.0.weight"]
    scale = w.abs().amax(dim=1, keepdim=True) / 127.0
    tensors = {"blocks.0.ffn.0.weight": (w / scale).round().to(torch.int8), "blocks.0.ffn.0.weight_scale": scale}
    fmt = detect_format(tensors)
    assert fmt.name == "int8 (per-row scale)"
    got = dequantize(tensors, fmt, torch.float32)["blocks.0.ffn.0.weight"]
    assert torch.equal(got, tensors["blocks.0.ffn.0.weight"].float() * scale)


def test_plain_and_unscaled_fp8_are_named() -> None:
    w = weights()
    assert detect_format({k: v.bfloat16() for k, v in w.items()}).name == "bfloat16"
    assert detect_format(w).name == "float32"
    fp8 = {k: (v.to(FP8) if k in LINEARS else v.bfloat16()) for k, v in w.items()}
    fmt = detect_format(fp8)
    assert fmt.name == "fp8_e4m3fn (unscaled)"
    plain = dequantize(fp8, fmt, torch.bfloat16)
    assert torch.equal(plain[LINEARS[0]], fp8[LINEARS[0]].float().bfloat16())


def test_bad_scales_are_errors() -> None:
    with pytest.raises(CheckpointError, match=r"blocks\.0\.q\.scale_weight scales blocks\.0\.q\.weight, which is not in"):
        detect_format({"blocks.0.q.scale_weight": torch.ones(1)})
    tensors = {"a.weight": torch.zeros(4, 4).to(FP8), "a.weight_scale": torch.ones(3)}
    fmt = detect_format(tensors)
    with pytest.raises(CheckpointError, match=r"a\.weight has a scale of shape \[3\]"):
        dequantize(tensors, fmt, torch.float32)


def test_fp8_weights_run_as_stored_in_fp8_linear() -> None:
    """The blocks' fp8 linears are taken as stored: FP8Linear.from_fp8 computes x_fp8 @ (w_fp8 * s)."""
    w = weights()
    tensors = {k.removeprefix("model.diffusion_model."): v for k, v in legacy_scaled_fp8(w).items()}
    fmt = detect_format(tensors)
    kept = fp8_linears(fmt, FP8_LINEARS)
    assert set(kept) == set(LINEARS)
    k = "blocks.0.ffn.0.weight"
    rows = row_scales(kept[k])
    assert rows is not None and rows.shape == (128,)
    layer = FP8Linear.from_fp8(kept[k].data, rows, tensors["blocks.0.ffn.0.bias"].float())
    assert layer.weight_fp8.dtype == FP8 and torch.equal(layer.weight_fp8.view(torch.uint8), tensors[k].view(torch.uint8))
    x = torch.randn(3, 5, 64, generator=torch.Generator().manual_seed(1))
    xq, xs = _rowwise_fp8(x.reshape(-1, 64))
    expected = (xq.float() * xs) @ (tensors[k].float() * tensors["blocks.0.ffn.0.scale_weight"]).t()
    expected = expected + tensors["blocks.0.ffn.0.bias"].float()
    torch.testing.assert_close(layer(x), expected.reshape(3, 5, 128), rtol=1e-6, atol=1e-6)

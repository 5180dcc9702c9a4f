"""Quantized DiT checkpoints as the community ships them, loaded directly (no conversion step).

Formats recognised (`detect_format`), all safetensors in wan names (see `dit_loader.py`):

* `bf16` / `fp16` / `fp32`: plain weights.
* `fp8_e4m3fn_scaled` (ComfyUI's legacy "scaled fp8", kijai's `*_fp8_e4m3fn_scaled_KJ.safetensors`):
  linear weights stored as float8 e4m3fn with a float32 `<layer>.scale_weight` (one value per tensor,
  or one per output row), an optional `<layer>.scale_input`, and an empty `scaled_fp8` marker tensor.
  W = weight * scale_weight.
* `comfy-quant` (ComfyUI's current format, `Comfy-Org/*` `*_fp8_scaled.safetensors`, QUANTIZATION.md
  there): `<layer>.weight_scale` (+ `input_scale`, and a `<layer>.comfy_quant` JSON tensor or the
  safetensors metadata `_quantization_metadata`) with the weight in float8 e4m3fn (per-tensor scale)
  or int8 (`int8_blockwise`: one scale per `group_size` x `group_size` block, default 128; or one per
  output row, the layout LightX2V's int8 checkpoints use).
* `fp8_e4m3fn` (unscaled): float8 weights cast to float8 without a scale.

`dequantize` turns any of them into plain tensors of the compute dtype (per tensor, on the target
device, so a 14B file never exists in float32). `fp8_linears` keeps the float8 weights of the blocks'
linear layers as they are in the file, for fast mode's `FP8Linear` (one scale per output row: a
per-tensor scale is repeated), so a fp8-scaled checkpoint runs on FP8 matmuls without being
re-quantized.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scail.errors import CheckpointError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
_SIDE_SUFFIXES = (".scale_input", ".input_scale", ".comfy_quant", ".weight_scale_2", ".pre_quant_scale")
MARKERS = ("scaled_fp8",)
"""Format marker tensors (no model parameter), with or without a prefix."""


def is_marker(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in MARKERS
DEFAULT_GROUP = 128


@dataclass(frozen=True)
class QuantizedWeight:
    """One quantized weight of a checkpoint: storage tensor, its scale and how they combine."""

    name: str  # the weight's state-dict key, e.g. blocks.0.self_attn.q.weight
    data: torch.Tensor  # float8_e4m3fn or int8, (N, K[, ...])
    scale: torch.Tensor  # float32: scalar, (N,)/(N, 1) per row, or (N/g, K/g) blockwise
    group: int | None = None  # block edge for a blockwise scale


@dataclass
class CheckpointFormat:
    """What `detect_format` found: the format's name and the quantized weights by key."""

    name: str
    weights: dict[str, QuantizedWeight] = field(default_factory=dict)
    side_keys: list[str] = field(default_factory=list)
    """Scale, input-scale, marker and metadata keys (not model parameters)."""
    plain_dtype: str = ""

    @property
    def quantized(self) -> bool:
        return bool(self.weights)

    def describe(self) -> str:
        if not self.weights:
            return self.name
        kinds = sorted({str(w.data.dtype).removeprefix("torch.") for w in self.weights.values()})
        return f"{self.name} ({len(self.weights)} quantized weights, {'/'.join(kinds)}; other tensors {self.plain_dtype})"


def safetensors_metadata(file: Path) -> dict[str, str]:
    """The `__metadata__` strings of a safetensors file ({} for other files or none)."""
    if file.suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except Exception:  # unreadable files are reported by the tensor reader with its own message
        return {}


def _layer_configs(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Per-layer quantization configs from `_quantization_metadata` and `<layer>.comfy_quant` tensors."""
    configs: dict[str, dict[str, Any]] = {}
    raw = metadata.get("_quantization_metadata")
    if raw:
        try:
            layers = json.loads(raw).get("layers", {})
            for name, config in layers.items():
                if isinstance(config, dict):
                    for prefix in ("model.diffusion_model.", "diffusion_model.", ""):
                        if str(name).startswith(prefix):
                            configs[str(name)[len(prefix):]] = dict(config)
                            configs[str(name)] = dict(config)
                            break
        except (ValueError, AttributeError):
            log.warning("unreadable _quantization_metadata in the checkpoint; using the tensors' dtypes")
    for key, tensor in tensors.items():
        if key.endswith(".comfy_quant") and tensor.device.type != "meta":
            try:
                configs[key.removesuffix(".comfy_quant")] = json.loads(bytes(tensor.flatten().tolist()).decode("utf-8"))
            except (ValueError, UnicodeDecodeError, TypeError):
                log.warning("unreadable %s; using the tensor's dtype", key)
    return configs


def detect_format(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> CheckpointFormat:
    """Recognise the checkpoint format of `tensors` (any naming; see the module docstring)."""
    import torch

    metadata = metadata or {}
    configs = _layer_configs(tensors, metadata)
    side = [k for k in tensors if k.endswith(_SCALE_SUFFIXES + _SIDE_SUFFIXES) or is_marker(k)]
    weights: dict[str, QuantizedWeight] = {}
    legacy = False
    for key in side:
        for suffix in _SCALE_SUFFIXES:
            if not key.endswith(suffix):
                continue
            layer = key[: -len(suffix)]
            wkey = f"{layer}.weight"
            if wkey not in tensors:
                raise CheckpointError(f"checkpoint: {key} scales {wkey}, which is not in the file")
            data = tensors[wkey]
            legacy = legacy or suffix == ".scale_weight"
            config = configs.get(layer, {})
            group = None
            scale = tensors[key]
            per_row = scale.ndim == 2 and tuple(scale.shape) == (data.shape[0], 1)
            if data.dtype == torch.int8 and scale.ndim == 2 and (
                    "blockwise" in str(config.get("format", "")) or not per_row):
                group = int(config.get("group_size", DEFAULT_GROUP))
            weights[wkey] = QuantizedWeight(wkey, data, scale, group)
    fp8_plain = [k for k, v in tensors.items() if v.dtype in (torch.float8_e4m3fn, torch.float8_e5m2)
                 and k not in weights and not is_marker(k)]
    plain = [v.dtype for k, v in tensors.items() if k not in weights and k not in side and k not in fp8_plain]
    plain_dtype = max({str(d).removeprefix("torch.") for d in plain}, key=lambda d: sum(
        1 for x in plain if str(x).removeprefix("torch.") == d), default="")
    if weights:
        kinds = {w.data.dtype for w in weights.values()}
        if kinds - {torch.float8_e4m3fn, torch.int8}:
            bad = sorted(str(k).removeprefix("torch.") for k in kinds - {torch.float8_e4m3fn, torch.int8})
            raise CheckpointError(f"checkpoint: scaled weights stored as {', '.join(bad)} are not supported "
                                  "(float8_e4m3fn and int8 are)")
        if torch.int8 in kinds:
            blockwise = any(w.group for w in weights.values())
            name = "int8_blockwise" if blockwise else "int8 (per-row scale)"
        else:
            name = "fp8_e4m3fn_scaled" if legacy else "comfy-quant float8_e4m3fn"
        fmt = CheckpointFormat(name, weights, side, plain_dtype)
    elif fp8_plain:
        for k in fp8_plain:
            weights[k] = QuantizedWeight(k, tensors[k], torch.ones(()), None)
        fmt = CheckpointFormat("fp8_e4m3fn (unscaled)", weights, side, plain_dtype)
    else:
        fmt = CheckpointFormat(plain_dtype or "empty", {}, side, plain_dtype)
    return fmt


def dequantize_weight(w: QuantizedWeight, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """data * scale in float32 on `device`, cast to `dtype` (one tensor at a time)."""
    import torch

    data = w.data.to(device)
    scale = w.scale.to(device=device, dtype=torch.float32)
    x = data.float()
    if w.group is not None:
        g = w.group
        n, k = x.shape[0], x.shape[1]
        rows = scale.repeat_interleave(g, dim=0)[:n]
        full = rows.repeat_interleave(g, dim=1)[:, :k]
        if full.shape != (n, k):
            raise CheckpointError(f"checkpoint: {w.name} scale {list(w.scale.shape)} does not tile {list(x.shape)} "
                                  f"in {g}x{g} blocks")
        x = x * full.reshape(n, k, *([1] * (x.ndim - 2)))
    elif scale.numel() == 1:
        x = x * scale.reshape(())
    elif scale.numel() == x.shape[0]:
        x = x * scale.reshape(-1, *([1] * (x.ndim - 1)))
    else:
        raise CheckpointError(f"checkpoint: {w.name} has a scale of shape {list(w.scale.shape)} for a weight of "
                              f"shape {list(x.shape)} (expected one value, one per row, or blockwise)")
    return x.to(dtype)


def dequantize(
    tensors: Mapping[str, torch.Tensor],
    fmt: CheckpointFormat,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    keep: Mapping[str, object] | None = None,
) -> dict[str, torch.Tensor]:
    """The plain state dict: quantized weights dequantized to `dtype` on `device`, side keys dropped.

    Weights named in `keep` are left out (the caller takes them as float8, `fp8_linears`).
    """
    out: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        if key in fmt.side_keys or (keep is not None and key in keep):
            continue
        w = fmt.weights.get(key)
        out[key] = dequantize_weight(w, dtype, device) if w is not None else tensor
    return out


def row_scales(w: QuantizedWeight) -> torch.Tensor | None:
    """The weight's scale as one float32 per output row, or None when it is blockwise or not float8."""
    import torch

    if w.data.dtype != torch.float8_e4m3fn or w.group is not None or w.data.ndim != 2:
        return None
    scale = w.scale.float()
    if scale.numel() == 1:
        return scale.reshape(1).expand(w.data.shape[0]).contiguous()
    if scale.numel() == w.data.shape[0]:
        return scale.reshape(-1).contiguous()
    return None


def fp8_linears(fmt: CheckpointFormat, names: tuple[str, ...]) -> dict[str, QuantizedWeight]:
    """The float8 weights of the blocks' linear layers named in `names` (fast mode's FP8 linears)
    that can be used as stored (per-tensor or per-row scale)."""
    out: dict[str, QuantizedWeight] = {}
    for key, w in fmt.weights.items():
        parts = key.split(".")
        if len(parts) >= 4 and parts[0] == "blocks" and ".".join(parts[2:-1]) in names and row_scales(w) is not None:
            out[key] = w
    return out

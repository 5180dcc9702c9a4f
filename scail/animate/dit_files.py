"""The DiT from the files users have: any supported checkpoint format plus LoRAs, in one load.

`load_dit_with(file, ...)` is what the model build calls. It reads the checkpoint (memory-mapped),
recognises its format (`quant.detect_format`: plain, ComfyUI/kijai fp8_e4m3fn_scaled, comfy-quant fp8
or int8), brings it to wan names, maps the LoRAs onto it (`lora.py`) and then either

* merges them (default): each changed weight is dequantised if needed, updated in float32 and cast
  to its dtype, one tensor at a time on the target device; or
* leaves them for `lora.attach_loras` after the model is built (`lora_merge: false`).

With `fp8_linears=True` (fast mode on a GPU with FP8 matmuls) the float8 weights of the blocks'
linear layers are used as the file stores them, through `FP8Linear.from_fp8`, instead of being
dequantised and quantized again (only when no LoRA is merged into them). Everything else is
dequantised to the compute dtype.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from scail.animate.dit import DiT, DiTConfig
    from scail.animate.lora import LoraFile, LoraSpec
    from scail.animate.quant import CheckpointFormat

log = logging.getLogger(__name__)


@dataclass
class LoadedDiT:
    """The model and what the load found."""

    dit: DiT
    format: CheckpointFormat
    loras: list[tuple[LoraFile, float]] = field(default_factory=list)
    merged: bool = True
    """False: the LoRAs still have to be attached (`lora.attach_loras`) after fast mode swaps the linears."""
    fp8_linears: int = 0
    """How many block linears run on the file's own float8 weights."""

    def describe(self) -> str:
        parts = [self.format.describe()]
        if self.loras:
            mode = "merged" if self.merged else "at run time"
            parts.append(f"LoRAs {mode}: " + ", ".join(f"{lf.path.name}@{s:g}" for lf, s in self.loras))
        if self.fp8_linears:
            parts.append(f"{self.fp8_linears} linears on the file's fp8 weights")
        return "; ".join(parts)


def load_dit_with(
    path: str | Path,
    *,
    num_heads: int | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    loras: Sequence[LoraSpec] = (),
    lora_merge: bool = True,
    fp8_linears: bool = False,
) -> LoadedDiT:
    """Load the SCAIL DiT at `path` (folder or file, any supported format) with `loras` applied.

    Args:
        path: as `dit_loader.load_dit`.
        num_heads, dtype, device: as `dit_loader.load_dit`.
        loras: LoRA files and strengths, applied in order.
        lora_merge: merge into the weights (True) or leave for `lora.attach_loras` (False).
        fp8_linears: keep the file's float8 block linears as `FP8Linear`s (fast mode on FP8 hardware).
    """
    from scail.animate.checkpoint import read_tensors
    from scail.animate.dit_loader import resolve_dit_file
    from scail.animate.quant import safetensors_metadata

    file = resolve_dit_file(Path(path))
    return dit_with(read_tensors(file), safetensors_metadata(file), source=str(file), num_heads=num_heads,
                    dtype=dtype, device=device, loras=loras, lora_merge=lora_merge, fp8_linears=fp8_linears)


def dit_with(
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str] | None = None,
    *,
    source: str = "state dict",
    num_heads: int | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    loras: Sequence[LoraSpec] = (),
    lora_merge: bool = True,
    fp8_linears: bool = False,
) -> LoadedDiT:
    """`load_dit_with` on tensors already read (tests, benchmarks); `source` names them in errors."""
    import torch

    from scail.animate.dit import is_fp32_param
    from scail.animate.dit_loader import infer_config
    from scail.animate.fast import FP8_LINEARS, FP8Linear
    from scail.animate.lora import load_loras, merge_loras
    from scail.animate.quant import dequantize, row_scales
    from scail.animate.quant import fp8_linears as find_fp8_linears

    compute = torch.float32 if dtype is None else dtype

    def dtype_of(key: str) -> torch.dtype:
        return torch.float32 if is_fp32_param(key) else compute

    wan, fmt, params = _wan_params(tensors, metadata, source)
    if fmt.quantized:
        log.info("DiT checkpoint %s: %s", source, fmt.describe())
    config = infer_config({k: tuple(v.shape) for k, v in params.items()}, num_heads, source)
    model = _checked_meta_dit(config, params, source)
    shapes = {k: tuple(v.shape) for k, v in params.items()}
    mapped = load_loras(loras, shapes)
    merge = lora_merge and bool(mapped)
    touched = {d.target for lf, s in mapped for d in lf.deltas if s != 0.0} if merge else set()
    keep = {k: w for k, w in find_fp8_linears(fmt, FP8_LINEARS).items() if k not in touched} if fp8_linears else {}
    plain = dequantize(wan, fmt, compute, device, keep=keep)
    if merge:
        plain.update(merge_loras(plain, mapped, dtype_of, device))
    for key, w in keep.items():  # the file's float8 weights as FP8Linear, not quantized again
        module_name = key.removesuffix(".weight")
        parent_name, _, child = module_name.rpartition(".")
        bias = plain.pop(f"{module_name}.bias", None)
        scales = row_scales(w)
        assert scales is not None
        layer = FP8Linear.from_fp8(w.data.to(device), scales.to(device),
                                   None if bias is None else bias.to(device=device, dtype=compute))
        setattr(model.get_submodule(parent_name), child, layer)
    state = {k: v.to(device=device, dtype=dtype_of(k)) for k, v in plain.items()}
    del plain, wan
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    replaced = tuple(k.removesuffix("weight") for k in keep)  # their tensors are set already
    left = [k for k in missing if not k.startswith(replaced)] if replaced else list(missing)
    if left or unexpected:  # cannot happen after check_state_dict; a guard against a silent partial load
        raise RuntimeError(f"{source}: DiT load left {left[:3]} unset and {unexpected[:3]} unused")
    model.eval().requires_grad_(False)
    loaded = LoadedDiT(model, fmt, list(mapped), merged=merge or not mapped, fp8_linears=len(keep))
    log.info("loaded DiT from %s: %s; %s", source, config, loaded.describe())
    return loaded


def describe_dit_file(path: Path, config: object | None = None) -> str:
    """`scail weights verify`'s DiT row: the file's format and whether its keys and shapes make a
    complete SCAIL DiT (of `config`, a `DiTConfig`, default inferred), read memory-mapped.
    Raises CheckpointError naming the problem."""

    from scail.animate.checkpoint import read_tensors
    from scail.animate.dit import DiTConfig
    from scail.animate.dit_loader import infer_config
    from scail.animate.quant import safetensors_metadata

    tensors = read_tensors(path)
    _, fmt, params = _wan_params(tensors, safetensors_metadata(path), str(path))
    cfg = config if isinstance(config, DiTConfig) else infer_config(
        {k: tuple(v.shape) for k, v in params.items()}, None, str(path))
    _checked_meta_dit(cfg, params, str(path))
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    return (f"format {fmt.describe()}; {len(tensors)} tensors, {nbytes / 1e9:.2f} GB; keys and shapes match the "
            f"DiT (dim {cfg.dim}, {cfg.num_layers} layers)")


def _wan_params(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None, source: str
) -> tuple[dict[str, torch.Tensor], CheckpointFormat, dict[str, torch.Tensor]]:
    """A checkpoint's tensors under Wan's names (format markers dropped), its format, and the
    parameters alone (a quantized format's side tensors, e.g. scales, left out; they keep their shapes)."""
    from scail.animate.dit_loader import to_wan_names
    from scail.animate.quant import detect_format, is_marker

    wan = to_wan_names({k: v for k, v in tensors.items() if not is_marker(k)}, source)
    fmt = detect_format(wan, metadata)
    return wan, fmt, {k: v for k, v in wan.items() if k not in fmt.side_keys}


def _checked_meta_dit(config: DiTConfig, params: dict[str, torch.Tensor], source: str) -> DiT:
    """The DiT of `config` on the meta device (SCAIL-2's when it has the mask conv), after checking
    that `params` are exactly its keys and shapes (CheckpointError naming `source` otherwise)."""
    import torch

    from scail.animate.checkpoint import check_state_dict
    from scail.animate.dit2 import build_dit

    with torch.device("meta"):
        model = build_dit(config)
    check_state_dict(model, params, source, "a complete SCAIL DiT checkpoint")
    return model

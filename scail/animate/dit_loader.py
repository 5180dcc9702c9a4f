"""The SCAIL DiT's checkpoints: the key maps between the released SAT names and the wan-branch names,
the config read off the tensor shapes, and `load_dit`.

Supported files (research/scail-model.md §5, research/scail-wan-branch.md §5-6):
  * the released SAT checkpoint: the folder `SCAIL-Preview/model` (its `latest` file names the
    iteration folder holding `mp_rank_00_model_states.pt`), the `SCAIL-Preview` folder above it, or
    the `.pt` file itself; `{"module": {"model.diffusion_model.<SAT key>": tensor}}`, with fused
    `query_key_value` / `key_value` projections;
  * safetensors (or `.pt`/`.pth`) in wan-branch names: the output of the official `convert.py`
    (`Wan2.1-14B-SCAIL.safetensors`) and the ComfyUI / WanVideoWrapper conversions, which use the same
    names, optionally under a `model.diffusion_model.` or `diffusion_model.` prefix.
Diffusers (`WanTransformer3DModel`) naming has no SCAIL pose branch and is not supported.

Reading, checking and assigning the tensors is `checkpoint.py`'s job; the DiT is built on the meta
device and the (memory-mapped) tensors are assigned, so the weights are never held twice.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from scail.animate.checkpoint import assign_weights, few, read_tensors
from scail.errors import CheckpointError

if TYPE_CHECKING:
    import torch

    from scail.animate.dit import DiT, DiTConfig

log = logging.getLogger(__name__)

SAT_PREFIX = "model.diffusion_model."
SAT_FILE = "mp_rank_00_model_states.pt"
SAT_FILES = (SAT_FILE, "fsdp2_rank_0000_checkpoint.pt")
"""SAT checkpoint file names: SCAIL-Preview's (DeepSpeed) and SCAIL-2's (FSDP2), both `{"module": ...}`."""
# Wan2GP's names for the pose and mask patch embeddings (research/scail2-model.md §5)
_WAN2GP_NAMES = {"pose_patch_embedding.": "patch_embedding_pose.", "mask_patch_embedding.": "patch_embedding_mask."}

# SAT name (after SAT_PREFIX) -> wan names; several wan names mean the SAT tensor is their
# concatenation along dim 0, in that order (official convert.py: chunk(3) q,k,v / chunk(2) k,v).
_SAT_GLOBAL: dict[str, tuple[str, ...]] = {
    "mixins.patch_embed.proj.{p}": ("patch_embedding.{p}",),
    "mixins.patch_embed.proj_pose.{p}": ("patch_embedding_pose.{p}",),
    "mixins.patch_embed.proj_mask.{p}": ("patch_embedding_mask.{p}",),  # SCAIL-2's mask stream
    "time_embed.0.{p}": ("time_embedding.0.{p}",),
    "time_embed.2.{p}": ("time_embedding.2.{p}",),
    "adaln_projection.1.{p}": ("time_projection.1.{p}",),
    "text_embedding.0.{p}": ("text_embedding.0.{p}",),
    "text_embedding.2.{p}": ("text_embedding.2.{p}",),
    "clip_proj.proj.0.{p}": ("img_emb.proj.0.{p}",),
    "clip_proj.proj.1.{p}": ("img_emb.proj.1.{p}",),
    "clip_proj.proj.3.{p}": ("img_emb.proj.3.{p}",),
    "clip_proj.proj.4.{p}": ("img_emb.proj.4.{p}",),
    "mixins.final_layer.linear.{p}": ("head.head.{p}",),
}
_SAT_GLOBAL_PARAMS: dict[str, str] = {"mixins.final_layer.adaLN_modulation": "head.modulation"}
_SAT_LAYER: dict[str, tuple[str, ...]] = {
    "transformer.layers.{i}.attention.query_key_value.{p}": (
        "blocks.{i}.self_attn.q.{p}",
        "blocks.{i}.self_attn.k.{p}",
        "blocks.{i}.self_attn.v.{p}",
    ),
    "transformer.layers.{i}.attention.dense.{p}": ("blocks.{i}.self_attn.o.{p}",),
    "transformer.layers.{i}.cross_attention.query.{p}": ("blocks.{i}.cross_attn.q.{p}",),
    "transformer.layers.{i}.cross_attention.key_value.{p}": (
        "blocks.{i}.cross_attn.k.{p}",
        "blocks.{i}.cross_attn.v.{p}",
    ),
    "transformer.layers.{i}.cross_attention.dense.{p}": ("blocks.{i}.cross_attn.o.{p}",),
    "transformer.layers.{i}.post_cross_attention_layernorm.{p}": ("blocks.{i}.norm3.{p}",),
    "transformer.layers.{i}.mlp.dense_h_to_4h.{p}": ("blocks.{i}.ffn.0.{p}",),
    "transformer.layers.{i}.mlp.dense_4h_to_h.{p}": ("blocks.{i}.ffn.2.{p}",),
    "mixins.adaln_layer.clip_feature_key_value_list.{i}.{p}": (
        "blocks.{i}.cross_attn.k_img.{p}",
        "blocks.{i}.cross_attn.v_img.{p}",
    ),
    "mixins.adaln_layer.query_layernorm_list.{i}.{p}": ("blocks.{i}.self_attn.norm_q.{p}",),
    "mixins.adaln_layer.key_layernorm_list.{i}.{p}": ("blocks.{i}.self_attn.norm_k.{p}",),
    "mixins.adaln_layer.cross_query_layernorm_list.{i}.{p}": ("blocks.{i}.cross_attn.norm_q.{p}",),
    "mixins.adaln_layer.cross_key_layernorm_list.{i}.{p}": ("blocks.{i}.cross_attn.norm_k.{p}",),
    "mixins.adaln_layer.clip_feature_key_layernorm_list.{i}.{p}": ("blocks.{i}.cross_attn.norm_k_img.{p}",),
}
_SAT_LAYER_PARAMS: dict[str, str] = {"mixins.adaln_layer.adaLN_modulations.{i}": "blocks.{i}.modulation"}


def _pattern(template: str) -> re.Pattern[str]:
    regex = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)")
    return re.compile(regex + "$")


# (compiled SAT pattern, wan templates) for every SAT key form
_SAT_RULES: list[tuple[re.Pattern[str], tuple[str, ...]]] = [
    *((_pattern(k), v) for k, v in _SAT_GLOBAL.items()),
    *((_pattern(k), (v,)) for k, v in _SAT_GLOBAL_PARAMS.items()),
    *((_pattern(k), v) for k, v in _SAT_LAYER.items()),
    *((_pattern(k), (v,)) for k, v in _SAT_LAYER_PARAMS.items()),
]
# the inverse, for wan -> SAT: wan pattern -> (SAT template, index in the fused group, group size)
_WAN_RULES: list[tuple[re.Pattern[str], str, int, int]] = [
    (_pattern(wan), sat, j, len(wans))
    for sat, wans in [
        *_SAT_GLOBAL.items(),
        *((k, (v,)) for k, v in _SAT_GLOBAL_PARAMS.items()),
        *_SAT_LAYER.items(),
        *((k, (v,)) for k, v in _SAT_LAYER_PARAMS.items()),
    ]
    for j, wan in enumerate(wans)
]


def sat_to_wan(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Rename a SAT DiT state dict (keys with or without `model.diffusion_model.`) to wan names.

    Fused projections are split along dim 0 into views (no copy). Unknown keys raise CheckpointError.
    """
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, tensor in state.items():
        name = key.removeprefix(SAT_PREFIX)
        for pattern, templates in _SAT_RULES:
            match = pattern.match(name)
            if match is None:
                continue
            fields = {k: v for k, v in match.groupdict().items() if v is not None}
            if len(templates) == 1:
                out[templates[0].format(**fields)] = tensor
            else:
                if tensor.shape[0] % len(templates):
                    raise CheckpointError(
                        f"{source}: {key} has {tensor.shape[0]} rows, not divisible into {len(templates)} parts"
                    )
                for template, part in zip(templates, tensor.chunk(len(templates), dim=0), strict=True):
                    out[template.format(**fields)] = part
            break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"{source}: {len(unknown)} unexpected keys (e.g. {few(unknown)}); is this a SCAIL DiT checkpoint?"
        )
    return out


def wan_to_sat(state: Mapping[str, torch.Tensor], prefix: str = SAT_PREFIX) -> dict[str, torch.Tensor]:
    """Rename a wan-named DiT state dict to the SAT layout (fusing q,k,v / k,v), keys under `prefix`."""
    import torch

    groups: dict[str, dict[int, torch.Tensor]] = {}
    sizes: dict[str, int] = {}
    for key, tensor in state.items():
        for pattern, template, index, size in _WAN_RULES:
            match = pattern.match(key)
            if match is not None:
                fields = {k: v for k, v in match.groupdict().items() if v is not None}
                sat = prefix + template.format(**fields)
                groups.setdefault(sat, {})[index] = tensor
                sizes[sat] = size
                break
        else:
            raise KeyError(f"no SAT name for wan key {key!r}")
    out: dict[str, torch.Tensor] = {}
    for sat, parts in groups.items():
        if len(parts) != sizes[sat]:
            raise KeyError(f"{sat}: only {len(parts)} of {sizes[sat]} fused parts present")
        out[sat] = parts[0] if sizes[sat] == 1 else torch.cat([parts[j] for j in range(sizes[sat])], dim=0)
    return out


# --------------------------------------------------------------------------------------------------
# The checkpoint file of a folder
# --------------------------------------------------------------------------------------------------


def resolve_dit_file(path: Path) -> Path:
    """The weight file for `path`: a file as is; a SAT folder via its `latest` file."""
    if path.is_file():
        return path
    if not path.exists():
        raise CheckpointError(
            f"{path}: no such file or folder; pass the SCAIL-Preview/model folder or a .safetensors file"
        )
    for folder in (path, path / "model"):
        latest = folder / "latest"
        if latest.is_file():
            iteration = latest.read_text(encoding="utf-8", errors="replace").strip()
            candidates = [folder / iteration / name for name in SAT_FILES]
            hit = next((c for c in candidates if c.is_file()), None)
            if hit is None:
                raise CheckpointError(
                    f"{latest} names iteration {iteration!r} but {candidates[0]} does not exist"
                )
            return hit
        for name in SAT_FILES:
            if (folder / name).is_file():
                return folder / name
    found = sorted(path.glob("*.safetensors"))
    if len(found) == 1:
        return found[0]
    raise CheckpointError(
        f"{path}: no DiT checkpoint found (expected 'latest' + <n>/{SAT_FILE}, or one .safetensors file)"
    )


# --------------------------------------------------------------------------------------------------
# Naming detection and config inference
# --------------------------------------------------------------------------------------------------


def to_wan_names(tensors: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Bring a checkpoint in any supported naming to wan names (see module docstring)."""
    names = list(tensors)
    if any(k.removeprefix(SAT_PREFIX).startswith(("transformer.layers.", "mixins.")) for k in names):
        return sat_to_wan(tensors, source)
    if any(k.startswith("condition_embedder.") for k in names):
        raise CheckpointError(
            f"{source}: diffusers (WanTransformer3DModel) naming is not supported; "
            "use the official SAT checkpoint or a wan-named .safetensors (convert.py output)"
        )
    out = dict(tensors)
    for prefix in (SAT_PREFIX, "diffusion_model.", "model."):
        if names and all(k.startswith(prefix) for k in names):
            out = {k.removeprefix(prefix): v for k, v in tensors.items()}
            break
    return {_wan2gp_to_wan(k): v for k, v in out.items()}


def _wan2gp_to_wan(key: str) -> str:
    for theirs, ours in _WAN2GP_NAMES.items():
        if key.startswith(theirs):
            return ours + key.removeprefix(theirs)
    return key


def infer_config(shapes: Mapping[str, tuple[int, ...]], num_heads: int | None, source: str) -> DiTConfig:
    """DiTConfig from wan-named tensor shapes; `num_heads` defaults to dim // 128. A checkpoint with
    `patch_embedding_mask` is SCAIL-2 (its `SCAIL2Config`), as ComfyUI detects it."""
    from scail.animate.dit import DiTConfig
    from scail.animate.dit2 import SCAIL2Config

    needed = [
        "patch_embedding.weight",
        "head.head.weight",
        "blocks.0.ffn.0.weight",
        "time_embedding.0.weight",
        "text_embedding.0.weight",
        "img_emb.proj.1.weight",
    ]
    missing = [k for k in needed if k not in shapes]
    if missing:
        raise CheckpointError(
            f"{source}: {len(missing)} missing keys (e.g. {few(missing)}); is this a SCAIL DiT checkpoint?"
        )
    dim, in_channels, *patch = shapes["patch_embedding.weight"]
    num_layers = sum(1 for k in shapes if re.fullmatch(r"blocks\.\d+\.modulation", k))
    latent_channels = shapes["head.head.weight"][0] // max(1, _prod(patch))
    heads = num_heads if num_heads is not None else dim // 128
    if heads <= 0 or dim % heads:
        raise CheckpointError(
            f"{source}: hidden size {dim} cannot be split into {heads} heads; pass num_heads"
        )
    mask = shapes.get("patch_embedding_mask.weight")
    try:
        config = DiTConfig(
            dim=dim,
            num_heads=heads,
            num_layers=num_layers,
            ffn_dim=shapes["blocks.0.ffn.0.weight"][0],
            freq_dim=shapes["time_embedding.0.weight"][1],
            text_dim=shapes["text_embedding.0.weight"][1],
            clip_dim=shapes["img_emb.proj.1.weight"][1],
            latent_channels=latent_channels,
            mask_channels=in_channels - latent_channels,
            patch_size=(patch[0], patch[1], patch[2]),
        )
        return SCAIL2Config.of(config, mask[1]) if mask is not None else config
    except (ValueError, IndexError) as exc:
        raise CheckpointError(f"{source}: unsupported DiT shapes ({exc})") from exc


def _prod(values: list[int]) -> int:
    out = 1
    for v in values:
        out *= v
    return out


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def load_dit(
    path: str | Path,
    num_heads: int | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> DiT:
    """Load the SCAIL DiT from a SAT folder or `.pt` file, or a wan-named `.safetensors` file.

    Args:
        path: `SCAIL-Preview/model` (or `SCAIL-Preview`), a `mp_rank_00_model_states.pt`, or a
            `.safetensors` / `.pt` / `.pth` file in wan-branch names.
        num_heads: attention heads; default dim // 128 (40 for the 14B model).
        dtype: parameter dtype (default float32); the time embedding, modulation tables and head
            stay float32 whatever this is (see `scail.animate.dit.is_fp32_param`).
        device: where the parameters go; each tensor is moved once, straight from the mapped file.

    Returns:
        The model in eval mode with gradients off, config inferred from the tensor shapes.
    """
    file = resolve_dit_file(Path(path))
    return dit_from_state_dict(read_tensors(file), num_heads, dtype, device, source=str(file))


def dit_from_state_dict(
    tensors: Mapping[str, torch.Tensor],
    num_heads: int | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    source: str = "state dict",
) -> DiT:
    """Build the DiT on the meta device and assign `tensors` (SAT or wan names), checked strictly.

    Arguments as `load_dit`; `source` names the origin in error messages.
    """
    import torch

    from scail.animate.dit import DiT, is_fp32_param
    from scail.animate.dit2 import SCAIL2Config, SCAIL2DiT

    compute = torch.float32 if dtype is None else dtype
    wan = to_wan_names(tensors, source)
    config = infer_config({k: tuple(v.shape) for k, v in wan.items()}, num_heads, source)
    with torch.device("meta"):
        model = SCAIL2DiT(config) if isinstance(config, SCAIL2Config) else DiT(config)
    model = assign_weights(
        model, wan, lambda key: torch.float32 if is_fp32_param(key) else compute, device, source,
        "a complete SCAIL DiT checkpoint",
    )
    log.info("loaded DiT from %s: %s", source, config)
    return model

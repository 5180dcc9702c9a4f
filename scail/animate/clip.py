"""The CLIP ViT-H/14 image tower that gives SCAIL its reference-image features.

This is the visual half of Wan2.1's `open-clip-xlm-roberta-large-vit-huge-14` (research/
scail-model.md §1.5, §3): patch embedding (no bias, because of the pre-norm), class token,
learned positions, pre-norm LayerNorm, then pre-norm transformer blocks (exact GELU, LayerNorm
eps 1e-5 in float32). SCAIL reads the tokens after block index 30, i.e. all blocks but the last,
with no post-norm and no head (`use_31_block=True`), so the last block is not even built here:
224x224 -> (B, 257, 1280). Parameter names equal the official `visual.*` keys.

`preprocess` reproduces `CLIPModel.visual`: bicubic squash to 224x224 (no antialias, no crop),
`x*0.5+0.5`, then the CLIP mean/std normalisation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from scail.animate.checkpoint import assign_weights, check_state_dict, read_state_dict
from scail.errors import CheckpointError

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class CLIPConfig:
    """Hyper-parameters of the ViT image tower."""

    image_size: int = 224
    patch_size: int = 14
    dim: int = 1280
    mlp_ratio: int = 4
    num_heads: int = 16
    num_layers: int = 32  # blocks in the checkpoint; the features come from the first num_layers - 1
    eps: float = 1e-5
    out_dim: int = 1024  # size of the (unused) projection head, only for the checkpoint's shape check

    @classmethod
    def vit_h_14(cls) -> CLIPConfig:
        """The released tower (`models_clip_open-clip-xlm-roberta-large-vit-huge-14*.pth`)."""
        return cls()

    @classmethod
    def tiny(cls) -> CLIPConfig:
        """A small tower for tests and the tiny-random pipeline (= fixtures/scail/clip/config.json)."""
        return cls(image_size=56, dim=32, num_heads=4, num_layers=3, out_dim=16)

    @property
    def num_tokens(self) -> int:
        """Class token + patches (257 for ViT-H/14 at 224)."""
        return (self.image_size // self.patch_size) ** 2 + 1


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back (official: fp16 autocast runs it in float32)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight.float(), self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).type_as(x)


class ViTAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.to_qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n_tok, d = x.shape
        qkv = self.to_qkv(x).view(b, n_tok, 3, self.num_heads, -1)  # (B, L, 3, N, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, N, L, Dh)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, N, L, Dh), scale 1/sqrt(Dh)
        return self.proj(out.transpose(1, 2).reshape(b, n_tok, d))  # (B, L, D)


class ViTBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, cfg: CLIPConfig) -> None:
        super().__init__()
        hidden = cfg.dim * cfg.mlp_ratio
        self.norm1 = LayerNorm32(cfg.dim, eps=cfg.eps)
        self.attn = ViTAttention(cfg.dim, cfg.num_heads)
        self.norm2 = LayerNorm32(cfg.dim, eps=cfg.eps)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, hidden), nn.GELU(), nn.Linear(hidden, cfg.dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CLIPVisionTower(nn.Module):
    """Normalised images (B, 3, S, S) -> tokens after the second-to-last block (B, 1 + (S/P)^2, D)."""

    def __init__(self, cfg: CLIPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        p = cfg.patch_size
        self.patch_embedding = nn.Conv2d(3, cfg.dim, kernel_size=p, stride=p, bias=False)
        self.cls_embedding = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embedding = nn.Parameter(torch.zeros(1, cfg.num_tokens, cfg.dim))
        self.pre_norm = LayerNorm32(cfg.dim, eps=cfg.eps)
        # official use_31_block: the last block's output is never used, so it is not built
        self.transformer = nn.Sequential(*[ViTBlock(cfg) for _ in range(cfg.num_layers - 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (B, 3, S, S) images after `preprocess` (S = cfg.image_size).
        Returns:
            (B, L, D) tokens, class token first, in the weight dtype.
        """
        b = x.shape[0]
        x = x.to(self.patch_embedding.weight.dtype)
        x = self.patch_embedding(x).flatten(2).transpose(1, 2)  # (B, (S/P)^2, D)
        x = torch.cat([self.cls_embedding.expand(b, -1, -1), x], dim=1)  # (B, L, D)
        x = self.pre_norm(x + self.pos_embedding)
        return self.transformer(x)  # (B, L, D)


def preprocess(images: torch.Tensor, image_size: int = 224) -> torch.Tensor:
    """The official CLIP input: (B, 3, H, W) in [-1, 1] -> (B, 3, S, S) normalised, float32 or as given.

    official (`CLIPModel.visual`): bicubic resize to S x S without keeping the aspect ratio or
    antialiasing, then `x*0.5+0.5` and Normalize(CLIP_MEAN, CLIP_STD).
    """
    x = F.interpolate(images, size=(image_size, image_size), mode="bicubic", align_corners=False)
    x = x * 0.5 + 0.5
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class CLIPImageEncoder:
    """Reference images -> CLIP features for the DiT's `clip_features` input."""

    def __init__(self, model: CLIPVisionTower) -> None:
        self.model = model

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """
        Args:
            images: (B, 3, H, W) float in [-1, 1], the cropped reference image (any size; squashed).
        Returns:
            (B, 257, 1280) for ViT-H/14 (cfg.num_tokens, cfg.dim), in the model's dtype.
        """
        weight = self.model.patch_embedding.weight
        x = preprocess(images.to(weight.device, torch.float32), self.model.cfg.image_size)
        return self.model(x)


# ----------------------------------------------------------------------------------------------
# Checkpoint loading
# ----------------------------------------------------------------------------------------------


_HF_BLOCK_NAMES = {
    "self_attn.out_proj": "attn.proj",
    "layer_norm1": "norm1",
    "layer_norm2": "norm2",
    "mlp.fc1": "mlp.0",
    "mlp.fc2": "mlp.2",
}


def _from_hf_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face `CLIPVisionModel` state dict (`vision_model.*`, e.g. ComfyUI's
    `clip_vision_h.safetensors`) to the official tower names; q/k/v are fused into `to_qkv`."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        name = key.removeprefix("vision_model.")
        if name == "embeddings.class_embedding":
            out["cls_embedding"] = value.reshape(1, 1, -1)
        elif name == "embeddings.patch_embedding.weight":
            out["patch_embedding.weight"] = value
        elif name == "embeddings.position_embedding.weight":
            out["pos_embedding"] = value[None]
        elif name == "embeddings.position_ids":
            continue  # a buffer of aranges, not a weight
        elif name.startswith("pre_layrnorm."):
            out["pre_norm." + name.rsplit(".", 1)[1]] = value
        elif name.startswith("post_layernorm."):
            out["post_norm." + name.rsplit(".", 1)[1]] = value
        elif name == "visual_projection.weight":
            out["head"] = value.t()  # official: x @ head, head (D, out_dim)
        elif name.startswith("encoder.layers."):
            index, _, rest = name[len("encoder.layers.") :].partition(".")
            module, _, param = rest.rpartition(".")
            if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                qkv.setdefault(f"transformer.{index}.attn.to_qkv.{param}", {})[module[len("self_attn.")]] = (
                    value  # "q", "k" or "v"
                )
            else:
                out[f"transformer.{index}.{_HF_BLOCK_NAMES.get(module, module)}.{param}"] = value
        else:
            out[key] = value
    for key, parts in qkv.items():
        if set(parts) == {"q", "k", "v"}:
            out[key] = torch.cat([parts["q"], parts["k"], parts["v"]])  # official order q, k, v
    return out


def _split_visual_state(
    path: Path, state: dict[str, torch.Tensor], cfg: CLIPConfig
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(tower tensors, unused tower tensors: last block, post-norm, head); `textual.*`, `log_scale` dropped."""
    if any(k.startswith("vision_model.") for k in state):
        state = _from_hf_names(state)
    elif any(k.startswith("visual.") for k in state):
        state = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    elif not any(k.startswith("transformer.") for k in state):
        raise CheckpointError(f"{path}: no 'visual.*' keys; is this the Wan CLIP file (models_clip_*.pth)?")
    last = f"transformer.{cfg.num_layers - 1}."
    is_unused = [k.startswith((last, "post_norm.")) or k == "head" for k in state]
    used = {k: v for (k, v), skip in zip(state.items(), is_unused, strict=True) if not skip}
    unused = {k: v for (k, v), skip in zip(state.items(), is_unused, strict=True) if skip}
    return used, unused


def _check_unused(path: Path, unused: dict[str, torch.Tensor], cfg: CLIPConfig) -> None:
    """The unused tensors must still fit the config: a checkpoint of another size is an error."""
    expected = {"post_norm.weight": (cfg.dim,), "post_norm.bias": (cfg.dim,), "head": (cfg.dim, cfg.out_dim)}
    for key, value in unused.items():
        want = expected.get(key)
        if want is not None and tuple(value.shape) != want:
            raise CheckpointError(
                f"{path}: {key!r} has shape {list(value.shape)}, expected {list(want)}; "
                "is this the ViT-H/14 CLIP checkpoint?"
            )


def read_clip_state(path: Path, config: CLIPConfig | None = None) -> dict[str, torch.Tensor]:
    """The tower's tensors of a CLIP checkpoint under the official names (memory-mapped), checked strictly.

    Accepts the layouts `load_clip` accepts; drops what the tower does not use (text tower,
    `log_scale`, last block, post-norm, head) after checking the shapes it can. Raises a one-line
    `CheckpointError`. `scail weights verify` uses it without loading the weights.
    """
    path = Path(path)
    cfg = config or CLIPConfig.vit_h_14()
    state, unused = _split_visual_state(path, read_state_dict(path), cfg)
    with torch.device("meta"):
        model = CLIPVisionTower(cfg)
    check_state_dict(model, state, path, "the CLIP ViT-H/14 visual tower")
    _check_unused(path, unused, cfg)
    return state


def load_clip(
    path: Path,
    dtype: torch.dtype = torch.float16,
    device: torch.device | str = "cpu",
    config: CLIPConfig | None = None,
) -> CLIPVisionTower:
    """Build the tower on the meta device and fill it from a checkpoint, strictly.

    Args:
        path: the full Wan CLIP `.pth` (`visual.*`, `textual.*`, `log_scale`), its visual-only version
            (`visual.*` + `log_scale`, as SCAIL-Preview ships), a safetensors file with the same
            names (with or without the `visual.` prefix), or a Hugging Face `CLIPVisionModel`
            safetensors (`vision_model.*`, ComfyUI's `clip_vision_h.safetensors`).
        dtype: parameter dtype (official: float16 on GPU; use float32 on CPU).
        config: architecture; default `CLIPConfig.vit_h_14()`.
    Returns:
        The tower (num_layers - 1 blocks) in eval mode, gradients off, on `device`.
    """
    path = Path(path)
    cfg = config or CLIPConfig.vit_h_14()
    state = read_clip_state(path, cfg)
    with torch.device("meta"):
        model = CLIPVisionTower(cfg)
    log.debug("loading %s (%d tensors) as %s", path, len(state), dtype)
    return assign_weights(model, state, dtype, device, path, "the CLIP ViT-H/14 visual tower")

"""Analytic floating-point operations of one SCAIL DiT forward (for TFLOP/s and capacity plans).

Matmuls count as 2*M*N*K, attention as 4*Lq*Lk*D per sample (QK^T and PV); the CFG pair is batch 2.
The count equals `torch.utils.flop_counter` on a real forward (tests/animate/test_flops.py), so a
measured s/step turns into TFLOP/s with `dit_flops(...).total / seconds`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scail.animate.dit import DiTConfig


@dataclass(frozen=True)
class FlopCount:
    """Floating-point operations of one DiT forward (multiply-add = 2)."""

    linear: float
    """Block linears: self/cross attention projections and the FFN."""
    attention: float
    """QK^T and PV of self- and cross-attention."""
    other: float
    """Patch embeddings, text/CLIP embeddings, time embedding and the head."""

    @property
    def total(self) -> float:
        return self.linear + self.attention + self.other


def token_counts(frames: int, grid_h: int, grid_w: int) -> tuple[int, int, int]:
    """(reference, video, pose) tokens for `frames` latent frames and a grid_h x grid_w token grid per frame."""
    return grid_h * grid_w, frames * grid_h * grid_w, frames * (grid_h // 2) * (grid_w // 2)


def dit_flops(
    cfg: DiTConfig,
    frames: int,
    grid_h: int,
    grid_w: int,
    batch: int = 2,
    text_len: int = 512,
    clip_tokens: int = 257,
) -> FlopCount:
    """Analytic FLOPs of one DiT forward on `batch` samples.

    Args:
        cfg: the DiT configuration (`DiTConfig.scail_14b()` for the released model).
        frames: latent frames (1 + (video frames - 1) / 4).
        grid_h, grid_w: tokens per latent frame side (latent height and width / patch size 2).
        batch: samples per forward (2 for the CFG pair, 1 without CFG).
        text_len, clip_tokens: the keys of the text and CLIP cross-attentions.

    At 512x896x81: `dit_flops(DiTConfig.scail_14b(), 21, 32, 56)` (48,832 tokens).
    """
    d, f, n_layers = cfg.dim, cfg.ffn_dim, cfg.num_layers
    ref, video, pose = token_counts(frames, grid_h, grid_w)
    seq = ref + video + pose
    lt, li = text_len, clip_tokens
    # per block and sample
    linear = 2 * seq * d * d * 4  # self q, k, v, o
    linear += 2 * seq * d * d * 2  # cross q, o
    linear += 2 * (lt + li) * d * d * 2  # cross k, v (text) and k_img, v_img (CLIP)
    linear += 2 * seq * d * f * 2  # FFN up and down
    attention = 4 * seq * seq * d + 4 * seq * (lt + li) * d
    # outside the blocks, per sample
    patch = math.prod(cfg.patch_size) * cfg.in_channels
    other = 2 * (ref + video) * patch * d + 2 * pose * patch * d  # the two patch embeddings
    other += 2 * lt * (cfg.text_dim * d + d * d)  # text embedding MLP
    other += 2 * li * (cfg.clip_dim * cfg.clip_dim + cfg.clip_dim * d)  # CLIP projection MLP
    other += 2 * (cfg.freq_dim * d + d * d + d * 6 * d)  # time embedding and adaLN projection
    other += 2 * video * d * math.prod(cfg.patch_size) * cfg.latent_channels  # head
    return FlopCount(
        linear=float(batch * n_layers * linear),
        attention=float(batch * n_layers * attention),
        other=float(batch * other),
    )

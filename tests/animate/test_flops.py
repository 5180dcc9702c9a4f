"""The DiT's analytic FLOP count (`scail.animate.flops`): the issue's 14B number, a hand count, and
torch's own FLOP counter on a real forward."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from scail.animate import attention as attn
from scail.animate.dit import DiT, DiTConfig
from scail.animate.flops import dit_flops, token_counts


def test_flops_14b_reproduce_issue_number() -> None:
    # issue 6: 512x896x81 = 21 latent frames of 32x56 tokens = 48,832 tokens with the reference and
    # pose tokens; CFG pair as batch 2: 6.31 PFLOP per step, ~62 % of it attention
    assert sum(token_counts(21, 32, 56)) == 48_832
    flops = dit_flops(DiTConfig.scail_14b(), 21, 32, 56, batch=2)
    assert flops.total == pytest.approx(6.31e15, rel=2e-3)
    assert 0.60 < flops.attention / flops.total < 0.64


def test_flops_tiny_hand_count() -> None:
    # dim 64, ffn 128, 2 layers; T=3, grid 2x4 -> ref 8, video 24, pose 3*1*2 = 6 tokens, L = 38
    cfg = DiTConfig.tiny()
    got = dit_flops(cfg, frames=3, grid_h=2, grid_w=4, batch=1, text_len=7, clip_tokens=5)
    seq, d, f = 38, 64, 128
    per_block_linear = 2 * seq * d * d * 6 + 2 * (7 + 5) * d * d * 2 + 2 * seq * d * f * 2
    per_block_attention = 4 * seq * seq * d + 4 * seq * 12 * d
    assert got.linear == 2 * per_block_linear
    assert got.attention == 2 * per_block_attention
    other = 2 * 32 * 80 * d + 2 * 6 * 80 * d  # patch embeddings: (ref+video, pose) tokens x 20*1*2*2 inputs
    other += 2 * 7 * (32 * d + d * d) + 2 * 5 * (32 * 32 + 32 * d)  # text MLP, CLIP MLP
    other += 2 * (32 * d + d * d + d * 6 * d) + 2 * 24 * d * 64  # time embedding + adaLN, head
    assert got.other == other
    assert got.total == got.linear + got.attention + got.other


def test_flops_equal_torch_flop_counter_on_a_real_forward() -> None:
    cfg = DiTConfig.tiny()
    model = DiT(cfg).init_weights(torch.Generator().manual_seed(3)).eval()
    b, t, h, w = 2, 3, 8, 12
    args = (
        torch.randn(b, t, 16, h, w), torch.tensor([500.0]), torch.randn(b, 7, 32),
        torch.randn(1, 1, 16, h, w), torch.randn(1, t, 16, h // 2, w // 2), torch.randn(b, 5, 32),
    )  # fmt: skip
    before = attn.get_backend()
    attn.set_backend("sdpa_math")  # decomposes into counted matmuls
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(*args)
    finally:
        attn.set_backend(before)  # type: ignore[arg-type]
    assert counter.get_total_flops() == dit_flops(cfg, t, h // 2, w // 2, batch=b, text_len=7, clip_tokens=5).total

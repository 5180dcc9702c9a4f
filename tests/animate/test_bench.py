"""The animate benchmark: analytic FLOP count, shapes, and the command at tiny size on the CPU."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from scail.animate import attention as attn
from scail.animate.bench import Shape, dit_flops, format_table, main, random_dit, token_counts
from scail.animate.dit import DiTConfig


def test_flops_14b_reproduce_issue_number() -> None:
    # issue 6: 512x896x81 = 48,832 tokens, CFG pair as batch 2: 6.31 PFLOP per step, ~62 % attention
    shape = Shape.parse("512x896x81")
    f, h, w = shape.latent
    assert sum(token_counts(f, h // 2, w // 2)) == 48_832
    flops = dit_flops(DiTConfig.scail_14b(), f, h // 2, w // 2, batch=2)
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


def test_flops_equal_torch_flop_counter_on_a_real_forward() -> None:
    cfg = DiTConfig.tiny()
    model = random_dit(cfg, torch.device("cpu"), torch.float32, seed=3)
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


def test_shape_parse_and_errors() -> None:
    s = Shape.parse("896x512x81")
    assert s.latent == (21, 112, 64) and str(s) == "896x512x81"
    for bad in ("512x896", "500x896x81", "512x896x80", "axbxc"):
        with pytest.raises(ValueError, match="shape"):
            Shape.parse(bad)


def test_random_dit_keeps_fp32_params_and_differs_by_seed() -> None:
    cfg = dataclasses.replace(DiTConfig.tiny(), num_layers=1)
    a = random_dit(cfg, torch.device("cpu"), torch.bfloat16, seed=1)
    b = random_dit(cfg, torch.device("cpu"), torch.bfloat16, seed=2)
    assert a.blocks[0].modulation.dtype == torch.float32 and a.blocks[0].ffn[0].weight.dtype == torch.bfloat16
    assert not torch.equal(a.blocks[0].ffn[0].weight, b.blocks[0].ffn[0].weight)
    assert not any(p.is_meta for p in a.parameters())


def test_bench_command_tiny_cpu_prints_table(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--preset", "tiny", "--device", "cpu", "--shapes", "32x64x5", "--steps", "2", "--no-compile",
            "--modes", "resident,offload,fast", "--cache-threshold", "0"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| 32x64x5")]
    modes = [line.split("|")[2].strip() for line in table]
    assert modes == ["resident", "fast", "offload"]
    assert "official SAT" in out
    fast = table[1].split("|")
    rel_err, psnr = float(fast[12]), float(fast[13])
    assert 0 < rel_err < 0.2 and psnr > 20  # fp8 against the float32 run on the same seed


def test_format_table_has_official_row() -> None:
    text = format_table([])
    assert "12.39" in text and "509" in text and text.count("\n") == 2


def test_scail_bench_animate_cli_tiny_cpu() -> None:
    from typer.testing import CliRunner

    from scail.cli import app

    args = ["bench", "animate", "--preset", "tiny", "--device", "cpu", "--shapes", "32x64x5", "--steps", "1",
            "--modes", "resident", "--no-compile", "--tile", "0"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| 32x64x5 | resident |" in result.output


def test_scail_bench_animate_bad_shape_is_one_line_error() -> None:
    from typer.testing import CliRunner

    from scail.cli import app

    result = CliRunner().invoke(app, ["bench", "animate", "--preset", "tiny", "--device", "cpu", "--shapes", "33x64x5"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: scail bench animate: ") and "multiples of 32" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

"""The animate benchmark: analytic FLOP count, shapes, and the command at tiny size on the CPU."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from scail.animate.bench import Shape, format_table, main, random_dit
from scail.animate.dit import DiTConfig


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

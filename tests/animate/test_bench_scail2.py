"""benchmarks/bench_scail2.py drives the product's pipelines (AnimatePipeline, SCAIL2Pipeline) at tiny size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_bench_scail2_every_mode_at_tiny_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import bench_scail2 as bench

    out = tmp_path / "b.json"
    assert bench.main(["--preset", "tiny", "--device", "cpu", "--size", "64x96", "--frames", "5", "--steps", "2",
                       "--compile", "off", "--json-out", str(out)]) == 0  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    assert [r["mode"] for r in rows] == ["preview", "end-to-end", "replacement", "multiref"]
    assert [r["tokens"] for r in rows] == [24 + 48 + 12, 84, 84, 84 + 48]  # (N + 1 + T) hp wp + T pose
    assert all(r["s_per_step"] > 0 for r in rows)
    text = capsys.readouterr().out
    assert "s/step" in text and "multiref" in text

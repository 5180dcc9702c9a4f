"""benchmarks/bench_attention.py runs at a tiny size on the CPU through scail's attention seam."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType


def load_bench() -> ModuleType:
    import benchmarks.bench_attention

    return benchmarks.bench_attention


def test_bench_attention_on_cpu(tmp_path: Path, capsys) -> None:
    bench = load_bench()
    out = tmp_path / "attn.json"
    assert bench.main(["--device", "cpu", "--tokens", "64", "--heads", "2", "--head-dim", "16", "--reps", "2",
                       "--backends", "sdpa,sdpa_math,flash_attn_4,sdpa_cudnn", "--json-out", str(out)]) == 0
    rows = {r["backend"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["sdpa"]["status"] == "ok" and rows["sdpa"]["rel_err_vs_first"] == 0.0
    assert rows["sdpa_math"]["status"] == "ok" and rows["sdpa_math"]["rel_err_vs_first"] < 1e-5
    assert rows["flash_attn_4"]["status"] in ("not installed", "does not apply here (would run sdpa)")
    assert rows["sdpa_cudnn"]["status"] == "does not apply here (would run sdpa)"
    printed = capsys.readouterr().out
    assert "attention at L=64, 2 heads x 16, batch 2" in printed and "sdpa_math" in printed

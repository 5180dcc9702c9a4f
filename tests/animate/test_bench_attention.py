"""benchmarks/bench_attention.py runs at a tiny size on the CPU through scail's attention seam."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_attention", REPO / "benchmarks" / "bench_attention.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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

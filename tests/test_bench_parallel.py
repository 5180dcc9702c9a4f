"""benchmarks/bench_parallel.py at tiny size on the CPU (gloo): the modes the GPU run uses work."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The script as a module; benchmarks/ on the path so the spawned ranks import it too."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return importlib.import_module("bench_parallel")


def test_sp_mode_reports_scaling_and_the_latent_error(bench: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "sp.json"
    bench.main(["sp", "--gpus", "1", "2", "--tiny", "--device", "cpu", "--steps", "2",
                   "--out-dir", str(tmp_path / "run"), "--json-out", str(out)])
    one, two = json.loads(out.read_text())
    assert one["gpus"] == 1 and two["gpus"] == 2 and len(two["peak_gib_per_gpu"]) == 2
    assert two["s_per_step"] > 0 and two["efficiency"] == two["speedup"] / 2
    assert two["latent_rel_error_vs_1"] <= 1e-5


def test_n1_mode_matches_the_plain_path(bench: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "n1.json"
    bench.main(["n1", "--tiny", "--device", "cpu", "--steps", "2", "--json-out", str(out)])
    result = json.loads(out.read_text())
    assert result["backend"] == "gloo" and result["world_size"] == 1
    assert result["bit_identical"], result

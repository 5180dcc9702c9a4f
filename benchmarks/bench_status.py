"""Warm `scail status` + no-op `scail run` over 1,000 example folders whose stages are all fresh.

    .venv/bin/python benchmarks/bench_status.py [--examples 1000] [--keep DIR]

The folders have tiny files laid out like real examples (driving.mp4, ref.png -> .scail/pose.npz +
ref_pose.npz -> rendered.mp4 + rendered_aligned.mp4 -> samples/bench.mp4). The stages below have the
real stages' inputs and outputs but write a few bytes, so that building 1,000 fresh examples is quick.
Both commands run in-process through the real CLI entry point (`scail.cli.main`), with the stage
factory pointed at these stages: argument parsing, discovery, manifests, fingerprints, the stat cache,
locks, per-example log files and the Rich table are all included. Target: < 2 s together.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel

import scail.batch
from scail.cli import main
from scail.config import PipelineConfig
from scail.example import Example
from scail.stage import StageContext


class _BenchStage:
    name: ClassVar[str]
    version: ClassVar[str] = "1"

    def __init__(self, params: BaseModel) -> None:
        self._params = params

    def params(self) -> BaseModel:
        return self._params

    def close(self) -> None:
        pass

    def run(self, example: Example, ctx: StageContext) -> None:
        for out in self.outputs(example):
            with ctx.atomic_output(out) as tmp:
                tmp.write_text(f"{self.name} {example.name}\n")


class BenchPose(_BenchStage):
    name: ClassVar[str] = "pose"

    def inputs(self, example: Example) -> list[Path]:
        return [example.driving(), example.reference()]

    def outputs(self, example: Example) -> list[Path]:
        return [example.pose_data, example.ref_pose_data]


class BenchRender(_BenchStage):
    name: ClassVar[str] = "render"

    def inputs(self, example: Example) -> list[Path]:
        return [example.pose_data, example.ref_pose_data]

    def outputs(self, example: Example) -> list[Path]:
        return [example.rendered, example.rendered_aligned]


class BenchAnimate(_BenchStage):
    name: ClassVar[str] = "animate"

    def inputs(self, example: Example) -> list[Path]:
        return [example.reference(), example.rendered_aligned, example.prompt_file]

    def outputs(self, example: Example) -> list[Path]:
        return [example.samples_dir / "bench.mp4"]


def bench_stages(config: PipelineConfig, names: Sequence[str], prompt: str | None = None) -> list:
    kinds = {"pose": (BenchPose, config.pose), "render": (BenchRender, config.render),
             "animate": (BenchAnimate, config.animate)}
    return [kinds[n][0](kinds[n][1]) for n in names]


def _cli(*args: str) -> tuple[int, float, float]:
    """Run `scail ARGS` in-process with stdout captured; (exit code, wall seconds, CPU seconds)."""
    t0, c0 = time.perf_counter(), time.process_time()
    code = 0
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, time.perf_counter() - t0, time.process_time() - c0


def build(root: Path, n: int) -> None:
    """One fresh example made by a real run, then copied (copies are re-fingerprinted cold once)."""
    first = root / "ex0000"
    first.mkdir(parents=True)
    (first / "driving.mp4").write_bytes(b"\x00" * 4096)
    (first / "ref.png").write_bytes(b"\x89PNG" + b"\x00" * 2048)
    (first / "prompt.txt").write_text("a person dancing\n")
    code, _, _ = _cli("run", str(first), "-p", "tiny-random", "-q")
    assert code == 0, code
    for i in range(1, n):
        shutil.copytree(first, root / f"ex{i:04d}", ignore=shutil.ignore_patterns("logs", "lock*"))


def bench(n: int, keep: Path | None) -> int:
    scail.batch.build_stages = bench_stages  # type: ignore[assignment]
    tmp = keep or Path(tempfile.mkdtemp(prefix="scail-bench-"))
    root = tmp / "examples"
    t0 = time.perf_counter()
    if not root.exists():
        build(root, n)
    t_build = time.perf_counter() - t0
    cold_code, t_cold, c_cold = _cli("status", str(root), "-p", "tiny-random")  # fills the stat caches
    status_code, t_status, c_status = _cli("status", str(root), "-p", "tiny-random")
    run_code, t_run, c_run = _cli("run", str(root), "-p", "tiny-random", "-q")
    status_json = io.StringIO()
    with contextlib.redirect_stdout(status_json), contextlib.suppress(SystemExit):
        main(["status", str(root), "-p", "tiny-random", "--json"])
    fresh = status_json.getvalue().count('"fresh"')
    rows = [
        ("status, cold stat cache", t_cold, c_cold, f"exit {cold_code}"),
        ("status, warm", t_status, c_status, f"exit {status_code}"),
        ("run, no-op", t_run, c_run, f"exit {run_code}"),
        ("warm status + no-op run", t_status + t_run, c_status + c_run, "target < 2 s"),
    ]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{n} examples x 3 stages, {fresh} stage results fresh; in-process CLI calls (scail.cli.main); "
          f"build {t_build:.1f}s; load average {load:.1f} on {os.cpu_count()} CPUs")
    print(f"{'step':<26} {'wall s':>7} {'cpu s':>7}  note")
    for name, secs, cpu, note in rows:
        print(f"{name:<26} {secs:>7.3f} {cpu:>7.3f}  {note}")
    if keep is None:
        shutil.rmtree(tmp, ignore_errors=True)
    ok = status_code == 0 and run_code == 0 and fresh == 3 * n
    return 0 if ok and t_status + t_run < 2.0 else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=1000)
    ap.add_argument("--keep", type=Path, help="build (or reuse) the examples in this folder")
    args = ap.parse_args()
    sys.exit(bench(args.examples, args.keep))

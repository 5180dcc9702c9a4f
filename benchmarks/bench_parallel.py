"""Sequence parallel and the Ray executor, measured (issue 18). Not yet run: needs a multi-GPU machine.

Three modes, each driving the product's own objects:

  sp     The 14B DiT with random weights (bf16) denoising one 512x896x81 sample (the CFG pair) on
         N = 1, 2, 4, 8 GPUs: every rank runs `pipeline.run_sampling` with `parallel.install`ed
         Ulysses sequence parallel, exactly as `scail animate --gpus N` does on its ranks. Prints
         s/step (first step excluded: compile), scaling efficiency against N = 1, peak memory per GPU,
         and the N-GPU latent's relative error against the 1-GPU latent (same inputs and weights).
  n1     The one-GPU check: the sequence-parallel code path of rank 0 (`launch.ParallelGroup`
         with gpus = 1: NCCL process group of world size 1, SampleJob broadcast, per-step go/stop,
         the DiT's SP hooks) against the plain path, same inputs: the latents must match.
  ray    Clips per hour of `scail run --executor ray` (one actor per GPU) over a folder of
         tiny-random examples, against the local executor.

    PYTHONPATH=. python benchmarks/bench_parallel.py sp --gpus 1 2 4 8 --out sp.json
    PYTHONPATH=. python benchmarks/bench_parallel.py n1
    PYTHONPATH=. python benchmarks/bench_parallel.py ray --examples 16 --workers 8

`--tiny --device cpu` runs each mode on a 4-head tiny DiT with gloo processes (the CPU test).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from scail.animate.dit import DiTConfig
from scail.animate.launch import exit_rank
from scail.animate.parallel import install, make_groups
from scail.animate.pipeline import Conditions, DiTModels, SampleJob, run_sampling
from scail.animate.random_weights import random_dit
from scail.animate.windows import WindowConfig

TINY = DiTConfig(dim=64, num_heads=4, num_layers=2, ffn_dim=128, freq_dim=32, text_dim=32, clip_dim=32)


@dataclass(frozen=True)
class Case:
    """One benchmark shape: the DiT, the latent (frames, h, w) and the dtype."""

    config: DiTConfig
    latents: int  # F = 1 + (T - 1) / 4
    h: int  # latent height = H / 8
    w: int
    dtype: torch.dtype

    @classmethod
    def make(cls, tiny: bool, size: str, device: torch.device) -> Case:
        if tiny:
            return cls(TINY, 3, 8, 8, torch.float32)
        height, width, frames = (int(v) for v in size.split("x"))
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        return cls(DiTConfig.scail_14b(), 1 + (frames - 1) // 4, height // 8, width // 8, dtype)


def make_job(case: Case, steps: int) -> SampleJob:
    """The CFG pair of one sample with random conditioning (CPU generator: the same on every rank)."""
    g = torch.Generator().manual_seed(1)
    c, f, h, w = case.config.latent_channels, case.latents, case.h, case.w
    cond = Conditions(
        ref_latent=torch.randn(1, 1, c, h, w, generator=g),
        pose_latent=torch.randn(1, f, c, h // 2, w // 2, generator=g),
        context=torch.randn(2, case.config.text_len, case.config.text_dim, generator=g),
        clip_features=torch.randn(1, 257, case.config.clip_dim, generator=g),
        use_cfg=True,
        num_frames=1 + 4 * (f - 1),
    )
    frames = 1 + 4 * (f - 1)  # longer than 81: temporal windows of 81 (as the animate stage), each split
    windows = WindowConfig(frames=min(frames, 81), overlap=0 if frames <= 81 else 16)
    return SampleJob(cond, "euler", steps, 5.0, 4.0, 42, None, windows, "default", None, None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sp_rank(rank: int, world: int, port: int, tiny: bool, size: str, device_type: str, steps: int,
             out: str) -> None:
    """One rank of the `sp` mode."""
    device = torch.device(device_type, rank) if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world)
    try:
        case = Case.make(tiny, size, device)
        dit = random_dit(case.config, device, case.dtype)
        dit.set_rows_in_turn(device.type == "cuda")
        if device.type == "cuda":
            dit.compile_blocks()
        install(dit, make_groups(world, 1, rank))
        job = make_job(case, steps).to(device)
        stamps: list[float] = []

        def tick(done: int, total: int | None) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        with torch.no_grad():
            latent = run_sampling(DiTModels(dit, device), job, on_progress=tick)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
        peaks: list[Any] = [None] * world
        dist.all_gather_object(peaks, peak)
        if rank == 0:
            times = [b - a for a, b in zip([t0, *stamps[:-1]], stamps, strict=True)]
            later = times[1:] or times
            torch.save(latent.float().cpu(), Path(out) / f"latent_{world}.pt")
            (Path(out) / f"result_{world}.json").write_text(json.dumps({
                "gpus": world, "first_step_s": times[0], "s_per_step": sum(later) / len(later),
                "peak_gib_per_gpu": peaks, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            }))
        # every rank leaves together: a gloo rank that tears its group down while rank 0 (the store's
        # host) is still writing can abort in its destructor ("terminate called without an active exception")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    exit_rank()  # the results are on disk; an abort at interpreter exit would fail the measurement


def run_sp(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = Path(args.out_dir or tempfile.mkdtemp(prefix="bench-parallel-"))
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for n in args.gpus:
        mp.spawn(_sp_rank, args=(n, _free_port(), args.tiny, args.size, args.device, args.steps, str(out)), nprocs=n)
        row = json.loads((out / f"result_{n}.json").read_text())
        latent = torch.load(out / f"latent_{n}.pt", weights_only=True)
        base = rows[0] if rows and rows[0]["gpus"] == 1 else None
        if base is not None:
            ref = torch.load(out / "latent_1.pt", weights_only=True)
            row["speedup"] = base["s_per_step"] / row["s_per_step"]
            row["efficiency"] = row["speedup"] / n
            row["latent_rel_error_vs_1"] = ((latent.double() - ref.double()).norm() / ref.double().norm()).item()
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def run_n1(args: argparse.Namespace) -> dict[str, Any]:
    """Rank 0's sequence-parallel path with one process (NCCL on CUDA) against the plain path."""
    from scail.animate.launch import ParallelGroup
    from scail.config import AnimateConfig, ParallelConfig

    device = torch.device(args.device)
    case = Case.make(True, "", device) if args.tiny else Case(
        DiTConfig.scail_14b(), 3, 32, 32, torch.bfloat16 if device.type == "cuda" else torch.float32)
    if not args.tiny:  # the 14B widths and heads, 4 blocks: the check takes seconds
        case = Case(DiTConfig(dim=5120, num_heads=40, num_layers=4, ffn_dim=13824), case.latents, case.h, case.w,
                    case.dtype)
    dit = random_dit(case.config, device, case.dtype)
    job = make_job(case, args.steps)
    with torch.no_grad():
        plain = run_sampling(DiTModels(dit, device), job.to(device))
        group = ParallelGroup(AnimateConfig(device=str(device), parallel=ParallelConfig(gpus=1)), dit, device)
        try:
            group.start(job)
            parallel = run_sampling(DiTModels(dit, device), job.to(device), on_progress=group.progress_fn(None))
            backend = group.spec.backend
        finally:
            group.close()
    rel = ((parallel.double() - plain.double()).norm() / plain.double().norm()).item()
    result = {"backend": backend, "world_size": 1, "latent_rel_error": rel,
              "bit_identical": bool(torch.equal(parallel, plain)), "shape": list(plain.shape)}
    print(json.dumps(result), flush=True)
    return result


def run_ray(args: argparse.Namespace) -> dict[str, Any]:
    """Clips per hour over tiny-random examples: the Ray executor against the local one."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from scale_out_helpers import TINY_PIPELINE, make_examples

    from scail.batch import SerialExecutor, make_jobs, run_batch
    from scail.config import STAGES, load_pipeline
    from scail.example import discover
    from scail.ray_executor import RayExecutor, RayOptions

    root = Path(args.out_dir or tempfile.mkdtemp(prefix="bench-ray-"))
    preset = root / "tiny.yaml"
    preset.write_text(TINY_PIPELINE.replace("device: cpu", f"device: {args.device}"))
    result: dict[str, Any] = {"examples": args.examples}
    for name in ("local", "ray"):
        folder = make_examples(root / name, args.examples)
        jobs = make_jobs(discover(folder), load_pipeline(str(preset)), STAGES)
        gpu = args.device == "cuda"
        executor = SerialExecutor() if name == "local" else RayExecutor(
            RayOptions(workers=args.workers, gpus_per_worker=1 if gpu else 0, require_gpus=gpu))
        t0 = time.perf_counter()
        summary = run_batch(jobs, executor)
        wall = time.perf_counter() - t0
        ok = summary.counts()["ok"]
        result[name] = {"ok": ok, "wall_s": round(wall, 2), "clips_per_hour": round(ok * 3600 / wall, 1)}
        print(name, json.dumps(result[name]), flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["sp", "n1", "ray"])
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 4, 8], help="sp: process counts (1 first)")
    parser.add_argument("--size", default="512x896x81", help="sp: HxWxFRAMES of the sample")
    parser.add_argument("--steps", type=int, default=3, help="denoising steps (sp: the first one is not timed)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="a 4-head tiny DiT (CPU test)")
    parser.add_argument("--examples", type=int, default=16, help="ray: tiny-random examples per executor")
    parser.add_argument("--workers", type=int, default=None, help="ray: actors (default: one per GPU)")
    parser.add_argument("--out-dir", default=None, help="where latents and results go (default: a temp folder)")
    parser.add_argument("--json-out", type=Path, default=None, help="write the results here as JSON")
    args = parser.parse_args(argv)
    result: Any = {"sp": run_sp, "n1": run_n1, "ray": run_ray}[args.mode](args)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

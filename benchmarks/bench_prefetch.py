"""Cold reads of a checkpoint through the loaders' own reader, with and without the prefetch.

Writes a safetensors file of `--gb` GB (bf16 tensors of 64 MiB, as a DiT's), then for each variant
evicts its pages from the page cache (POSIX_FADV_DONTNEED: no root needed) and times what a loader
does: `checkpoint.read_tensors` (memory-mapped) and one copy of every tensor (the copy to the
device). `prefetch` runs `scail.animate.prefetch.Prefetch` on the file meanwhile, as `build.py` does,
with each of `--workers` reading threads.

    PYTHONPATH=. python benchmarks/bench_prefetch.py --gb 3 --dir /tmp --workers 0,1,4

Results: benchmarks/README.md ("bench_prefetch.py").
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def write_checkpoint(path: Path, gb: float) -> None:
    import torch
    from safetensors.torch import save_file

    n = max(1, int(gb * 1e9 // (64 << 20)))
    g = torch.Generator().manual_seed(0)
    tensors = {f"blocks.{i}.weight": torch.randn(4096, 8192, generator=g).to(torch.bfloat16) for i in range(n)}
    save_file(tensors, str(path))


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def load(path: Path, workers: int) -> float:
    """Seconds to read and copy every tensor of `path` from a cold page cache."""
    from scail.animate.checkpoint import read_tensors
    from scail.animate.prefetch import Prefetch

    evict(path)
    t0 = time.perf_counter()
    fetch = Prefetch([path], workers=workers) if workers else None
    try:
        for tensor in read_tensors(path).values():
            tensor.clone()  # the loader's copy (to the GPU, or to another dtype)
    finally:
        if fetch is not None:
            fetch.stop()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=3.0, help="checkpoint size (GB)")
    parser.add_argument("--dir", type=Path, default=Path("/tmp"), help="where to write it (the disk to measure)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", default="0,1,4",
                        help="comma-separated prefetch thread counts to compare (0: the loader alone)")
    args = parser.parse_args()
    path = args.dir / f"scail-bench-prefetch-{args.gb:g}gb.safetensors"
    if not path.is_file():
        write_checkpoint(path, args.gb)
    size = path.stat().st_size
    print("| variant | round | s | GB/s |")
    print("|---|---|---|---|")
    for r in range(args.rounds):
        for workers in (int(w) for w in args.workers.split(",")):
            name = f"loader + prefetch, {workers} thread{'s' * (workers > 1)}" if workers else "loader alone"
            s = load(path, workers)
            print(f"| {name} | {r + 1} | {s:.2f} | {size / s / 1e9:.2f} |", flush=True)


if __name__ == "__main__":
    main()

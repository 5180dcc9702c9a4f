"""Decode / encode / resize throughput of scail.video at 896x512 on this machine.

    .venv/bin/python benchmarks/bench_video.py [--frames 96] [--pace 0.16]

Prints one table row per operation: frames per second (higher is better). decord is measured too,
for comparison with the reader the official code uses (scail reads with PyAV).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from scail import frame_geometry, video


def synthetic_frames(n: int, h: int = 512, w: int = 896) -> list[np.ndarray]:
    """Moving gradients plus noise: harder to encode than a rendered skeleton, easier than film."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    noise = rng.integers(0, 24, (h, w, 3), np.uint8)
    return [
        (np.stack([(xx + 4 * i) % 256, (yy + 2 * i) % 256, (xx + yy + 6 * i) % 256], -1) + noise).astype(
            np.uint8
        )
        for i in range(n)
    ]


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    start = time.perf_counter()
    n = fn()
    return n, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--pace", type=float, default=0.16,
                        help="seconds between pieces of 4 frames in the write-behind rows (H100: 81 frames in 3.4 s)")
    args = parser.parse_args()

    frames = synthetic_frames(args.frames)
    rows: list[tuple[str, int, float]] = []
    tails: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.mp4"
        for lookahead in (40, 10):  # the animate stage's writer: pieces of 4 frames at the VAE's pace
            seconds, size = write_behind_tail(path, frames, lookahead, args.pace)
            tails.append(f"write-behind, rc-lookahead {lookahead:>2}: {seconds:.2f} s from the last piece "
                         f"to the closed file, {size / 1e6:.2f} MB")
        for preset in ("medium", "veryfast"):

            def encode(preset: str = preset) -> int:
                with video.VideoWriter(path, 16, crf=18, preset=preset) as writer:
                    for frame in frames:
                        writer.write(frame)
                return len(frames)

            rows.append((f"encode libx264 crf18 {preset} (PyAV)", *timed(encode)))
        size_mb = path.stat().st_size / 1e6

        rows.append(("decode, iter_frames (PyAV)", *timed(lambda: sum(1 for _ in video.iter_frames(path)))))
        rows.append(
            (
                "decode + resample to 10 fps (PyAV)",
                *timed(lambda: sum(1 for _ in video.iter_frames(path, fps=10))),
            )
        )
        try:
            import decord

            def decode_decord() -> int:
                reader = decord.VideoReader(str(path))
                return len(reader.get_batch(list(range(len(reader)))).asnumpy())

            rows.append(("decode, get_batch(all) (decord)", *timed(decode_decord)))
        except ImportError:
            pass

        big = np.stack(synthetic_frames(8, 1080, 2048))
        rows.append(
            (
                "resize_crop 2048x1080 -> 896x512 (uint8)",
                *timed(lambda: len(frame_geometry.resize_crop(big, (512, 896)))),
            )
        )

    print(
        f"scail.video benchmark: {args.frames} frames 896x512, {os.cpu_count()} CPUs, last file {size_mb:.1f} MB"
    )
    print(f"{'operation':<44} {'frames':>7} {'seconds':>8} {'fps':>8}")
    for name, n, seconds in rows:
        print(f"{name:<44} {n:>7} {seconds:>8.2f} {n / seconds:>8.1f}")
    print(f"pieces of 4 frames every {args.pace} s (the VAE decode's pace):")
    for line in tails:
        print("  " + line)


def write_behind_tail(path: Path, frames: list[np.ndarray], lookahead: int, pace: float) -> tuple[float, int]:
    """The animate stage's writing (`video.WriteBehind` over a `VideoWriter`) fed 4 frames every `pace`
    seconds: the seconds from the last piece to the closed file (what the decode cannot hide), and
    the file's size."""
    with video.VideoWriter(path, 16, lookahead=lookahead) as writer, video.WriteBehind(writer) as behind:
        for i in range(0, len(frames), 4):
            time.sleep(pace)  # the decode of the next latent frame
            behind.put(np.stack(frames[i : i + 4]))
        last = time.perf_counter()
    return time.perf_counter() - last, path.stat().st_size


if __name__ == "__main__":
    main()

"""ms/frame of the skeleton renderer at 896x512, official-style single person (CPU, and CUDA if asked).

    .venv/bin/python benchmarks/bench_render.py [--device cpu|cuda] [--frames 64] [--pose POSE.npz]
        [--threads N] [--chunk N] [--repeats 3]

The pose is the synthetic dancer (scail/demo.py) unless --pose names a pose .npz. Rows:

* first call: the first `render_pose` call in this process (lazy imports, allocator and CUDA warm-up
  included), ms per frame of that call;
* steady state: the best of --repeats further calls;
* "3D only", "3D + overlay" (the rendered.mp4 frames, returned as numpy), and "3D kernel on
  device" (frames left on the device, no copy back, no overlay: what a GPU pipeline would use);
* "2D overlay alone" on the CPU (whatever --device), on black frames: the OpenCV reference
  (`draw_overlay`, frame by frame) and the vectorised marks `render_pose` uses (`overlay_marks`
  per chunk + paste; the pipeline computes them in a worker thread while the 3D pass runs).

Reference (issue 3): the official taichi renderer takes ~300 ms/frame here in steady state plus
~1.7 s of kernel compilation per call; targets are <= 60 ms/frame on 2 CPU cores and >= 500
frames/s on an H200.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _timed(fn, sync) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(wall seconds, CPU seconds of this process) of one call."""
    sync()
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    sync()
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--pose", type=Path, default=None, help="pose .npz to render instead of the synthetic dancer")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads of the 3D pass (0: torch's default)")
    ap.add_argument("--chunk", type=int, default=None, help="frames per 3D batch (default: 16 on cpu, 128 on cuda)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    t_import = time.perf_counter()
    import numpy as np
    import torch

    from scail.demo import dancer_pose
    from scail.device import resolve_device
    from scail.pose.schema import load_pose
    from scail.render import prepare_render, render_pose
    from scail.render.overlay import draw_overlay, overlay_marks
    from scail.render.raycast import Camera, default_chunk_frames, render_capsules

    t_import = time.perf_counter() - t_import
    threads = args.threads or None
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(args.device)
    pose = load_pose(args.pose) if args.pose else dancer_pose(args.frames, (512, 896), 1)
    chunk = args.chunk or default_chunk_frames(Camera.from_K(pose.K, pose.size), device.type == "cuda")
    n = pose.num_frames
    h, w = pose.size

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    rows: list[tuple[str, tuple[float, float]]] = []
    first = _timed(lambda: render_pose(pose, overlay=True, device=device, chunk_frames=chunk, cpu_threads=threads), sync)
    rows.append(("first call, 3D + overlay (incl. warm-up)", first))

    for label, overlay in (("3D only", False), ("3D + overlay", True)):
        times = [_timed(lambda o=overlay: render_pose(pose, overlay=o, device=device, chunk_frames=chunk, cpu_threads=threads), sync)
                 for _ in range(args.repeats)]
        rows.append((f"steady state, {label}", min(times)))

    prep = prepare_render(pose, overlay=False)

    def kernel_only() -> None:
        for start in range(0, n, chunk):
            render_capsules(prep.capsules.select(slice(start, min(start + chunk, n))), prep.camera, prep.depth,
                            prep.radius_mm, device)

    times = [_timed(kernel_only, sync) for _ in range(args.repeats)]
    rows.append(("steady state, 3D kernel on device", min(times)))

    # the 2D overlay alone, on the CPU whatever --device: the OpenCV reference frame by frame, and the
    # vectorised marks the pipeline computes (in a worker thread, during the 3D pass) and pastes
    body, face, hands = prepare_render(pose, overlay=True).overlay or ()
    canvas = np.zeros((n, h, w, 3), np.uint8)

    def overlay_reference() -> None:
        for t in range(n):
            draw_overlay(canvas[t], body[t], face[t], hands[t])

    def overlay_vectorised() -> None:
        for start in range(0, n, chunk):
            sl = slice(start, min(start + chunk, n))
            overlay_marks(body[sl], face[sl], hands[sl], (h, w)).paste(canvas[sl])

    for label, fn in (("2D overlay alone, OpenCV reference (CPU)", overlay_reference),
                      ("2D overlay alone, vectorised marks (CPU)", overlay_vectorised)):
        times = [_timed(fn, lambda: None) for _ in range(args.repeats)]
        rows.append((label, min(times)))

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(f"render benchmark: {w}x{h}, {n} frames, {pose.num_people} person(s), device {device} ({dev_name}), "
          f"chunk {chunk}, torch {torch.__version__}, import {t_import:.2f} s, load avg {load:.1f}")
    print(f"{'measurement':44s} {'ms/frame':>9s} {'frames/s':>9s} {'CPU ms/frame':>13s}")
    for label, (wall, cpu) in rows:
        print(f"{label:44s} {wall / n * 1e3:9.2f} {n / wall:9.1f} {cpu / n * 1e3:13.2f}")
    print("ms/frame and frames/s are wall clock (best of the repeats); CPU ms/frame is this process's CPU time "
          "summed over its threads (on a busy machine it shows the work, when wall clock shows the queue).")


if __name__ == "__main__":
    main()

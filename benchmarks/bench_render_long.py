"""Peak host memory of the render stage (and the pose stage's post-processing) on long pose sequences.

Issue 13: the pose and render stages stream, so a 10-minute driving video must not cost more memory
than a 1-minute one. For each length this writes an example folder whose `.scail/pose.npz` is the
synthetic dancer (scail/demo.py, 896x512 portrait, 16 fps, one person with face and hands), runs the
real CLI `scail render` on it in a child process, and reads the child's peak RSS from the kernel
(`os.wait4`'s rusage), so the number is the whole process: imports, pose arrays, the chunked 3D pass,
the overlay and the H.264 writer. It also runs, in another child, what the pose stage does in the
parent after its worker (`pose.stage.postprocess`: flip fixing, gap filling, smoothing, on the whole
sequence) and reports that child's peak RSS. (The pose worker itself reads the driving video frame by
frame; a real 10-minute extraction takes hours on a CPU, so it is not run here.) One row per length:

    minutes  frames  wall_s  ms/frame  peak_rss_mib  rendered_frames  post_s  post_rss_mib

    PYTHONPATH=. python benchmarks/bench_render_long.py --minutes 0.1,1,10
    PYTHONPATH=. python benchmarks/bench_render_long.py --minutes 10 --device cuda

A flat `peak_rss_mib` column is the result; `rendered_frames` == `frames` checks nothing was cut.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

FPS = 16.0


def make_example(folder: Path, frames: int) -> Path:
    """An example folder with a tiny driving.mp4 and ref.jpg (needed to be an example) and the long pose."""
    import numpy as np
    from PIL import Image

    from scail.demo import dancer_pose
    from scail.pose.schema import save_pose
    from scail.video import VideoWriter

    (folder / ".scail").mkdir(parents=True)
    Image.fromarray(np.full((896, 512, 3), 128, np.uint8)).save(folder / "ref.jpg")
    with VideoWriter(folder / "driving.mp4", FPS) as w:
        for i in range(8):
            w.write(np.full((512, 896, 3), 16 * i, np.uint8))
    save_pose(dancer_pose(frames, (512, 896), 1, FPS), folder / ".scail" / "pose.npz")
    return folder


POSTPROCESS = """
import sys
from pathlib import Path
from scail.config import PoseConfig
from scail.pose.schema import load_pose, save_pose
from scail.pose.stage import postprocess
pose = load_pose(Path(sys.argv[1]))
postprocess(pose, PoseConfig())
save_pose(pose, Path(sys.argv[2]))
"""


def child(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of `cmd` run as a child process (fails loudly)."""
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: a chatty child never blocks on a full pipe
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            log.seek(0)
            err = log.read().decode(errors="replace")
            raise SystemExit(f"{' '.join(cmd[:4])} failed ({proc.returncode}):\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024  # Linux: KiB


def render_once(folder: Path, device: str) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of `scail render FOLDER` in a child process."""
    return child([sys.executable, "-m", "scail", "render", str(folder), "--set", f"render.device={device}"])


def postprocess_once(folder: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of the pose stage's post-processing of the folder's pose in a child."""
    pose = folder / ".scail" / "pose.npz"
    return child([sys.executable, "-c", POSTPROCESS, str(pose), str(folder / "post.npz")])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", default="0.1,1,10", help="comma-separated lengths of the pose sequence in minutes")
    p.add_argument("--device", default="cpu", help="render.device (cpu, cuda)")
    args = p.parse_args(argv)

    from scail.video import probe

    print("minutes  frames  wall_s  ms/frame  peak_rss_mib  rendered_frames  post_s  post_rss_mib", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for k, minutes in enumerate(float(m) for m in args.minutes.split(",")):
            frames = max(1, round(minutes * 60 * FPS))
            folder = make_example(Path(tmp) / f"ex{k}", frames)
            wall, rss = render_once(folder, args.device)
            got = probe(folder / "rendered.mp4").num_frames
            post_s, post_rss = postprocess_once(folder)
            print(f"{minutes:7.2f}  {frames:6d}  {wall:6.1f}  {1000 * wall / frames:8.1f}  {rss:12.0f}  {got:15d}  "
                  f"{post_s:6.1f}  {post_rss:12.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

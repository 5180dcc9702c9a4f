"""Frames per second of each pose backend on this machine (runs inside the pose env's worker).

    .venv/bin/python benchmarks/bench_pose.py [--example ../shared/examples/001] [--frames 48]
        [--backend mediapipe nlf]

Prints one line per backend: model load time, s/frame and frames/s over the normalised 16 fps
frames (decode + resize included, as the stage runs them). A backend that cannot run here (nlf
without its weights) prints the reason instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def bench(backend: str, example: Path, frames: int, workdir: Path) -> dict[str, object]:
    from scail.config import Settings
    from scail.errors import ScailError
    from scail.pose.client import PoseWorker, worker_python
    from scail.pose.worker import PoseJob

    settings = Settings.from_env()
    job = PoseJob(driving=example / "driving.mp4", out_pose=workdir / f"{backend}.npz", backend=backend,  # type: ignore[arg-type]
                  max_frames=frames, weights_dir=settings.weights_dir, cache_dir=settings.cache_dir)
    worker = PoseWorker(worker_python(False, settings.cache_dir))
    try:
        summary = worker.run(job, lambda e: None)
    except ScailError as exc:
        return {"backend": backend, "error": str(exc)}
    finally:
        worker.close()
    t = summary["timings_s"]
    return {"backend": backend, "frames": summary["frames"], "load_s": t["load"], "s_per_frame": t["per_frame"],
            "fps": round(1.0 / t["per_frame"], 2) if t["per_frame"] else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--example", type=Path, default=REPO.parent / "shared" / "examples" / "001")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--backend", nargs="+", default=["mediapipe", "nlf"])
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.backend:
            print(json.dumps(bench(name, args.example, args.frames, Path(tmp))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Small test-only stages that follow the real contract (scail/stage.py) and the example layout.

They read and write tiny text files instead of videos, so engine and batch tests run in
milliseconds. Outputs depend on the inputs and the params, so a parameter change changes the
bytes downstream stages read, exactly as with the real stages.

    toy driving.mp4   text "frames=N"; anything else is a corrupt video (InputError naming it)
    pose    -> .scail/pose.npz        (params: config.pose)
    render  -> rendered.mp4           (params: config.render)
    animate -> samples/toy.mp4        (params: config.animate; reads rendered.mp4 + ref)

Run as a script for the subprocess tests (kill -9, two runners, Ctrl-C):
    python tests/toy_pipeline.py EXAMPLES_DIR [--delay S] [--events FILE] [--set animate.steps=3]
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel

from scail.config import PipelineConfig
from scail.errors import InputError
from scail.example import Example
from scail.stage import StageContext


class _ToyStage:
    name: ClassVar[str]
    version: ClassVar[str] = "1"

    def __init__(self, params: BaseModel, delay_s: float = 0.0, events: Path | None = None) -> None:
        self._params = params
        self.delay_s = delay_s
        self.events = events
        self.runs: list[str] = []
        self.closed = False

    def params(self) -> BaseModel:
        return self._params

    def close(self) -> None:
        self.closed = True

    def _event(self, what: str, example: Example) -> None:
        if self.events is not None:
            with open(self.events, "a", encoding="utf-8") as fh:
                fh.write(f"{time.time():.6f} {os.getpid()} {what} {example.name} {self.name}\n")

    def _write(self, example: Example, ctx: StageContext, path: Path, text: str) -> None:
        """Write `text` in 10 chunks, reporting progress (and honouring Ctrl-C) between them."""
        self._event("start", example)
        self.runs.append(example.name)
        with ctx.atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            for i in range(10):
                ctx.progress(i, 10, unit="chunks")
                fh.write(text[i * len(text) // 10:(i + 1) * len(text) // 10])
                fh.flush()
                time.sleep(self.delay_s / 10)
            ctx.progress(10, 10, unit="chunks")
        self._event("end", example)


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


class ToyPose(_ToyStage):
    name: ClassVar[str] = "pose"

    def inputs(self, example: Example) -> list[Path]:
        return [example.driving()]

    def outputs(self, example: Example) -> list[Path]:
        return [example.pose_data]

    def run(self, example: Example, ctx: StageContext) -> None:
        src = example.driving()
        text = src.read_bytes().decode("utf-8", "replace")
        if not text.startswith("frames="):
            raise InputError(f"{src}: not a readable video; re-export it as H.264 mp4")
        ctx.note(frames=int(text.split("=")[1]), backend="toy")
        self._write(example, ctx, example.pose_data,
                    f"pose {_digest(text, self._params.model_dump())}\n" * 20)


class ToyRender(_ToyStage):
    name: ClassVar[str] = "render"

    def inputs(self, example: Example) -> list[Path]:
        if not example.pose_data.is_file():
            raise InputError(f"{example.root}: no pose data; run 'scail pose' first")
        return [example.pose_data]

    def outputs(self, example: Example) -> list[Path]:
        return [example.rendered]

    def run(self, example: Example, ctx: StageContext) -> None:
        pose = example.pose_data.read_text(encoding="utf-8")
        self._write(example, ctx, example.rendered, f"render {_digest(pose, self._params.model_dump())}\n" * 20)


class ToyAnimate(_ToyStage):
    name: ClassVar[str] = "animate"

    def inputs(self, example: Example) -> list[Path]:
        video = example.pose_video()
        if video is None:
            raise InputError(f"{example.root}: no rendered.mp4; run 'scail render' first")
        return [example.reference(), video]

    def outputs(self, example: Example) -> list[Path]:
        return [example.samples_dir / "toy.mp4"]

    def run(self, example: Example, ctx: StageContext) -> None:
        video = example.pose_video()
        assert video is not None
        text = video.read_text(encoding="utf-8")
        ctx.note(seed=getattr(self._params, "seed", None))
        self._write(example, ctx, self.outputs(example)[0],
                    f"animate {_digest(text, self._params.model_dump())}\n" * 20)


def toy_factory(delay_s: float = 0.0, events: Path | None = None, built: list | None = None):
    """A `StageFactory` for `SerialExecutor` that builds toy stages (and remembers them in `built`)."""

    def factory(config: PipelineConfig, names: Sequence[str], prompt: str | None = None) -> list:
        kinds = {"pose": (ToyPose, config.pose), "render": (ToyRender, config.render),
                 "animate": (ToyAnimate, config.animate)}
        stages = [kinds[n][0](kinds[n][1], delay_s=delay_s, events=events) for n in names]
        if built is not None:
            built.extend(stages)
        return stages

    return factory


def write_toy_example(root: Path, frames: int = 5, driving: bytes | None = None) -> Example:
    """An example folder with a toy driving 'video', a reference image file and a prompt."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "driving.mp4").write_bytes(driving if driving is not None else f"frames={frames}\n".encode())
    (root / "ref.png").write_bytes(b"\x89PNG toy reference")
    (root / "prompt.txt").write_text("a person dancing\n", encoding="utf-8")
    return Example(root)


def main(argv: list[str]) -> int:
    import argparse

    from scail.batch import SerialExecutor, make_jobs, run_batch
    from scail.config import load_pipeline, parse_override
    from scail.example import discover

    ap = argparse.ArgumentParser()
    ap.add_argument("path", type=Path)
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--events", type=Path)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--ready", type=Path, help="touch this file when ready to start")
    ap.add_argument("--go", type=Path, help="then wait for this file before starting (a start barrier)")
    args = ap.parse_args(argv)
    config = load_pipeline("tiny-random", dict(parse_override(s) for s in args.set))
    jobs = make_jobs(discover(args.path), config, ("pose", "render", "animate"))
    if args.ready:
        args.ready.touch()
    while args.go is not None and not args.go.exists():
        time.sleep(0.01)
    summary = run_batch(jobs, SerialExecutor(toy_factory(args.delay, args.events)),
                        json_out=args.path / ".scail-summary.json")
    return int(summary.exit_code)


def cli(argv: list[str]) -> None:
    """The real `scail` CLI with toy stages: `python tests/toy_pipeline.py --cli [--delay S] run PATH ...`."""
    import scail.batch
    from scail.cli import main as scail_main

    delay = 0.0
    if argv[:1] == ["--delay"]:
        delay, argv = float(argv[1]), argv[2:]
    scail.batch.build_stages = toy_factory(delay)  # type: ignore[assignment]
    scail_main(argv)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--cli"]:
        cli(sys.argv[2:])
    else:
        sys.exit(main(sys.argv[1:]))

"""A 12 s phone video through the real `scail` command: every frame animated, in windows, resumable.

The example is the demo's dancer: a 24 fps portrait driving video of 12 s (288 frames) and the exact
pose the pose stage would extract from it at 16 fps (192 frames), given as user-provided pose data
so no pose model is needed. Render and animate (tiny-random) run in a subprocess as a user runs them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from scail.example import Example
from scail.video import probe, read_frames

SECONDS, PHONE_FPS, POSE_FPS = 12, 24.0, 16.0
POSE_FRAMES = int(SECONDS * POSE_FPS)  # 192


def _write_phone_example(root: Path) -> Path:
    """driving.mp4 (24 fps, 288 frames, portrait), ref.png, prompt.txt, .scail/pose.npz (16 fps, 192 frames)."""
    from PIL import Image

    from scail.demo import (
        DANCER,
        REFERENCE,
        _arm,
        _background,
        body_frame_joints,
        dance,
        draw_person,
        make_pose,
    )
    from scail.pose.schema import save_pose
    from scail.video import write_video

    root.mkdir(parents=True)
    bg = _background((200, 205, 215), (120, 125, 135))
    phone = dance(int(SECONDS * PHONE_FPS), fps=PHONE_FPS)
    write_video(root / "driving.mp4", (draw_person(j, DANCER, bg)[::4, ::4] for j in phone), fps=PHONE_FPS)
    rest = body_frame_joints(0.0)
    rest[[18, 20, 22]] = _arm(rest[16], +1.0, 0.25, 0.1)
    rest[[19, 21, 23]] = _arm(rest[17], -1.0, 0.25, 0.1)
    Image.fromarray(draw_person(rest, REFERENCE, _background((245, 230, 200), (200, 170, 130)))).save(root / "ref.png")
    (root / "prompt.txt").write_text("A cartoon character dances, full body.\n", encoding="utf-8")
    save_pose(make_pose([dance(POSE_FRAMES, fps=POSE_FPS)]), root / ".scail" / "pose.npz")
    save_pose(make_pose([rest[None]]), root / ".scail" / "ref_pose.npz")
    return root


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "SCAIL_CACHE_DIR": str(tmp_path / "cache"), "SCAIL_WEIGHTS_DIR": str(tmp_path / "weights"),
            "OMP_NUM_THREADS": "1"}


def _scail(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scail", *args], env=env, capture_output=True, text=True,
                          timeout=600)


def test_scail_run_animates_every_frame_of_a_12s_phone_video(tmp_path: Path) -> None:
    root = _write_phone_example(tmp_path / "phone")
    info = probe(root / "driving.mp4")
    assert (info.num_frames, info.fps) == (288, 24.0) and info.height > info.width  # portrait, 12 s
    proc = _scail(_env(tmp_path), "run", str(root), "--pipeline", "tiny-random", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ex = Example(root)
    rendered = probe(ex.rendered)
    assert rendered.num_frames == POSE_FRAMES
    sample = probe(ex.samples_dir / f"{ex.name}_latest.mp4")
    assert sample.num_frames == rendered.num_frames == 192 and sample.fps == pytest.approx(16.0)
    notes = json.loads((ex.state_dir / "animate.json").read_text())["notes"]
    assert notes["frames"] == 192 and notes["windows"] == 3  # 49 latent frames: (0, 21), (17, 38), (28, 49)
    assert not (ex.state_dir / "animate-resume.safetensors").exists()


def test_kill_9_mid_clip_then_rerun_gives_the_same_video(tmp_path: Path) -> None:
    """`kill -9` while sampling (a checkpoint after every window), rerun: the frames of an uninterrupted run."""
    from scail.demo import dance, make_pose
    from scail.pose.schema import save_pose

    def example(name: str) -> Path:
        root = _write_phone_example(tmp_path / name)
        save_pose(make_pose([dance(41, fps=POSE_FPS)]), root / ".scail" / "pose.npz")  # 41 frames: 2 windows
        return root

    args = ["--pipeline", "tiny-random", "--set", "animate.window_frames=25", "--set", "animate.window_overlap=8",
            "--set", "animate.steps=6"]
    env = _env(tmp_path)
    ref, killed = example("uninterrupted"), example("killed")
    assert _scail(env, "run", str(ref), *args, "-q").returncode == 0
    assert _scail(env, "run", str(killed), "--until", "render", *args, "-q").returncode == 0
    ckpt = killed / ".scail" / "animate-resume.safetensors"
    proc = subprocess.Popen([sys.executable, "-m", "scail", "run", str(killed), *args, "--set",
                             "animate.checkpoint_every_s=0"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    time.sleep(0.3)  # a few more windows
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.is_file() and not list((killed / "samples").glob("killed_42*.mp4"))
    rerun = _scail(env, "run", str(killed), *args, "--set", "animate.checkpoint_every_s=0", "-v")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming at step" in rerun.stderr
    a = read_frames(ref / "samples" / "uninterrupted_latest.mp4")
    b = read_frames(killed / "samples" / "killed_latest.mp4")
    assert a.shape == b.shape == (41, 224, 128, 3)
    assert np.array_equal(a, b)

"""Degenerate inputs are refused by the pose stage with one line and leave no pose data behind.

The checks run in the parent before the pose worker starts (scail/pose/inputs.py), so these tests
need no pose env: the stage is the real one, run by the real engine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scail.config import PoseConfig, Settings
from scail.engine import Outcome, run_stage
from scail.example import Example
from scail.pose.stage import PoseStage
from scail.video import write_video


def _frames(n: int) -> list[np.ndarray]:
    return [np.full((64, 96, 3), 40 * i % 255, np.uint8) for i in range(n)]


def _example(root: Path, *, frames: int = 8, ref: Image.Image | None = None) -> Path:
    root.mkdir()
    write_video(root / "driving.mp4", _frames(frames), fps=16)
    (ref or Image.new("RGB", (256, 384), (200, 100, 50))).save(root / "ref.jpg")
    return root


def _refused(root: Path, tmp_path: Path) -> str:
    stage = PoseStage(PoseConfig(backend="mediapipe"), Settings(weights_dir=tmp_path / "w", cache_dir=tmp_path / "c"))
    ex = Example(root)
    try:
        outcome = run_stage(stage, ex)
    finally:
        stage.close()
    assert outcome.outcome == Outcome.FAILED, outcome
    assert stage._worker is None, "refused before the pose worker (and its env) started"
    left = sorted(p.name for p in ex.state_dir.iterdir()) if ex.state_dir.exists() else []
    assert not [n for n in left if n.endswith(".npz") or n.startswith(".pose") or n == "pose_summary.json"], left
    assert not any(p.exists() for p in stage.outputs(ex))
    assert "\n" not in outcome.reason
    return outcome.reason


def test_reference_that_is_not_an_image(tmp_path: Path) -> None:
    root = _example(tmp_path / "ex")
    (root / "ref.jpg").write_text("this is not a picture\n")
    reason = _refused(root, tmp_path)
    assert "ref.jpg: not an image file" in reason


def test_reference_too_small(tmp_path: Path) -> None:
    root = _example(tmp_path / "ex", ref=Image.new("RGB", (40, 30)))
    reason = _refused(root, tmp_path)
    assert "ref.jpg: the reference image is 40x30 px, too small to find a person in" in reason


def test_driving_video_too_short(tmp_path: Path) -> None:
    root = _example(tmp_path / "ex", frames=3)
    reason = _refused(root, tmp_path)
    assert "driving.mp4: the driving video has 3 frame(s) at 16 fps" in reason and "at least 5" in reason


def test_still_image_renamed_mp4(tmp_path: Path) -> None:
    root = _example(tmp_path / "ex")
    Image.new("RGB", (320, 240), (10, 200, 30)).save(root / "driving.mp4", format="JPEG")
    reason = _refused(root, tmp_path)
    assert "driving.mp4: a still image (mjpeg), not a video" in reason


@pytest.mark.parametrize("frames", [5, 8])
def test_short_but_enough_passes_the_checks(tmp_path: Path, frames: int) -> None:
    from scail.pose.inputs import check_driving, check_reference

    root = _example(tmp_path / "ex", frames=frames)
    check_driving(root / "driving.mp4", 16.0)
    check_reference(root / "ref.jpg")


def test_frame_range_outside_the_video(tmp_path: Path) -> None:
    from scail.errors import InputError
    from scail.pose.inputs import check_driving

    root = _example(tmp_path / "ex", frames=16)  # 1 s
    with pytest.raises(InputError, match=r"start 2 s is past the end of the video \(1.00 s\)"):
        check_driving(root / "driving.mp4", 16.0, start_s=2.0)
    with pytest.raises(InputError, match=r"has 3 frame\(s\) between 0.5 s and 0.7 s at 16 fps"):
        check_driving(root / "driving.mp4", 16.0, start_s=0.5, end_s=0.7)
    check_driving(root / "driving.mp4", 16.0, start_s=0.25, end_s=0.75)


def test_frame_range_picks_the_frames(tmp_path: Path) -> None:
    from scail.pose.normalize import frame_range, iter_driving, plan_driving

    assert frame_range(16.0) == (0, None)
    assert frame_range(16.0, 10, 1.0, None) == (16, 26)
    assert frame_range(16.0, 100, 1.0, 2.0) == (16, 32)
    root = tmp_path / "ex"
    root.mkdir()
    frames = [np.full((64, 96, 3), 8 * i, np.uint8) for i in range(24)]  # frame i is grey 8 i
    write_video(root / "driving.mp4", frames, fps=16)
    plan = plan_driving(root / "driving.mp4", 16.0, None, 0.5, 1.0)
    got = list(iter_driving(root / "driving.mp4", plan, None, 0.5, 1.0))
    assert plan.num_frames == len(got) == 8
    assert [round(float(f.mean()) / 8) for f in got] == list(range(8, 16))

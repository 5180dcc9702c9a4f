"""Frame normalisation: 16 fps by timestamps, the official size by the driving video's orientation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scail.errors import InputError
from scail.pose.normalize import iter_driving, load_reference, plan_driving


def _video(path: Path, frames: int, fps: float, hw: tuple[int, int]) -> Path:
    from scail.video import write_video

    # frame i is filled with the value 8*i so the kept source frames can be identified
    write_video(path, [np.full((*hw, 3), min(8 * i, 255), np.uint8) for i in range(frames)], fps=fps)
    return path


def test_30fps_source_is_resampled_to_16fps(tmp_path: Path) -> None:
    src = _video(tmp_path / "d.mp4", 30, 30.0, (120, 200))  # 1 s, landscape
    plan = plan_driving(src, 16.0)
    assert plan.size_hw == (512, 896) and plan.num_frames == 16 and plan.source_fps == pytest.approx(30.0)
    frames = list(iter_driving(src, plan))
    assert len(frames) == 16 and frames[0].shape == (512, 896, 3)
    values = [int(f[256, 448, 0]) for f in frames]
    assert values == sorted(values) and values[-1] > 8 * 25  # spans the whole second, in order
    np.testing.assert_allclose(plan.K[0, 0], 896 / (2 * np.tan(np.radians(27.5))))
    assert plan.K[0, 2] == 448 and plan.K[1, 2] == 256


def test_portrait_driving_sets_the_size_and_the_reference_follows(tmp_path: Path) -> None:
    from PIL import Image

    src = _video(tmp_path / "d.mp4", 4, 16.0, (200, 120))
    plan = plan_driving(src, 16.0, max_frames=2)
    assert plan.size_hw == (896, 512) and plan.num_frames == 2
    assert len(list(iter_driving(src, plan, max_frames=2))) == 2
    Image.fromarray(np.zeros((100, 300, 3), np.uint8)).save(tmp_path / "ref.png")  # landscape reference
    assert load_reference(tmp_path / "ref.png", plan.size_hw).shape == (896, 512, 3)  # official: same size


def test_unreadable_inputs_are_clean_errors(tmp_path: Path) -> None:
    bad = tmp_path / "d.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(InputError, match=r"d\.mp4"):
        plan_driving(bad, 16.0)
    (tmp_path / "ref.jpg").write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"ref\.jpg: not an image file"):
        load_reference(tmp_path / "ref.jpg", (512, 896))

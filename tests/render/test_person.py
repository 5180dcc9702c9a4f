"""render.person (--person N, `person:` in scail.yaml): only the chosen tracked person is drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scail.config import RenderConfig
from scail.demo import dancer_pose
from scail.errors import InputError
from scail.example import Example
from scail.pose.schema import save_pose
from scail.render import render_pose
from scail.render.stage import RenderStage
from scail.stage import StageContext

SIZE = (256, 448)


def _two_people(tmp_path: Path) -> Example:
    ex = Example(tmp_path / "001")
    pose = dancer_pose(3, SIZE, num_people=2)
    pose.track_id[:] = [0, 1]
    save_pose(pose, ex.pose_data)
    return ex


def _rendered(ex: Example, person: int | None) -> np.ndarray:
    from scail.video import read_frames

    RenderStage(RenderConfig(person=person, align=False)).run(ex, StageContext(ex, "render"))
    return read_frames(ex.rendered)


def test_one_person_of_two(tmp_path: Path) -> None:
    from scail.pose import load_pose

    ex = _two_people(tmp_path)
    pose = load_pose(ex.pose_data)
    both = _rendered(ex, None)
    for person in (0, 1):
        alone = _rendered(ex, person)
        expected = render_pose(pose.select_people([person]), overlay=True)
        assert np.abs(alone.astype(int) - expected.astype(int)).mean() < 2.0  # H.264 noise only
        assert np.abs(alone.astype(int) - both.astype(int)).mean() > 2.0, "the other person is gone"
    # everyone (multi-person palettes) is still the default
    assert np.abs(both.astype(int) - render_pose(pose, overlay=True).astype(int)).mean() < 2.0


def test_a_person_that_is_not_there(tmp_path: Path) -> None:
    ex = _two_people(tmp_path)
    with pytest.raises(InputError, match=r"no person 3 in the pose data \(people found: \[0, 1\]"):
        _rendered(ex, 3)

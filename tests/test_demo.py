"""The bundled demo example: made by code, valid pose data, and its pose is taken as user-provided."""

from __future__ import annotations

import numpy as np

from scail.demo import NUM_FRAMES, SIZE_HW, write_demo_example
from scail.example import Example
from scail.pose.schema import load_pose
from scail.video import probe


def test_demo_example_is_complete_and_consistent(tmp_path) -> None:
    root = write_demo_example(tmp_path / "dance")
    ex = Example(root)
    info = probe(ex.driving())
    assert (info.num_frames, info.fps, info.height, info.width) == (NUM_FRAMES, 16.0, *SIZE_HW)
    assert ex.reference().name == "ref.png" and ex.prompt()
    pose, ref = load_pose(ex.pose_data), load_pose(ex.ref_pose_data)
    assert pose.num_frames == NUM_FRAMES and ref.num_frames == 1 and tuple(pose.size) == SIZE_HW
    # The joints the 3D skeleton needs are all known, in front of the camera, and they move.
    needed = [1, 2, 4, 5, 7, 8, 12, 15, 16, 17, 18, 19, 20, 21]
    assert np.isfinite(pose.body3d[:, 0, needed]).all() and (pose.body3d[:, 0, :, 2] > 1000).all()
    assert np.ptp(pose.body3d[:, 0, 20, 1]) > 200  # the left wrist travels more than 20 cm
    # 2D points project inside the frame (x/W, y/H in [0, 1]) for the body.
    xy = pose.body2d[:, 0, :, :2]
    assert (xy > -0.05).all() and (xy < 1.05).all()


def test_demo_pose_is_user_provided_so_no_pose_model_is_needed(tmp_path) -> None:
    from scail.config import load_pipeline
    from scail.engine import Status, example_status
    from scail.pose.stage import PoseStage

    ex = Example(write_demo_example(tmp_path / "dance"))
    stage = PoseStage(load_pipeline("tiny-random").pose)
    assert example_status([stage], ex)[0][0] is Status.USER_PROVIDED


def test_inputs_only_writes_no_state(tmp_path) -> None:
    root = write_demo_example(tmp_path / "dance", inputs_only=True)
    assert sorted(p.name for p in root.iterdir()) == ["driving.mp4", "prompt.txt", "ref.png"]

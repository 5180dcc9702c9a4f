"""Flips over time (scail/pose/flips.py): injected flips are undone, real turns are kept."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from scail.demo import dancer_pose
from scail.pose import load_pose
from scail.pose.flips import Variant, _apply, fix_flips, flip_rate, mirror_depth, yaw_degrees
from scail.pose.schema import PoseData

DATA = Path(__file__).parent / "data"


def _copy(pose: PoseData) -> PoseData:
    return pose.select_frames(slice(None))


def _assert_same(a: PoseData, b: PoseData) -> None:
    for name in ("body3d", "body2d", "hands2d", "face2d"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1e-2, err_msg=name)


def _turning(num_frames: int = 64, turn_frames: int = 32, start: int = 16, degrees: float = 180.0) -> PoseData:
    """The synthetic dancer turning about the vertical through its pelvis: still, then `degrees`
    over `turn_frames` frames (2 s at 16 fps), then still; 2D points re-projected, the face seen
    only while it looks at the camera."""
    pose = dancer_pose(num_frames)
    K = pose.K
    h, w = pose.size
    angle = np.radians(degrees) * np.clip((np.arange(num_frames) - start) / turn_frames, 0.0, 1.0)

    def turn(points: np.ndarray, pivot: np.ndarray, a: float) -> np.ndarray:
        d = points - pivot
        c, s = np.cos(a), np.sin(a)
        return pivot + np.stack([c * d[..., 0] + s * d[..., 2], d[..., 1], -s * d[..., 0] + c * d[..., 2]], -1)

    def project(points: np.ndarray) -> np.ndarray:
        return np.stack([(K[0, 0] * points[..., 0] / points[..., 2] + K[0, 2]) / w,
                         (K[1, 1] * points[..., 1] / points[..., 2] + K[1, 2]) / h], -1)

    def unproject(xy: np.ndarray, z: np.ndarray) -> np.ndarray:
        return np.stack([(xy[..., 0] * w - K[0, 2]) * z / K[0, 0], (xy[..., 1] * h - K[1, 2]) * z / K[1, 1], z], -1)

    for t in range(num_frames):
        pivot = pose.body3d[t, 0, 0].astype(np.float64)
        depth = float(pivot[2])
        pose.body3d[t, 0] = turn(pose.body3d[t, 0].astype(np.float64), pivot, angle[t])
        for name, arr in (("body2d", pose.body2d[t, 0]), ("face2d", pose.face2d[t, 0]),
                          ("hands2d", pose.hands2d[t, 0].reshape(-1, 3))):
            moved = project(turn(unproject(arr[:, :2].astype(np.float64), np.full(len(arr), depth)), pivot, angle[t]))
            if name == "hands2d":
                pose.hands2d[t, 0, ..., :2] = moved.reshape(2, 21, 2)
            else:
                arr[:, :2] = moved
        if np.cos(angle[t]) < 0.2:  # the face is not visible from behind
            pose.face2d[t, 0] = np.nan
            pose.body2d[t, 0, [0, 14, 15], 2] = 0.1
    return pose


def test_injected_flips_are_undone() -> None:
    truth = dancer_pose(48)
    pose = _copy(truth)
    bursts = {Variant.SWAP: range(8, 13), Variant.SWAP_MIRROR: range(20, 23), Variant.MIRROR: range(33, 36)}
    for variant, frames in bursts.items():
        for i in frames:
            _apply(pose, 0, i, variant)
    assert np.abs(pose.body3d - truth.body3d).max() > 100, "the injection must change the data"
    report = fix_flips(pose)
    _assert_same(pose, truth)
    assert report.frames(0) == sorted(i for frames in bursts.values() for i in frames)


def test_a_flip_at_the_start_and_a_lone_flipped_frame() -> None:
    truth = dancer_pose(32)
    pose = _copy(truth)
    for i in (0, 1, 2, 17):
        _apply(pose, 0, i, Variant.SWAP)
    fix_flips(pose)
    _assert_same(pose, truth)


def test_a_real_turn_is_kept() -> None:
    """180 degrees over 2 s is a real turn: nothing is relabelled, the facing goes smoothly to the back."""
    truth = _turning()
    yaw = yaw_degrees(truth.body3d[:, 0])
    assert abs(yaw[0]) < 30 and abs(abs(yaw[-1]) - 180) < 30 and flip_rate(yaw) < 20
    pose = _copy(truth)
    report = fix_flips(pose)
    assert report.changed == {}
    _assert_same(pose, truth)


def test_a_flip_during_a_real_turn_is_undone_and_the_turn_kept() -> None:
    truth = _turning()
    pose = _copy(truth)
    for i in range(50, 54):  # after the turn: the person shows their back
        _apply(pose, 0, i, Variant.SWAP)
    fix_flips(pose)
    _assert_same(pose, truth)
    assert flip_rate(yaw_degrees(pose.body3d[:, 0])) < 20


def test_each_person_and_gaps() -> None:
    truth = dancer_pose(40, num_people=2)
    truth.body3d[18:21, 1] = np.nan  # person 1 not seen for 3 frames
    pose = _copy(truth)
    for i in range(10, 14):
        _apply(pose, 0, i, Variant.SWAP)
    for i in range(21, 25):  # right after the gap
        _apply(pose, 1, i, Variant.SWAP_MIRROR)
    report = fix_flips(pose)
    _assert_same(pose, truth)
    assert report.frames(0) == list(range(10, 14)) and report.frames(1) == list(range(21, 25))


def test_mirror_depth_keeps_the_picture() -> None:
    pose = dancer_pose(4)
    j = pose.body3d[:, 0].astype(np.float64)
    m = mirror_depth(j, pose.K)
    proj = lambda x: x[..., :2] / x[..., 2:]  # noqa: E731
    np.testing.assert_allclose(proj(m), proj(j), atol=1e-9)
    np.testing.assert_allclose(m[:, 0], j[:, 0], atol=1e-6)  # the pelvis stays
    np.testing.assert_allclose(mirror_depth(m, pose.K), j, atol=1e-6)


def test_hands_follow_the_wrists() -> None:
    truth = dancer_pose(8)
    pose = _copy(truth)
    pose.hands2d[3, 0] = pose.hands2d[3, 0, ::-1].copy()  # a backend that labelled the hands wrongly
    report = fix_flips(pose)
    _assert_same(pose, truth)
    assert report.changed == {"0": {"hands": [3]}}


def _agreement_module() -> ModuleType:
    from benchmarks import pose_agreement

    return pose_agreement


def test_example_001_colours_agree_with_the_official_render(shared_dir: Path) -> None:
    """MediaPipe's raw pose of examples/001 (tests/pose/data) has frames 15-21 left/right flipped:
    their colours disagree with the official render (hue agreement ~0.01). After fix_flips every
    frame agrees >= 0.85."""
    from scail.render import render_pose
    from scail.video import read_frames

    agreement = _agreement_module()
    official = read_frames(shared_dir / "examples" / "001" / "rendered.mp4")
    raw = load_pose(DATA / "001_mediapipe_raw.npz")
    before = agreement.hue_agreement(np.asarray(render_pose(raw, overlay=True)), official)
    assert (before[15:22] < 0.2).all() and (np.delete(before, range(15, 22)) >= 0.85).all(), before.round(2)
    report = fix_flips(raw)
    assert report.frames(0) == list(range(15, 22))
    after = agreement.hue_agreement(np.asarray(render_pose(raw, overlay=True)), official)
    assert after.min() >= agreement.HUE_TARGET, after.round(2)


@pytest.mark.parametrize("flipped", [False, True])
def test_hue_agreement_sees_swapped_colours(flipped: bool) -> None:
    from scail.render import render_pose

    agreement = _agreement_module()
    truth = dancer_pose(3)
    frames = np.asarray(render_pose(truth, overlay=False))
    pose = _copy(truth)
    if flipped:
        for i in range(3):
            _apply(pose, 0, i, Variant.SWAP)
    hue = agreement.hue_agreement(np.asarray(render_pose(pose, overlay=False)), frames)
    iou = agreement.mask_iou(agreement.skeleton_mask(frames), agreement.skeleton_mask(frames))
    assert (iou == 1).all()
    assert (hue < 0.5).all() if flipped else (hue == 1).all(), hue

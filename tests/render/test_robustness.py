"""Bad pose data renders what is valid and never crashes; streaming equals one-shot rendering."""

from __future__ import annotations

import numpy as np
import pytest

from scail.demo import dancer_pose
from scail.pose.schema import PoseData
from scail.render import iter_render_pose, prepare_render, render_pose
from scail.render.skeleton import DRAW_ORDER, PALETTE_PASTEL, PALETTE_SATURATED, PALETTE_SINGLE, shader_colors

SIZE = (256, 448)


def _pose(frames: int = 6, people: int = 1) -> PoseData:
    return dancer_pose(frames, SIZE, people)


def _covered(frames: np.ndarray) -> np.ndarray:
    return (frames.max(-1) > 0).reshape(len(frames), -1).sum(1)


def test_streaming_in_chunks_equals_one_shot() -> None:
    pose = _pose(7)
    full = render_pose(pose, overlay=True)
    chunked = np.stack(list(iter_render_pose(pose, overlay=True, chunk_frames=3)))
    assert np.array_equal(full, chunked)
    assert _covered(full).min() > 500


def test_depth_shading_is_clip_global() -> None:
    """Official quirk kept: a frame's shading depends on the depth range of the whole clip."""
    pose = _pose(6)
    pose.body3d[5, :, :, 2] += 4000.0                       # one far frame widens the clip's z range
    alone = render_pose(pose.select_frames(slice(0, 1)), overlay=False)[0]
    in_clip = render_pose(pose, overlay=False)[0]
    assert np.array_equal(alone.max(-1) > 0, in_clip.max(-1) > 0)
    assert not np.array_equal(alone, in_clip)


def test_nan_joints_drop_only_their_bones() -> None:
    pose = _pose(4)
    ref = render_pose(pose, overlay=False)
    pose.body3d[1, 0, 19] = np.nan                          # right elbow: two bones go
    pose.body3d[2, 0] = np.nan                              # whole person unknown
    out = render_pose(pose, overlay=False)
    cov, cov_ref = _covered(out), _covered(ref)
    assert 0 < cov[1] < cov_ref[1]
    assert cov[2] == 0
    assert np.array_equal(out[0], ref[0]) and np.array_equal(out[3], ref[3])


def test_person_behind_camera_is_skipped_and_does_not_shift_shading() -> None:
    pose = _pose(4)
    behind = pose.select_frames(slice(None))
    behind.body3d[2, 0, :, 2] *= -1.0                       # mirrored behind the camera
    missing = pose.select_frames(slice(None))
    missing.body3d[2, 0] = np.nan
    out = render_pose(behind, overlay=False)
    assert _covered(out)[2] == 0
    assert np.array_equal(out, render_pose(missing, overlay=False))


def test_zero_length_and_official_zero_joints() -> None:
    pose = _pose(3)
    pose.body3d[0, 0, 19] = pose.body3d[0, 0, 17]           # R elbow on the R shoulder: a zero-length bone
    pose.body3d[1, 0, 20] = 0.0                             # official "missing": an exactly zero joint
    out = render_pose(pose, overlay=False)
    assert (_covered(out) > 500).all()


def test_empty_inputs() -> None:
    pose = _pose(3)
    pose.body3d[:] = np.nan
    out = render_pose(pose, overlay=False)
    assert out.shape == (3, *SIZE, 3) and out.max() == 0
    assert render_pose(PoseData.empty(0, 1, SIZE), overlay=True).shape == (0, *SIZE, 3)
    none = render_pose(PoseData.empty(2, 0, SIZE), overlay=True)
    assert none.shape == (2, *SIZE, 3) and none.max() == 0
    blank = PoseData.empty(2, 2, SIZE)                      # all NaN, overlay on
    assert render_pose(blank, overlay=True, reference=_pose(1)).max() == 0


def test_nan_2d_points_are_not_drawn() -> None:
    pose = _pose(2)
    without = render_pose(pose, overlay=False)
    pose.face2d[:] = np.nan
    pose.hands2d[:, :, 0] = np.nan
    pose.body2d[:, :, :, 2] = 0.1                           # below the DWPose body threshold
    out = render_pose(pose, overlay=True)
    drawn = (out != without).any(-1)
    assert drawn.sum() > 20                                  # the right hands only
    pose.hands2d[:] = np.nan
    assert np.array_equal(render_pose(pose, overlay=True), without)


def test_two_people_occlude_each_other_with_their_palettes() -> None:
    pose = _pose(1, people=2)
    pose.body3d[:, 1] = pose.body3d[:, 0] + np.array([120.0, 0.0, 500.0], np.float32)  # person 1 right behind 0
    both = render_pose(pose, overlay=False)[0]
    front, back = pose.select_frames(slice(None)), pose.select_frames(slice(None))
    front.body3d[:, 1] = np.nan
    back.body3d[:, 0] = np.nan
    only_front = render_pose(front, overlay=False, multi_person_palettes=True)[0]   # pastel (person 0)
    back_mask = render_pose(back, overlay=False)[0].max(-1) > 0
    front_mask = only_front.max(-1) > 0
    overlap = front_mask & back_mask
    assert overlap.sum() > 200
    # the nearer person wins wherever both project: its pixels are as when drawn alone (within one level:
    # the shading constants come from the clip's depth range, which the person behind widens)
    diff = np.abs(both[front_mask].astype(np.int16) - only_front[front_mask])
    assert diff.max() <= 1 and (diff == 0).all(-1).mean() > 0.95
    # the person behind shows elsewhere, drawn with the saturated palette
    rest = back_mask & ~front_mask
    assert rest.sum() > 200 and (both[rest].max(-1) > 0).all()
    colors = prepare_render(pose, overlay=False).capsules.colors[0]
    order = list(DRAW_ORDER)
    assert np.array_equal(colors[:13], shader_colors(PALETTE_PASTEL)[order])
    assert np.array_equal(colors[13:], shader_colors(PALETTE_SATURATED)[order])
    lone = prepare_render(front, overlay=False).capsules.colors[0]
    assert np.array_equal(lone[:13], shader_colors(PALETTE_SINGLE)[order])  # a lone person: single palette


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    pose = _pose(4)
    cpu = render_pose(pose, overlay=True)
    gpu = render_pose(pose, overlay=True, device="cuda")
    assert (cpu == gpu).all(-1).mean() > 0.999

"""Proportion retargeting: driving bone directions, reference bone lengths, FK from the driving pelvis."""

from __future__ import annotations

import numpy as np

from scail.demo import dancer_joints, dancer_pose
from scail.render import render_pose
from scail.render.retarget import SMPL_PARENTS, bone_lengths, retarget


def test_retarget_takes_reference_lengths_and_driving_directions() -> None:
    drv = dancer_joints(4)                                   # (T, 24, 3)
    child = dancer_joints(1, scale=0.6)[0]                   # a smaller reference person
    out = retarget(drv, child)
    ref_len = bone_lengths(child)
    for t in range(len(drv)):
        np.testing.assert_allclose(out[t, 0], drv[t, 0])     # pelvis stays
        np.testing.assert_allclose(bone_lengths(out[t])[1:], ref_len[1:], rtol=1e-4)
        for j in range(1, 24):
            par = SMPL_PARENTS[j]
            a, b = out[t, j] - out[t, par], drv[t, j] - drv[t, par]
            cos = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
            assert cos > 1 - 1e-5


def test_retarget_unknown_joints_stay_unknown() -> None:
    drv = dancer_joints(2)
    drv[0, 18] = np.nan                                      # left elbow: the forearm and hand go too
    ref = dancer_joints(1, scale=0.8)[0]
    ref[21] = np.nan                                         # unknown reference length: driving length kept
    out = retarget(drv, ref)
    assert np.isnan(out[0, [18, 20, 22]]).all() and np.isfinite(out[0, 16]).all()
    np.testing.assert_allclose(np.linalg.norm(out[1, 21] - out[1, 19]), np.linalg.norm(drv[1, 21] - drv[1, 19]),
                               rtol=1e-4)


def test_render_with_retarget_draws_the_smaller_skeleton() -> None:
    pose = dancer_pose(2, (256, 448))
    ref = dancer_pose(1, (256, 448))
    ref.body3d[:] = dancer_joints(1, scale=0.6)[:, None]
    plain = render_pose(pose, overlay=False)
    small = render_pose(pose, overlay=False, reference=ref, align=False, retarget=True)
    assert 0 < (small.max(-1) > 0).sum() < 0.8 * (plain.max(-1) > 0).sum()

"""Optional proportion retargeting: the driving pose with the reference person's bone lengths.

No official path has this. Each SMPL bone keeps its direction from the driving frame (the joint
rotations, as far as joint positions define them) and takes its length from the reference pose;
forward kinematics along the SMPL tree from the driving pelvis rebuilds the joints. A small own
FK in numpy (no smplx dependency): with joint positions only, a bone's direction is all the
rotation information there is (twist about the bone does not move joints).
"""

from __future__ import annotations

import numpy as np

from scail.render.skeleton import valid_joints

SMPL_PARENTS: tuple[int, ...] = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
"""Parent of each SMPL-24 joint (0 pelvis is the root); parents come before children."""


def bone_lengths(joints_cam_mm: np.ndarray) -> np.ndarray:
    """(24,) length of the bone ending at each joint (NaN for the root or where a joint is unknown)."""
    ok = valid_joints(joints_cam_mm)
    out = np.full(24, np.nan)
    for j in range(1, 24):
        par = SMPL_PARENTS[j]
        if ok[j] and ok[par]:
            out[j] = float(np.linalg.norm(joints_cam_mm[j].astype(np.float64) - joints_cam_mm[par]))
    return out


def retarget(body3d: np.ndarray, ref_joints_mm: np.ndarray) -> np.ndarray:
    """Re-pose driving joints with reference bone lengths.

    Args:
        body3d: (..., 24, 3) driving SMPL joints, camera mm (NaN/zero where unknown).
        ref_joints_mm: (24, 3) the reference person's SMPL joints.
    Returns (..., 24, 3) float32. A bone whose reference length is unknown keeps its driving
    length; a joint whose driving position (or whose parent) is unknown stays unknown (NaN).
    """
    lengths = bone_lengths(ref_joints_mm)
    src = body3d.astype(np.float64)
    ok = valid_joints(body3d)
    out = np.full_like(src, np.nan)
    out[..., 0, :] = np.where(ok[..., 0, None], src[..., 0, :], np.nan)
    placed = np.zeros_like(ok)
    placed[..., 0] = ok[..., 0]
    for j in range(1, 24):
        par = SMPL_PARENTS[j]
        bone = src[..., j, :] - src[..., par, :]
        norm = np.linalg.norm(bone, axis=-1, keepdims=True)
        length = lengths[j] if np.isfinite(lengths[j]) else None
        step = bone if length is None else bone / np.maximum(norm, 1e-9) * length
        can = ok[..., j] & ok[..., par] & placed[..., par] & (norm[..., 0] > 1e-6 if length is not None else True)
        out[..., j, :] = np.where(can[..., None], out[..., par, :] + step, np.nan)
        placed[..., j] = can
    return out.astype(np.float32)

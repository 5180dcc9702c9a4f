"""MediaPipe landmarks -> the pose schema (SMPL-24 camera mm, OpenPose-18, 68 face, 21+21 hands).

Pure numpy, so it is tested in the main env. The joint definitions were measured against the official
NLF + DWPose render (../shared/research/pose-agreement.md, variant C): SMPL's neck, head and hips
are not MediaPipe landmarks, so they are built from them; and every landmark is "lifted" onto the
camera ray through its 2D landmark, keeping the depth of a rigid fit of the 3D world landmarks.

MediaPipe pose (33): 0 nose, 2 l_eye, 5 r_eye, 7 l_ear, 8 r_ear, 11/12 l/r shoulder, 13/14 elbow,
15/16 wrist, 17/18 pinky, 19/20 index, 23/24 hip, 25/26 knee, 27/28 ankle, 31/32 foot index.
"""

from __future__ import annotations

import numpy as np

NECK_K = 0.3  # neck = mid-shoulder + k (mid-ear - mid-shoulder)
HEAD_K = 0.7  # head = mid-shoulder + k (mid-ear - mid-shoulder)
HIP_WIDTH = 0.65  # SMPL hips sit at 0.65x MediaPipe's hip width ...
HIP_DROP = 0.1  # ... and 0.1 of the hip->shoulder vector lower

# Landmarks used to place the body in depth (nose, ears, shoulders, elbows, wrists, hips, knees, ankles).
FIT_LANDMARKS = np.array([0, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28])

# OpenPose-18 <- MediaPipe 33 (neck, index 1, is the mean of the shoulders).
OP18_FROM_MP = np.array([0, -1, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7])

# 68 iBUG face points <- MediaPipe face mesh (468): jaw (image left -> right), brows, nose bridge,
# nostrils, right eye, left eye, outer lip, inner lip.
FACE68_FROM_MESH = np.array([
    127, 234, 93, 132, 58, 136, 150, 176, 152, 400, 379, 365, 288, 361, 323, 454, 356,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87,
])


def pixels_from_normalized(xy_norm: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """MediaPipe (x/W, y/H) -> pixel-index coordinates (pixel i spans [i, i+1), centre at i)."""
    h, w = size_hw
    return np.stack([xy_norm[..., 0] * w - 0.5, xy_norm[..., 1] * h - 0.5], axis=-1)


def solve_translation(world_mm: np.ndarray, uv_px: np.ndarray, weights: np.ndarray, K: np.ndarray,
                      iters: int = 5) -> np.ndarray | None:
    """Translation t (mm) so that world_mm + t projects onto uv_px through K (robust least squares).

    Args:
        world_mm: (J, 3) 3D landmarks, origin anywhere, camera axes (x right, y down, z forward).
        uv_px: (J, 2) pixel coordinates of the same landmarks.
        weights: (J,) >= 0 confidence of each landmark (0 leaves it out).
    Returns (3,) or None when fewer than 3 landmarks carry weight or the body would sit behind the camera.

    Each landmark gives two equations linear in t: fx tx - (u - cx) tz = (u - cx) Z - fx X (same in y).
    Soft-L1 reweighting (IRLS) keeps one bad landmark from dragging the whole body.
    """
    ok = np.isfinite(world_mm).all(-1) & np.isfinite(uv_px).all(-1) & (weights > 0)
    if ok.sum() < 3:
        return None
    X, uv, w = world_mm[ok], uv_px[ok], weights[ok].astype(np.float64)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    du, dv = uv[:, 0] - cx, uv[:, 1] - cy
    zeros = np.zeros_like(du)
    A = np.concatenate([np.stack([np.full_like(du, fx), zeros, -du], 1),
                        np.stack([zeros, np.full_like(dv, fy), -dv], 1)])         # (2J, 3)
    b = np.concatenate([du * X[:, 2] - fx * X[:, 0], dv * X[:, 2] - fy * X[:, 1]])  # (2J,)
    robust = np.ones(len(b))
    t = np.zeros(3)
    for _ in range(iters):
        sw = np.sqrt(np.concatenate([w, w]) * robust)
        t, *_ = np.linalg.lstsq(A * sw[:, None], b * sw, rcond=None)
        z = X[:, 2] + t[2]
        if np.any(z <= 1.0):
            return None
        res_px = (A @ t - b) / np.concatenate([z, z])                                # ~ reprojection error
        robust = 1.0 / np.sqrt(1.0 + (res_px / 10.0) ** 2)                          # soft-L1, 10 px scale
    return t


def lift_onto_rays(points_mm: np.ndarray, uv_px: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Keep each point's depth, move it onto the camera ray through its 2D landmark. (J,3) -> (J,3)."""
    z = points_mm[:, 2]
    x = (uv_px[:, 0] - K[0, 2]) * z / K[0, 0]
    y = (uv_px[:, 1] - K[1, 2]) * z / K[1, 1]
    lifted = np.stack([x, y, z], -1)
    bad = ~np.isfinite(uv_px).all(-1)
    lifted[bad] = points_mm[bad]
    return lifted


def smpl24_from_mediapipe(lm_mm: np.ndarray) -> np.ndarray:
    """SMPL-24 joints from 33 MediaPipe landmarks, both (.., 3) in camera mm. (33,3) -> (24,3)."""
    L = lm_mm
    ms, me, mh = (L[11] + L[12]) / 2, (L[7] + L[8]) / 2, (L[23] + L[24]) / 2
    up = ms - mh
    neck = ms + NECK_K * (me - ms)
    head = ms + HEAD_K * (me - ms)
    hip_l = mh + HIP_WIDTH * (L[23] - mh) - HIP_DROP * up
    hip_r = mh + HIP_WIDTH * (L[24] - mh) - HIP_DROP * up
    pelvis = (hip_l + hip_r) / 2
    spine = [pelvis + f * (neck - pelvis) for f in (0.25, 0.5, 0.75)]
    J = np.empty((24, 3), dtype=np.float64)
    J[0], J[1], J[2], J[3] = pelvis, hip_l, hip_r, spine[0]
    J[4], J[5], J[6] = L[25], L[26], spine[1]
    J[7], J[8], J[9] = L[27], L[28], spine[2]
    J[10], J[11], J[12] = L[31], L[32], neck
    J[13], J[14], J[15] = (neck + L[11]) / 2, (neck + L[12]) / 2, head
    J[16], J[17], J[18], J[19] = L[11], L[12], L[13], L[14]
    J[20], J[21] = L[15], L[16]
    J[22], J[23] = (L[17] + L[19]) / 2, (L[18] + L[20]) / 2
    return J


def body3d_from_mediapipe(world_m: np.ndarray, uv_px: np.ndarray, visibility: np.ndarray,
                          K: np.ndarray) -> np.ndarray | None:
    """SMPL-24 camera-space joints (mm) from one person's MediaPipe world + image landmarks.

    Args:
        world_m: (33, 3) pose_world_landmarks in metres (hip-centred, y down).
        uv_px: (33, 2) image landmarks in pixel-index coordinates of the normalised frame.
        visibility: (33,) MediaPipe visibility in [0, 1].
    Returns (24, 3) float64, or None when the translation cannot be solved.
    """
    world_mm = world_m.astype(np.float64) * 1000.0
    weights = np.zeros(33)
    weights[FIT_LANDMARKS] = np.clip(visibility[FIT_LANDMARKS], 0.05, 1.0)
    t = solve_translation(world_mm, uv_px, weights, K)
    if t is None:
        return None
    placed = world_mm + t
    return smpl24_from_mediapipe(lift_onto_rays(placed, uv_px, K))


def openpose18_from_mediapipe(xy_norm: np.ndarray, visibility: np.ndarray) -> np.ndarray:
    """OpenPose-18 (x/W, y/H, score) from 33 MediaPipe landmarks (x/W, y/H). -> (18, 3)."""
    out = np.empty((18, 3), dtype=np.float32)
    idx = OP18_FROM_MP.copy()
    idx[1] = 11
    out[:, :2] = xy_norm[idx]
    out[:, 2] = visibility[idx]
    out[1, :2] = (xy_norm[11] + xy_norm[12]) / 2
    out[1, 2] = min(visibility[11], visibility[12])
    return out


def face68_from_mesh(mesh_norm: np.ndarray) -> np.ndarray:
    """68 face points (x/W, y/H, 1) from the 468-point face mesh (x/W, y/H). -> (68, 3)."""
    out = np.ones((68, 3), dtype=np.float32)
    out[:, :2] = mesh_norm[FACE68_FROM_MESH, :2]
    return out


def hand21(hand_norm: np.ndarray) -> np.ndarray:
    """21 hand points (x/W, y/H, 1); MediaPipe's hand order is OpenPose/DWPose order. -> (21, 3)."""
    out = np.ones((21, 3), dtype=np.float32)
    out[:, :2] = hand_norm[:, :2]
    return out

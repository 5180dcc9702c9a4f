"""Skeleton topology and palettes of the official SCAIL-Pose renderer.

The 3D skeleton is 13 capsules between 14 OpenPose-ordered body points taken from the SMPL-24 joints
(research/scail-pose.md §3.1-3.2). The 2D overlay uses the OpenPose head points, the DWPose hand
edges and a subset of the 68 face landmarks (§3.4). Everything here is data plus two small helpers
that turn pose arrays into capsule endpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ----------------------------------------------------------------------------------------------
# 3D skeleton
# ----------------------------------------------------------------------------------------------

SMPL_FOR_OPENPOSE: tuple[int, ...] = (15, 12, 17, 19, 21, 16, 18, 20, 2, 5, 8, 1, 4, 7)
"""SMPL joint feeding each OpenPose point 0..13 (official: head 15 -> "nose" 0, neck 12 -> 1, ...)."""

SKELETON_SMPL_JOINTS: tuple[int, ...] = tuple(sorted(SMPL_FOR_OPENPOSE))
"""The SMPL joints the 3D skeleton needs (DESIGN.md: 1,2,4,5,7,8,12,15,16,17,18,19,20,21)."""

BONES: tuple[tuple[int, int], ...] = (
    (1, 2),    # 0  neck -> R shoulder
    (1, 5),    # 1  neck -> L shoulder
    (2, 3),    # 2  R shoulder -> R elbow
    (3, 4),    # 3  R elbow -> R wrist
    (5, 6),    # 4  L shoulder -> L elbow
    (6, 7),    # 5  L elbow -> L wrist
    (1, 8),    # 6  neck -> R hip
    (8, 9),    # 7  R hip -> R knee
    (9, 10),   # 8  R knee -> R ankle
    (1, 11),   # 9  neck -> L hip
    (11, 12),  # 10 L hip -> L knee
    (12, 13),  # 11 L knee -> L ankle
    (1, 0),    # 12 neck -> head ("nose")
)
"""The 13 drawn bones as (OpenPose start, OpenPose end), indexed like the official `limb_seq`."""

DRAW_ORDER: tuple[int, ...] = (0, 2, 3, 1, 4, 5, 6, 7, 8, 9, 10, 11, 12)
"""official `draw_seq` (bones 13-16 have zero endpoints and are never drawn): the earlier bone wins ties."""

NUM_BONES = len(BONES)

# Base colours (8-bit RGB) per bone index, official palettes (nlf_render.py).
PALETTE_SINGLE: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (0, 255, 255), (255, 85, 0), (255, 170, 0), (0, 170, 255), (0, 85, 255),
    (180, 255, 0), (0, 255, 0), (0, 255, 85), (0, 0, 255), (85, 0, 255), (170, 0, 255), (150, 150, 150),
)
PALETTE_PASTEL: tuple[tuple[int, int, int], ...] = (
    (255, 150, 150), (180, 230, 240), (255, 180, 140), (255, 215, 150), (160, 200, 255), (100, 120, 255),
    (200, 255, 100), (100, 255, 100), (140, 255, 180), (120, 140, 255), (180, 90, 255), (190, 120, 255),
    (210, 210, 210),
)
"""Multi-person mode, first person."""
PALETTE_SATURATED: tuple[tuple[int, int, int], ...] = (
    (255, 20, 20), (0, 230, 255), (255, 60, 0), (255, 110, 0), (0, 130, 255), (0, 70, 255),
    (160, 255, 40), (0, 255, 50), (0, 255, 100), (0, 0, 255), (80, 0, 255), (160, 0, 255), (130, 130, 130),
)
"""Multi-person mode, second person."""


def shader_colors(palette: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """(13, 3) float32 shader colours: official `c / 300 + 0.15` per channel (computed in float64)."""
    return np.array([[c / 300 + 0.15 for c in rgb] for rgb in palette], dtype=np.float64).astype(np.float32)


def palettes_for(num_people: int, multi_person_palettes: bool | None = None) -> list[tuple[tuple[int, int, int], ...]]:
    """The palette of each person.

    One person gets the single-person palette; two or more get pastel / saturated alternately
    (official multi-person mode supports two; further people cycle). `multi_person_palettes`
    forces the choice (the official multi-person path gives a lone person the pastel palette).
    """
    use_multi = num_people > 1 if multi_person_palettes is None else multi_person_palettes
    if not use_multi:
        return [PALETTE_SINGLE] * num_people
    return [(PALETTE_PASTEL, PALETTE_SATURATED)[i % 2] for i in range(num_people)]


def valid_joints(joints_cam_mm: np.ndarray, min_depth_mm: float = 1.0) -> np.ndarray:
    """(..., 24) bool: a joint is drawable when finite, not exactly zero (official "missing"), in front.

    official: a bone is skipped when an endpoint sums to exactly 0; we also skip NaN joints and
    joints at or behind the camera plane (the official tracer cannot hit those, but they would
    still shift its clip-global depth constants).
    """
    finite = np.isfinite(joints_cam_mm).all(axis=-1)
    nonzero = np.where(finite[..., None], joints_cam_mm, 0.0).sum(axis=-1) != 0
    in_front = np.where(finite, joints_cam_mm[..., 2], 0.0) > min_depth_mm
    return finite & nonzero & in_front


@dataclass(frozen=True)
class Capsules:
    """The capsules of a clip, per frame, in official list order (person-major, then DRAW_ORDER).

    starts, ends: (T, K, 3) float32 camera-space mm; colors: (T, K, 3) float32 shader colours;
    valid: (T, K) bool (invalid slots are kept so K is fixed; the renderer ignores them).
    """

    starts: np.ndarray
    ends: np.ndarray
    colors: np.ndarray
    valid: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.starts.shape[0])

    def depth_range(self) -> tuple[float, float] | None:
        """(z_min, z_max) over the endpoints of all drawn capsules of the clip; None if nothing is drawn."""
        if not self.valid.any():
            return None
        z = np.concatenate([self.starts[..., 2][self.valid], self.ends[..., 2][self.valid]])
        return float(z.min()), float(z.max())

    def select(self, frames: slice) -> Capsules:
        return Capsules(self.starts[frames], self.ends[frames], self.colors[frames], self.valid[frames])


def capsules_from_joints(body3d: np.ndarray, palettes: list[tuple[tuple[int, int, int], ...]]) -> Capsules:
    """Capsules from SMPL-24 joints.

    Args:
        body3d: (T, P, 24, 3) camera-space millimetres, NaN (or all-zero) where unknown.
        palettes: one palette per person.
    """
    t, p = body3d.shape[:2]
    op = body3d[:, :, list(SMPL_FOR_OPENPOSE)].astype(np.float32)           # (T, P, 14, 3)
    ok = valid_joints(op)                                                     # (T, P, 14)
    order = np.array(DRAW_ORDER)
    a_idx = np.array([BONES[b][0] for b in DRAW_ORDER])
    b_idx = np.array([BONES[b][1] for b in DRAW_ORDER])
    starts = op[:, :, a_idx].reshape(t, p * NUM_BONES, 3)                     # (T, K, 3)
    ends = op[:, :, b_idx].reshape(t, p * NUM_BONES, 3)
    valid = (ok[:, :, a_idx] & ok[:, :, b_idx]).reshape(t, p * NUM_BONES)
    cols = np.stack([shader_colors(pal)[order] for pal in palettes]) if p else np.zeros((0, NUM_BONES, 3))
    colors = np.broadcast_to(cols.reshape(1, p * NUM_BONES, 3), (t, p * NUM_BONES, 3))
    starts = np.where(valid[..., None], starts, 0.0).astype(np.float32)
    ends = np.where(valid[..., None], ends, 0.0).astype(np.float32)
    return Capsules(starts, ends, np.ascontiguousarray(colors, dtype=np.float32), valid)


# ----------------------------------------------------------------------------------------------
# 2D overlay (official draw_pose(show_body=False, show_cheek=True, dw_hand=True, optimized_face=True))
# ----------------------------------------------------------------------------------------------

HEAD_LINES: tuple[tuple[int, int], ...] = ((0, 14), (14, 16), (0, 15), (15, 17))
"""Nose-eye-ear segments (OpenPose indices)."""
HEAD_LINE_COLORS: tuple[tuple[int, int, int], ...] = ((85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170))
HEAD_DOTS: tuple[int, ...] = (0, 14, 15, 16, 17)
HEAD_DOT_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
HAND_EDGES: tuple[tuple[int, int], ...] = tuple(
    (0 if j == 0 else 1 + 4 * f + j - 1, 1 + 4 * f + j) for f in range(5) for j in range(4)
)
"""20 hand edges: each finger from the wrist (0) outwards, thumb first."""
FACE_DOTS: tuple[int, ...] = (*range(17, 27), *range(36, 68))
"""Eyebrows, eyes and mouth; no jaw line and no nose."""

BODY_SCORE_MIN = 0.3
"""DWPose: a body point is visible when its score is > 0.3 (subset != -1)."""
PART_SCORE_MIN = 0.3
"""DWPose: face and hand points with score < 0.3 are set to -1 (invisible)."""


def hand_edge_colors() -> list[tuple[float, float, float]]:
    """official: matplotlib hsv_to_rgb([e / 20, 1, 1]) * 255 per edge (float, rounded by cv2)."""
    out = []
    for e in range(len(HAND_EDGES)):
        h = e / float(len(HAND_EDGES))
        i = int(h * 6.0)
        f = (h * 6.0) - i
        q, t = 1.0 - f, 1.0 - (1.0 - f)
        rgb = [(1.0, t, 0.0), (q, 1.0, 0.0), (0.0, 1.0, t), (0.0, q, 1.0), (t, 0.0, 1.0), (1.0, 0.0, q)][i % 6]
        out.append((rgb[0] * 255, rgb[1] * 255, rgb[2] * 255))
    return out

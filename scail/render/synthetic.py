"""A synthetic dancing person as pose data, for the benchmark, tests and demos (no model needed).

SMPL-24 joints of a rough adult in camera space (mm; x right, y down, z forward), arms swinging and
the torso turning, plus the 2D points the overlay draws (head, face, hands) projected with K.
"""

from __future__ import annotations

import numpy as np

from scail.pose.schema import PoseData
from scail.render.skeleton import SMPL_FOR_OPENPOSE

# rest pose, person frame (mm, y down, the person faces the camera: its left is +x)
_REST = np.array([
    [0, 0, 0], [85, 70, 0], [-85, 70, 0], [0, -110, 0], [95, 450, 0], [-95, 450, 0], [0, -240, 0],
    [100, 850, 0], [-100, 850, 0], [0, -300, 0], [110, 900, -100], [-110, 900, -100], [0, -500, 0],
    [70, -430, 0], [-70, -430, 0], [0, -600, 0], [170, -450, 0], [-170, -450, 0], [190, -190, 0],
    [-190, -190, 0], [200, 50, 0], [-200, 50, 0], [205, 130, 0], [-205, 130, 0],
], dtype=np.float64)
_ARMS = {16: (18, 20, 22), 17: (19, 21, 23)}


def _rot_z(points: np.ndarray, pivot: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    d = points - pivot
    return pivot + np.stack([c * d[..., 0] - s * d[..., 1], s * d[..., 0] + c * d[..., 1], d[..., 2]], -1)


def _rot_y(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([c * points[..., 0] + s * points[..., 2], points[..., 1], -s * points[..., 0] + c * points[..., 2]], -1)


def dancer_joints(num_frames: int, pelvis_mm: tuple[float, float, float] = (0.0, 150.0, 3500.0),
                  scale: float = 1.0) -> np.ndarray:
    """(T, 24, 3) float32 SMPL joints of a dancing person (arms swing, torso turns)."""
    out = np.zeros((num_frames, 24, 3))
    for t in range(num_frames):
        j = _REST * scale
        phase = 2 * np.pi * t / 24.0
        for shoulder, chain in _ARMS.items():
            sign = -1.0 if shoulder == 16 else 1.0
            j[list(chain)] = _rot_z(j[list(chain)], j[shoulder], sign * (0.9 + 0.7 * np.sin(phase + sign)))
            j[list(chain[1:])] = _rot_z(j[list(chain[1:])], j[chain[0]], sign * 0.6 * np.sin(2 * phase))
        j[[5, 8, 11]] = _rot_z(j[[5, 8, 11]], j[2], -0.25 * max(0.0, np.sin(phase)))
        out[t] = _rot_y(j, 0.35 * np.sin(phase / 2)) + np.asarray(pelvis_mm)
    return out.astype(np.float32)


def _project(points: np.ndarray, K: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    h, w = size_hw
    u = K[0, 0] * points[..., 0] / points[..., 2] + K[0, 2]
    v = K[1, 1] * points[..., 1] / points[..., 2] + K[1, 2]
    return np.stack([u / w, v / h], -1)


def dancer_pose(num_frames: int = 16, size_hw: tuple[int, int] = (512, 896), num_people: int = 1,
                fps: float = 16.0) -> PoseData:
    """Pose data of `num_people` synthetic dancers side by side, with the 2D overlay points filled."""
    pose = PoseData.empty(num_frames, num_people, size_hw, fps=fps, backend="synthetic")
    K = pose.K
    for p in range(num_people):
        x = (p - (num_people - 1) / 2) * 900.0
        joints = dancer_joints(num_frames, pelvis_mm=(x, 150.0, 3500.0 + 600.0 * p))
        pose.body3d[:, p] = joints
        head = joints[:, 15].astype(np.float64)
        nose = head + np.array([0.0, 20.0, -90.0])
        offsets = np.array([[-35.0, -10.0, -80.0], [35.0, -10.0, -80.0], [-75.0, 0.0, 0.0], [75.0, 0.0, 0.0]])
        eyes_ears = head[:, None] + offsets                                     # (T, 4, 3)
        body = np.zeros((num_frames, 18, 2))
        body[:, :14] = _project(joints[:, list(SMPL_FOR_OPENPOSE)].astype(np.float64), K, size_hw)
        body[:, 0] = _project(nose, K, size_hw)
        body[:, 14:18] = _project(eyes_ears, K, size_hw)
        pose.body2d[:, p, :, :2] = body
        pose.body2d[:, p, :, 2] = 1.0
        ang = np.linspace(0, 2 * np.pi, 68, endpoint=False)
        face = head[:, None] + np.stack([60 * np.cos(ang), 75 * np.sin(ang) + 10, np.full(68, -85.0)], -1)
        pose.face2d[:, p, :, :2] = _project(face, K, size_hw)
        pose.face2d[:, p, :, 2] = 1.0
        for side, (wrist, hand_end) in enumerate(((20, 22), (21, 23))):
            base = joints[:, wrist].astype(np.float64)
            axis = joints[:, hand_end].astype(np.float64) - base
            pts = [base]
            for finger in range(5):
                spread = (finger - 2) * 0.35
                for k in range(1, 5):
                    rot = _rot_z(axis[:, None], np.zeros(3), spread)[:, 0]
                    pts.append(base + rot * (0.45 * k))
            pose.hands2d[:, p, side, :, :2] = _project(np.stack(pts, 1), K, size_hw)
            pose.hands2d[:, p, side, :, 2] = 1.0
    return pose.validate("synthetic pose")

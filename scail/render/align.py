"""Official alignment of the driving skeleton to the reference image (rendered_aligned.mp4).

SCAIL-Pose `process_pose.py --use_align` (research/scail-pose.md §5, fixtures/scail-align/README.md)
keeps the driving 3D joints and changes only the camera: K_new = [[f m, 0, W/2 + p], [0, f m s, H/2 + q]],
fitted on driving frame 0 to the reference image's 2D body keypoints. The 2D overlay then follows:
faces scaled by a face-size ratio, faces and head points shifted with the head joint, hands shifted
with the wrists and scaled by (m, m s) about their wrist keypoint.

The official fit is scipy L-BFGS-B on a convex quadratic; we solve the same objective exactly
(active-set enumeration over its 8 linear constraints), which agrees with the official result to
~1e-6 (its own tolerance). Fixed official quirks, none of which changes the fixture pixels:

* the neck joins the fit set only when the reference shows it (official: always, even invisible);
* the fit uses the first frame whose driving person has enough 3D joints (official: frame 0, and
  it crashes when frame 0 has no detection);
* invisible face landmarks do not enter the face-size ratio (official: their -1 coordinates do).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import numpy as np

from scail.render.overlay import visible
from scail.render.skeleton import BODY_SCORE_MIN, PART_SCORE_MIN, SMPL_FOR_OPENPOSE, valid_joints

log = logging.getLogger(__name__)

UPPER = (0, 2, 3, 5, 6)
"""Head, shoulders, elbows (OpenPose indices): the "Align body" fit set, with the neck."""
LOWER = (9, 10, 12, 13)
"""Knees and ankles: the "Align feet" fit set (with the neck) when all four are usable."""
NECK = 1
FACE_CENTER = 30
"""Face landmark the face scale is measured from and applied about (nose tip)."""
SMPL_HEAD, SMPL_LWRIST, SMPL_RWRIST = 15, 20, 21


@dataclass(frozen=True)
class AlignBounds:
    """Bounds of the fit (official values are the defaults)."""

    scale: tuple[float, float] = (0.7, 1.4)
    """m: uniform scale of the focal length."""
    stretch: tuple[float, float] = (0.8, 1.15)
    """s: extra vertical scale (fy = f m s)."""
    shift_frac: float = 1.0
    """|p| <= shift_frac W and |q| <= shift_frac H."""
    face_scale: tuple[float, float] = (0.8, 1.5)
    """Clip of the reference/driving face-size ratio."""


@dataclass(frozen=True)
class Alignment:
    """A fitted alignment: the new intrinsics and how the 2D overlay follows them."""

    m: float
    s: float
    p: float
    q: float
    K: np.ndarray
    """(3, 3) float64 intrinsics the aligned frames are rendered with."""
    branch: str
    """"feet" or "body" (which official solver objective was used)."""
    fit_indices: tuple[int, ...]
    """OpenPose indices of the fit points, neck first when used."""
    fit_frame: int
    face_scale: float
    active_bounds: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, object]:
        """JSON-serialisable summary (manifest notes)."""
        return {"m": self.m, "s": self.s, "p": self.p, "q": self.q, "K": self.K.tolist(), "branch": self.branch,
                "fit_indices": list(self.fit_indices), "fit_frame": self.fit_frame, "face_scale": self.face_scale,
                "active_bounds": list(self.active_bounds), "warnings": list(self.warnings)}


# ----------------------------------------------------------------------------------------------
# The camera fit
# ----------------------------------------------------------------------------------------------


def _solve_qp(a: np.ndarray, bx: np.ndarray, b: np.ndarray, by: np.ndarray, wts: np.ndarray,
              bounds: AlignBounds, size_hw: tuple[int, int]) -> tuple[float, float, float, float]:
    """Exact minimiser of sum_i w_i [(bx_i - m a_i - p)^2 + (by_i - k b_i - q)^2] over z = (m, p, k, q).

    Subject to m in scale, k / m in stretch (k = m s, linear since m > 0), |p| <= W f, |q| <= H f.
    """
    h, w = size_hw
    n = len(a)
    rows = np.zeros((2 * n, 4))
    rows[:n, 0], rows[:n, 1] = a, 1.0
    rows[n:, 2], rows[n:, 3] = b, 1.0
    rhs = np.concatenate([bx, by])
    sw = np.sqrt(np.concatenate([wts, wts]))
    A, y = rows * sw[:, None], rhs * sw
    Q, c = 2 * A.T @ A, -2 * A.T @ y

    def objective(z: np.ndarray) -> float:
        return float(np.sum((A @ z - y) ** 2))

    (m_lo, m_hi), (s_lo, s_hi), f = bounds.scale, bounds.stretch, bounds.shift_frac
    # each constraint pair: (row g, lower value, upper value) for g . z
    pairs = [
        (np.array([1.0, 0, 0, 0]), m_lo, m_hi),
        (np.array([0, 1.0, 0, 0]), -w * f, w * f),
        (np.array([0, 0, 0, 1.0]), -h * f, h * f),
    ]
    stretch = [(np.array([-s_lo, 0, 1.0, 0]), 0.0), (np.array([-s_hi, 0, 1.0, 0]), 0.0)]

    def feasible(z: np.ndarray) -> bool:
        tol = 1e-9
        ok = all(lo - tol * max(1, abs(lo)) <= g @ z <= hi + tol * max(1, abs(hi)) for g, lo, hi in pairs)
        return ok and stretch[0][0] @ z >= -tol and stretch[1][0] @ z <= tol

    best: tuple[float, np.ndarray] | None = None
    for choice in itertools.product(range(3), repeat=4):
        eq_rows, eq_vals = [], []
        for (g, lo, hi), ch in zip(pairs, choice[:3], strict=True):
            if ch:
                eq_rows.append(g)
                eq_vals.append(lo if ch == 1 else hi)
        if choice[3]:
            g, v = stretch[choice[3] - 1]
            eq_rows.append(g)
            eq_vals.append(v)
        k = len(eq_rows)
        kkt = np.zeros((4 + k, 4 + k))
        kkt[:4, :4] = Q
        rhs_k = np.concatenate([-c, np.array(eq_vals, dtype=np.float64)])
        if k:
            C = np.stack(eq_rows)
            kkt[:4, 4:], kkt[4:, :4] = C.T, C
        z = np.linalg.lstsq(kkt, rhs_k, rcond=None)[0][:4]
        if feasible(z):
            val = objective(z)
            if best is None or val < best[0] - 1e-12 * max(1.0, abs(val)):
                best = (val, z)
    if best is None:                                                               # cannot happen: corners are feasible
        return 1.0, 1.0, 0.0, 0.0
    m, p, k_, q = best[1]
    return float(m), float(k_ / m), float(p), float(q)


def _first_fit_frame(j14: np.ndarray) -> int:
    """First frame whose person has at least two valid body points (official: always frame 0)."""
    ok = valid_joints(j14).sum(-1)                                                 # (T,)
    good = np.nonzero(ok >= 2)[0]
    return int(good[0]) if good.size else 0


def fit_alignment(body3d: np.ndarray, face2d: np.ndarray, ref_body2d: np.ndarray, ref_face2d: np.ndarray,
                  K: np.ndarray, size_hw: tuple[int, int], bounds: AlignBounds | None = None) -> Alignment | None:
    """Fit the official alignment of a driving person to a reference person.

    Args:
        body3d: (T, 24, 3) driving SMPL joints, camera mm (the person to align, official: person 0).
        face2d: (T, 68, 3) that person's face landmarks (x/W, y/H, score).
        ref_body2d: (18, 3) reference OpenPose-18 keypoints (x/W, y/H, score).
        ref_face2d: (68, 3) reference face landmarks.
        K: (3, 3) the original intrinsics (f = K[0, 0]).
    Returns None when nothing can be fitted (no visible reference body or no driving 3D).
    """
    bounds = bounds or AlignBounds()
    h, w = size_hw
    f = float(K[0, 0])
    warnings: list[str] = []
    j14 = body3d[:, list(SMPL_FOR_OPENPOSE)].astype(np.float32)                    # (T, 14, 3)
    frame = _first_fit_frame(j14)
    if frame:
        warnings.append(f"driving frame 0 has no usable 3D body; alignment fitted on frame {frame}")
    jf = j14[frame]
    ref_vis = visible(ref_body2d[:14], BODY_SCORE_MIN, strict=True)
    usable = ref_vis & valid_joints(jf)
    lower = [i for i in LOWER if usable[i]]
    upper = [i for i in UPPER if usable[i]]
    branch = "feet" if len(lower) == len(LOWER) else "body"
    rest = lower if branch == "feet" else upper
    use_neck = bool(usable[NECK])
    idx = ([NECK] if use_neck else []) + rest
    if len(idx) < 2:
        log.warning("alignment skipped: the reference shows %d usable body points (need 2)", len(idx))
        return None
    if branch == "body" and valid_joints(jf)[list(LOWER)].all():
        warnings.append("the reference looks like a half-body shot (knees/ankles not visible): the official "
                        "alignment then fits shoulders and elbows only and often misplaces the legs; consider "
                        "render.align=false or a full-body reference")
    if not use_neck:
        warnings.append("the reference neck is not visible; it was left out of the alignment fit")
    # official weights: feet e0 + 4 e, body 8 e0 + e (e0: the neck term)
    head_w, rest_w = (1.0, 4.0) if branch == "feet" else (8.0, 1.0)
    wts = np.array(([head_w] if use_neck else []) + [rest_w] * len(rest))
    pts = jf[idx].astype(np.float64)
    ref_px = ref_body2d[idx, :2].astype(np.float64) * np.array([w, h])
    a = f * pts[:, 0] / pts[:, 2]
    b = f * pts[:, 1] / pts[:, 2]
    m, s, p, q = _solve_qp(a, ref_px[:, 0] - w / 2, b, ref_px[:, 1] - h / 2, wts, bounds, size_hw)
    active = []
    for name, val, (lo, hi) in (("scale", m, bounds.scale), ("stretch", s, bounds.stretch)):
        if min(abs(val - lo), abs(val - hi)) < 1e-7:
            active.append(name)
    if active:
        warnings.append(f"alignment hit its {' and '.join(active)} bound (m={m:.3f}, s={s:.3f}); the reference "
                        "pose or proportions differ a lot from the driving frame")
    K_new = np.array([[f * m, 0.0, w / 2 + p], [0.0, f * m * s, h / 2 + q], [0.0, 0.0, 1.0]])
    fs = face_scale(face2d[frame], ref_face2d, bounds.face_scale)
    return Alignment(m, s, p, q, K_new, branch, tuple(idx), frame, fs, tuple(active), tuple(warnings))


def face_scale(face: np.ndarray, ref_face: np.ndarray, clip: tuple[float, float]) -> float:
    """Clipped ratio of the reference to the driving mean landmark distance from landmark 30 (official)."""

    def spread(pts: np.ndarray) -> float | None:
        vis = visible(pts, PART_SCORE_MIN, strict=False)
        if not vis[FACE_CENTER]:
            return None
        others = np.delete(np.arange(len(pts)), FACE_CENTER)
        others = others[vis[others]]
        if others.size < 10:
            return None
        xy = pts[:, :2].astype(np.float64)
        return float(np.mean(np.linalg.norm(xy[others] - xy[FACE_CENTER], axis=1)))

    d, d_ref = spread(face), spread(ref_face)
    if d is None or d_ref is None or d < 1e-6:
        return 1.0
    return float(np.clip(d_ref / d, clip[0], clip[1]))


# ----------------------------------------------------------------------------------------------
# The 2D overlay follows the new camera
# ----------------------------------------------------------------------------------------------


def _delta_px(joint: np.ndarray, K_new: np.ndarray, K: np.ndarray) -> np.ndarray:
    """official p3d_single_p2d(J, K_new) - p3d_single_p2d(J, K), float32 as in the official torch code."""
    if not (np.isfinite(joint).all() and joint[2] > 0.01):
        return np.zeros(2, np.float32)
    x, y, z = (np.float32(v) for v in joint)

    def proj(k: np.ndarray) -> np.ndarray:
        u = np.float32(k[0, 0]) * x / z + np.float32(k[0, 2])
        v = np.float32(k[1, 1]) * y / z + np.float32(k[1, 2])
        return np.array([u, v], np.float32)

    return proj(K_new) - proj(K)


def align_overlay(body3d: np.ndarray, body2d: np.ndarray, face2d: np.ndarray, hands2d: np.ndarray,
                  alignment: Alignment, K: np.ndarray, size_hw: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Move one person's 2D overlay with the new camera (official order: face scale, shift, hand scale).

    Args:
        body3d: (T, 24, 3) SMPL joints; body2d (T, 18, 3), face2d (T, 68, 3), hands2d (T, 2, 21, 3).
    Returns aligned copies (body2d, face2d, hands2d); scores are unchanged.
    """
    h, w = size_hw
    body, face, hands = body2d.astype(np.float64), face2d.astype(np.float64), hands2d.astype(np.float64)
    fs = alignment.face_scale
    for t in range(body3d.shape[0]):
        # official scale_faces: about this frame's landmark 30 / nose, by the face-size ratio
        # (a centre without coordinates leaves the points unscaled; official would use its -1 coordinates)
        for arr, c in ((face[t], FACE_CENTER), (body[t], 0)):
            if np.isfinite(arr[c, :2]).all():
                arr[:, :2] = (arr[:, :2] - arr[c, :2]) * fs + arr[c, :2]
        # official shift_dwpose_according_to_nlf: head delta for face and body, wrist deltas for hands
        d_head = _delta_px(body3d[t, SMPL_HEAD], alignment.K, K)
        for arr in (face[t], body[t]):
            arr[:, 0] += d_head[0] / np.float32(w)
            arr[:, 1] += d_head[1] / np.float32(h)
        for side, joint in ((0, SMPL_LWRIST), (1, SMPL_RWRIST)):
            d = _delta_px(body3d[t, joint], alignment.K, K)
            hand = hands[t, side]
            hand[:, 0] += d[0] / np.float32(w)
            hand[:, 1] += d[1] / np.float32(h)
            if not np.isfinite(hand[0, :2]).all():
                continue
            for dim, scale in ((0, alignment.m), (1, alignment.m * alignment.s)):
                hand[:, dim] = (hand[:, dim] - hand[0, dim]) * scale + hand[0, dim]
    return body, face, hands

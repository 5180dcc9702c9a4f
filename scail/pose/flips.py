"""Left/right and front/back flips over time: find the labelling of each person that is continuous.

Pose estimators decide per frame which side of the body is the left one. When a person faces the
camera squarely, or turns side-on, they sometimes get it wrong for a few frames: MediaPipe on
examples/001 labels frames 15-21 with the whole body mirrored (the left arm drawn in the right
arm's colours, the skeleton facing away, the face lost). SCAIL reads the skeleton's colours as the
character's sides, so such a burst turns the animated character around for half a second.

A mislabelled frame is one of three alternatives of what the detector saw (`Variant`):

* SWAP: the left/right labels exchanged, the points where they are (a 2D mislabel carried into 3D);
* SWAP_MIRROR: labels exchanged and the depths mirrored about the pelvis (the detector took a
  person facing the camera for one seen from behind: same 2D picture, opposite facing);
* MIRROR: depths mirrored about the pelvis, labels kept (a 3D front/back confusion).

Every alternative keeps the 2D picture (MIRROR moves points along their camera rays), so only
time can tell them apart: a real person moves little between two frames at 16 fps, and a real
turn is gradual in 3D (a 180-degree turn over 2 s is about 6 degrees per frame), while a flip
jumps the whole skeleton at once. `fix_flips` picks, per person, the sequence of variants that
minimises (Viterbi over the frames where the person was seen)

    sum over frames of   prior(variant)                       keeping what the detector said is cheap
                       + evidence(variant)                    a visible face means facing the camera;
                                                              toes point the way the body faces
    + sum over pairs of  3D joint motion (root-relative, mm)  continuity in 3D ...
                       + 2D keypoint motion (mm at the body)  ... and in 2D (labels follow points)
                       + facing change (degrees)              the facing direction changes smoothly

The prior makes a whole-clip relabelling lose against the detector unless continuity or evidence
pays for it, so a real turn (continuous as detected) is never undone. Hands then follow the
corrected wrists (each hand array goes to the wrist it is nearest). Pure numpy on the pose arrays,
after any backend: the pose stage runs it in the parent before gaps are filled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from scail.pose.schema import PoseData

SMPL_LR_PAIRS = ((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21), (22, 23))
"""SMPL-24 left/right joint pairs (hips, knees, ankles, feet, collars, shoulders, elbows, wrists, hands)."""
OP18_LR_PAIRS = ((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13), (14, 15), (16, 17))
"""OpenPose-18 right/left keypoint pairs (shoulders, elbows, wrists, hips, knees, ankles, eyes, ears)."""

_PELVIS, _NECK, _L_SHOULDER, _R_SHOULDER, _L_HIP, _R_HIP = 0, 12, 16, 17, 1, 2
_FEET = ((7, 10), (8, 11))  # (ankle, foot) per side
_OP_WRIST = (7, 4)  # OpenPose-18 left, right wrist (hands2d order: left, right)
_SCORE_MIN = 0.3
_FACE_MIN_POINTS = 20


class Variant(IntEnum):
    """How a frame's labelling is changed (see the module docstring)."""

    KEEP = 0
    SWAP = 1
    SWAP_MIRROR = 2
    MIRROR = 3

    @property
    def swaps(self) -> bool:
        return self in (Variant.SWAP, Variant.SWAP_MIRROR)

    @property
    def mirrors(self) -> bool:
        return self in (Variant.SWAP_MIRROR, Variant.MIRROR)


@dataclass(frozen=True)
class FlipCosts:
    """Weights of the terms (all in millimetre-equivalents per frame; see the module docstring).

    The priors are per frame: a burst of k flipped frames is undone when its two jumps cost more
    than k x prior, so the detector is overruled only for bursts it got wrong, not for a clip.
    """

    prior: tuple[float, float, float, float] = (0.0, 25.0, 25.0, 40.0)
    face: float = 60.0
    """A visible face, per frame, against a skeleton that faces away (scaled by how far away)."""
    toes: float = 40.0
    """Toes pointing backwards, per frame (scaled by the cosine)."""
    weight_2d: float = 1.0
    per_degree: float = 1.0


@dataclass
class FlipReport:
    """What `fix_flips` changed: per track id, the frames relabelled and how."""

    changed: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    def frames(self, track_id: int | str) -> list[int]:
        per = self.changed.get(str(track_id), {})
        return sorted(i for frames in per.values() for i in frames)

    def to_json(self) -> dict[str, dict[str, list[int]]]:
        return {t: {k: list(v) for k, v in per.items()} for t, per in self.changed.items()}


def _perm(n: int, pairs: tuple[tuple[int, int], ...]) -> np.ndarray:
    idx = np.arange(n)
    for a, b in pairs:
        idx[a], idx[b] = b, a
    return idx


SMPL_SWAP = _perm(24, SMPL_LR_PAIRS)
OP18_SWAP = _perm(18, OP18_LR_PAIRS)


def mirror_depth(joints: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Mirror (..., 24, 3) camera-space joints in depth about the pelvis, each along its camera ray.

    The 2D projection of every joint is unchanged: z' = 2 z_pelvis - z, then (x, y) are scaled by
    z'/z (with the principal point as origin). Depths that would reach the camera are clamped.
    """
    j = np.asarray(joints, np.float64)
    z = j[..., 2]
    zc = j[..., _PELVIS:_PELVIS + 1, 2]
    z2 = np.maximum(2 * zc - z, 0.05 * np.abs(zc) + 1.0)
    cx, cy, fx, fy = K[0, 2], K[1, 2], K[0, 0], K[1, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        u = j[..., 0] / z * fx + cx
        v = j[..., 1] / z * fy + cy
    return np.stack([(u - cx) * z2 / fx, (v - cy) * z2 / fy, z2], -1)


def variants_3d(joints: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N, 24, 3) -> (4, N, 24, 3): the joints under each `Variant`."""
    j = np.asarray(joints, np.float64)
    m = mirror_depth(j, K)
    return np.stack([j, j[:, SMPL_SWAP], m[:, SMPL_SWAP], m])


def facing(joints: np.ndarray) -> np.ndarray:
    """(..., 24, 3) -> (..., 3) unit facing direction (camera axes: toward the camera is -z).

    The body's left-to-right axis (shoulders and hips) crossed with its up axis (pelvis -> neck).
    NaN where the joints are missing or degenerate.
    """
    j = np.asarray(joints, np.float64)
    lateral = (j[..., _L_SHOULDER, :] - j[..., _R_SHOULDER, :]) + (j[..., _L_HIP, :] - j[..., _R_HIP, :])
    up = j[..., _NECK, :] - j[..., _PELVIS, :]
    f = np.cross(lateral, up)
    n = np.linalg.norm(f, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 1e-6, f / n, np.nan)


def yaw_degrees(joints: np.ndarray) -> np.ndarray:
    """(..., 24, 3) -> (...,) the facing direction's angle about the vertical: 0 faces the camera,
    +-180 faces away (for inspecting a clip's turns)."""
    f = facing(joints)
    return np.degrees(np.arctan2(f[..., 0], -f[..., 2]))


def _toes_backward(joints: np.ndarray) -> np.ndarray:
    """(N, 24, 3) -> (N,) in [0, 1]: how much the feet point against the facing direction."""
    f = facing(joints)
    up = joints[:, _NECK] - joints[:, _PELVIS]
    up = up / np.maximum(np.linalg.norm(up, axis=-1, keepdims=True), 1e-6)
    toes = sum(joints[:, foot] - joints[:, ankle] for ankle, foot in _FEET)
    toes = toes - (toes * up).sum(-1, keepdims=True) * up  # horizontal part
    f_h = f - (f * up).sum(-1, keepdims=True) * up
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (toes * f_h).sum(-1) / (np.linalg.norm(toes, axis=-1) * np.linalg.norm(f_h, axis=-1))
    return np.nan_to_num(np.clip(-cos, 0.0, 1.0))


def _face_visible(face2d: np.ndarray) -> np.ndarray:
    """(N, 68, 3) -> (N,) bool: enough confident face landmarks (a face seen from the front)."""
    ok = np.isfinite(face2d[..., :2]).all(-1) & (np.nan_to_num(face2d[..., 2]) >= _SCORE_MIN)
    return ok.sum(-1) >= _FACE_MIN_POINTS


def _centred_2d(body2d: np.ndarray, size_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 18, 3) -> pixel points relative to each frame's centroid (N, 18, 2), validity (N, 18)."""
    h, w = size_hw
    ok = np.isfinite(body2d[..., :2]).all(-1) & (np.nan_to_num(body2d[..., 2]) >= _SCORE_MIN)
    px = np.where(ok[..., None], body2d[..., :2] * np.array([w, h]), np.nan)
    with np.errstate(invalid="ignore"):
        centre = np.nanmean(px, axis=1, keepdims=True)
    return px - centre, ok


def _mean_norm(d: np.ndarray) -> np.ndarray:
    """Mean over the joint axis (-2) of the norms of (..., J, C) differences, ignoring NaN (inf if none)."""
    n = np.linalg.norm(d, axis=-1)
    valid = np.isfinite(n)
    cnt = valid.sum(-1)
    return np.where(cnt > 0, np.where(valid, n, 0.0).sum(-1) / np.maximum(cnt, 1), np.inf)


def unary_costs(pose: PoseData, person: int, frames: np.ndarray, costs: FlipCosts) -> np.ndarray:
    """(len(frames), 4): prior + evidence of each variant in each frame."""
    v3 = variants_3d(pose.body3d[frames, person], pose.K)                         # (4, T, 24, 3)
    face = _face_visible(pose.face2d[frames, person])                               # (T,)
    out = np.tile(np.asarray(costs.prior, np.float64), (len(frames), 1))
    for v in Variant:
        f = facing(v3[v])
        away = np.nan_to_num(np.clip(f[:, 2], 0.0, 1.0))                            # 1 = back to the camera
        out[:, v] += costs.face * face * away + costs.toes * _toes_backward(v3[v])
    return out


def pairwise_costs(pose: PoseData, person: int, frames: np.ndarray, costs: FlipCosts) -> np.ndarray:
    """(len(frames) - 1, 4, 4): cost of variant a at frames[k] followed by variant b at frames[k+1]."""
    j = pose.body3d[frames, person].astype(np.float64)
    v3 = variants_3d(j, pose.K)
    rel = v3 - v3[:, :, _PELVIS:_PELVIS + 1]                                        # root-relative
    fac = facing(v3)                                                                # (4, T, 3)
    p2, _ = _centred_2d(pose.body2d[frames, person], pose.size)
    v2 = np.stack([p2, p2[:, OP18_SWAP]])                                          # (2, T, 18, 2): keep, swap
    mm_per_px = np.abs(j[:, _PELVIS, 2]) / pose.K[0, 0]                             # (T,)
    gap = np.maximum(np.diff(frames), 1).astype(np.float64)                         # (T-1,)
    out = np.zeros((len(frames) - 1, 4, 4))
    for a in Variant:
        for b in Variant:
            d3 = _mean_norm(rel[b, 1:] - rel[a, :-1])
            d2 = _mean_norm(v2[int(b.swaps), 1:] - v2[int(a.swaps), :-1]) * mm_per_px[1:]
            d2 = np.where(np.isfinite(d2), d2, 0.0)
            cos = np.clip((fac[a, :-1] * fac[b, 1:]).sum(-1), -1.0, 1.0)
            turn = np.nan_to_num(np.degrees(np.arccos(cos)))
            out[:, a, b] = (d3 + costs.weight_2d * d2 + costs.per_degree * turn) / gap
    return out


def viterbi(unary: np.ndarray, pairwise: np.ndarray) -> np.ndarray:
    """Lowest-cost state sequence: unary (T, S), pairwise (T-1, S, S) -> (T,) int."""
    t_len, s = unary.shape
    acc = unary[0].copy()
    back = np.zeros((t_len, s), np.int64)
    for t in range(1, t_len):
        total = acc[:, None] + pairwise[t - 1]                                       # (S prev, S next)
        back[t] = np.argmin(total, axis=0)
        acc = total[back[t], np.arange(s)] + unary[t]
    path = np.zeros(t_len, np.int64)
    path[-1] = int(np.argmin(acc))
    for t in range(t_len - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def choose_variants(pose: PoseData, person: int, costs: FlipCosts | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The frames where `person` has 3D joints and the variant chosen for each."""
    costs = costs or FlipCosts()
    seen = np.flatnonzero(np.isfinite(pose.body3d[:, person, [_PELVIS, _NECK, _L_SHOULDER, _R_SHOULDER,
                                                                _L_HIP, _R_HIP]]).all(axis=(1, 2)))
    if len(seen) == 0:
        return seen, np.zeros(0, np.int64)
    unary = unary_costs(pose, person, seen, costs)
    if len(seen) == 1:
        return seen, np.zeros(1, np.int64)  # nothing to be continuous with: trust the detector
    return seen, viterbi(unary, pairwise_costs(pose, person, seen, costs))


def _apply(pose: PoseData, person: int, frame: int, variant: Variant) -> None:
    if variant.mirrors:
        pose.body3d[frame, person] = mirror_depth(pose.body3d[frame, person], pose.K).astype(np.float32)
    if variant.swaps:
        pose.body3d[frame, person] = pose.body3d[frame, person][SMPL_SWAP]
        pose.body2d[frame, person] = pose.body2d[frame, person][OP18_SWAP]
        pose.hands2d[frame, person] = pose.hands2d[frame, person][::-1].copy()


def match_hands(pose: PoseData, person: int) -> list[int]:
    """Give each hand array to the body wrist it is nearest to (hands follow the corrected body).

    Returns the frames where the two hands were exchanged. A frame needs both body wrists and at
    least one hand; the exchange happens only when the crossed pairing is clearly closer.
    """
    h, w = pose.size
    scale = np.array([w, h])
    swapped = []
    for i in range(pose.num_frames):
        body = pose.body2d[i, person]
        wrists = body[list(_OP_WRIST), :2] * scale                                   # (2, 2) left, right
        if not np.isfinite(wrists).all():
            continue
        hands = pose.hands2d[i, person, :, 0, :2] * scale                             # (2, 2) hand roots
        d = np.linalg.norm(hands[:, None] - wrists[None], axis=-1)                     # (hand, wrist)
        straight = np.nansum([d[0, 0], d[1, 1]]) if np.isfinite(np.diag(d)).any() else np.inf
        crossed = np.nansum([d[0, 1], d[1, 0]]) if np.isfinite(np.diag(d[:, ::-1])).any() else np.inf
        if crossed < 0.5 * straight:
            pose.hands2d[i, person] = pose.hands2d[i, person][::-1].copy()
            swapped.append(i)
    return swapped


def fix_flips(pose: PoseData, costs: FlipCosts | None = None) -> FlipReport:
    """Relabel every person's flipped frames in place (see the module docstring); report what changed."""
    report = FlipReport()
    for p in range(pose.num_people):
        frames, path = choose_variants(pose, p, costs)
        per: dict[str, list[int]] = {}
        for i, v in zip(frames.tolist(), path.tolist(), strict=True):
            if v != Variant.KEEP:
                _apply(pose, p, i, Variant(v))
                per.setdefault(Variant(v).name.lower(), []).append(i)
        hands = match_hands(pose, p)
        if hands:
            per["hands"] = hands
        if per:
            report.changed[str(int(pose.track_id[p]))] = per
    return report


def flip_rate(yaw_deg: np.ndarray) -> float:
    """Largest facing change between consecutive frames, in degrees (a flip is ~180, a turn < 30)."""
    d = np.abs((np.diff(yaw_deg) + 180.0) % 360.0 - 180.0)
    d = d[np.isfinite(d)]
    return float(d.max()) if len(d) else 0.0


__all__ = ["FlipCosts", "FlipReport", "Variant", "choose_variants", "facing", "fix_flips", "flip_rate",
           "match_hands", "mirror_depth", "variants_3d", "yaw_degrees"]

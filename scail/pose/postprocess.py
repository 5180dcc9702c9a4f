"""Temporal clean-up of pose tracks: short gaps filled by interpolation, optional One-Euro smoothing.

Both work on a (N, ...) array per person, with NaN marking frames where the person was not found.
Gaps longer than `max_gap` frames stay NaN (the renderer draws nothing there) and are reported.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from scail.pose.schema import PoseData


def fill_gaps(x: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Linearly interpolate NaN runs of at most `max_gap` frames that have data on both sides.

    Args:
        x: (N, ...) float; a frame counts as missing when all its values are NaN.
    Returns the filled copy and a (N,) bool mask of the frames that were filled.
    """
    out = x.copy()
    n = x.shape[0]
    flat = out.reshape(n, -1)
    present = ~np.isnan(flat).all(axis=1)
    filled = np.zeros(n, dtype=bool)
    if max_gap <= 0 or present.sum() < 2:
        return out, filled
    idx = np.flatnonzero(present)
    for a, b in itertools.pairwise(idx):
        gap = b - a - 1
        if 0 < gap <= max_gap:
            for k in range(1, gap + 1):
                w = k / (gap + 1)
                flat[a + k] = (1 - w) * flat[a] + w * flat[b]
            filled[a + 1:b] = True
    return out, filled


class OneEuroFilter:
    """The One-Euro filter (Casiez et al. 2012) over arrays: adaptive low-pass, less lag when moving fast."""

    def __init__(self, fps: float, min_cutoff_hz: float = 3.0, beta: float = 0.01, d_cutoff_hz: float = 1.0):
        self.fps, self.min_cutoff, self.beta, self.d_cutoff = fps, min_cutoff_hz, beta, d_cutoff_hz

    @staticmethod
    def _alpha(cutoff_hz: float | np.ndarray, fps: float) -> float | np.ndarray:
        tau = 1.0 / (2 * math.pi * cutoff_hz)
        return 1.0 / (1.0 + tau * fps)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Filter (N, ...) along axis 0; NaN frames pass through and restart the filter."""
        out = x.copy()
        prev: np.ndarray | None = None
        dprev: np.ndarray | None = None
        for i in range(x.shape[0]):
            cur = x[i]
            if np.isnan(cur).all():
                prev = dprev = None
                continue
            if prev is None or dprev is None:
                prev, dprev = cur.copy(), np.zeros_like(cur)
                continue
            d = (cur - prev) * self.fps
            a_d = self._alpha(self.d_cutoff, self.fps)
            dhat = a_d * d + (1 - a_d) * dprev
            cutoff = self.min_cutoff + self.beta * np.abs(dhat)
            a = self._alpha(cutoff, self.fps)
            smoothed = a * cur + (1 - a) * prev
            smoothed = np.where(np.isnan(smoothed), cur, smoothed)
            out[i], prev, dprev = smoothed, smoothed, np.nan_to_num(dhat)
        return out


def clean_tracks(pose: PoseData, max_gap: int = 4, smoothing: bool = False) -> dict[str, list[int]]:
    """Fill short gaps and optionally smooth every person's arrays in place.

    Returns, per track id, the frames that were filled by interpolation (for .scail/pose_summary.json).
    Scores (the last channel of the 2D arrays) are interpolated like coordinates; bbox too.
    """
    report: dict[str, list[int]] = {}
    for p in range(pose.num_people):
        filled_any = np.zeros(pose.num_frames, dtype=bool)
        for name in ("body3d", "body2d", "face2d", "hands2d", "bbox"):
            arr = getattr(pose, name)
            track = arr[:, p]
            if name in ("body3d", "bbox"):
                filled, mask = fill_gaps(track, max_gap)
            else:
                filled, mask = fill_gaps_per_part(track, max_gap)
            if name == "body3d":
                filled_any |= mask
            if smoothing and name != "bbox":
                fps = pose.fps
                if name == "body3d":
                    filled = OneEuroFilter(fps, min_cutoff_hz=3.0, beta=0.01)(filled)
                else:  # normalised 2D: beta scaled from mm/s to (frame fraction)/s
                    coords = OneEuroFilter(fps, min_cutoff_hz=3.0, beta=10.0)(filled[..., :2])
                    filled = np.concatenate([coords, filled[..., 2:]], axis=-1)
            arr[:, p] = filled
        report[str(int(pose.track_id[p]))] = np.flatnonzero(filled_any).tolist()
    return report


def fill_gaps_per_part(track: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """fill_gaps for 2D arrays whose parts (a hand, the face) appear independently: (N, ..., K, 3)."""
    if track.ndim == 4:  # hands: (N, 2, 21, 3), each hand on its own
        parts = [fill_gaps(track[:, h], max_gap) for h in range(track.shape[1])]
        return np.stack([p[0] for p in parts], 1), np.any([p[1] for p in parts], axis=0)
    return fill_gaps(track, max_gap)

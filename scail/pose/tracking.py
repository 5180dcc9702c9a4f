"""Identity across frames: person boxes -> a fixed number of stable tracks.

A small IoU tracker with at most `max_people` slots. A detection continues the track whose last
box overlaps it most; an unmatched detection opens a new track while slots are free, else it takes
over the slot of the track lost for longest (the person left and came back). Slots never move, so
slot p is always the same `track_id` in the pose arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of (A, 4) and (B, 4) boxes (x0, y0, x1, y1). -> (A, B)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


@dataclass
class Track:
    track_id: int
    box: np.ndarray  # (4,) last seen box
    last_frame: int
    hits: int = 1


@dataclass
class IoUTracker:
    """Assigns boxes to at most `max_people` stable slots (see the module docstring)."""

    max_people: int
    min_iou: float = 0.2
    tracks: list[Track] = field(default_factory=list)
    frame: int = -1

    def update(self, boxes: np.ndarray) -> list[tuple[int, int]]:
        """Match this frame's detections (D, 5: x0, y0, x1, y1, score) to slots.

        Returns (slot, detection index) pairs. Detections are considered best first
        (score x area), so extra people beyond `max_people` are the least prominent ones.
        """
        self.frame += 1
        if len(boxes) == 0:
            return []
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        order = np.argsort(-(boxes[:, 4] * area), kind="stable")
        iou = box_iou(boxes[:, :4], np.array([t.box for t in self.tracks]).reshape(-1, 4))
        pairs: list[tuple[int, int]] = []
        used_slots: set[int] = set()
        # 1) continue existing tracks, highest IoU first
        cand = sorted(((iou[d, s], d, s) for d in order for s in range(len(self.tracks))
                       if iou[d, s] >= self.min_iou), reverse=True)
        used_dets: set[int] = set()
        for _, d, s in cand:
            if d in used_dets or s in used_slots:
                continue
            pairs.append((s, int(d)))
            used_dets.add(d)
            used_slots.add(s)
        # 2) new people: free slots first, then the slot lost for longest (re-entry)
        for d in order:
            if d in used_dets:
                continue
            if len(self.tracks) < self.max_people:
                self.tracks.append(Track(len(self.tracks), boxes[d, :4].copy(), self.frame, 0))
                s = len(self.tracks) - 1
            else:
                lost = [s for s in range(len(self.tracks)) if s not in used_slots]
                if not lost:
                    continue
                s = min(lost, key=lambda s: self.tracks[s].last_frame)
            pairs.append((s, int(d)))
            used_dets.add(d)
            used_slots.add(s)
        for s, d in pairs:
            t = self.tracks[s]
            t.box, t.last_frame, t.hits = boxes[d, :4].copy(), self.frame, t.hits + 1
        return sorted(pairs)

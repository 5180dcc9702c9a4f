"""What every backend shares: one person's pose in one frame, and assembling frames into PoseData."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from scail.pose.schema import PoseData, official_intrinsics
from scail.pose.tracking import IoUTracker

FrameProgressFn = Callable[[int], None]
"""on_frame(frames_done)."""


@dataclass
class PersonPose:
    """One person in one frame, in the schema's units (NaN where unknown)."""

    bbox: np.ndarray  # (5,) x0, y0, x1, y1 px, score
    body3d: np.ndarray = field(default_factory=lambda: np.full((24, 3), np.nan, np.float32))  # camera mm
    body2d: np.ndarray = field(default_factory=lambda: np.full((18, 3), np.nan, np.float32))  # x/W, y/H, score
    face2d: np.ndarray = field(default_factory=lambda: np.full((68, 3), np.nan, np.float32))
    hands2d: np.ndarray = field(default_factory=lambda: np.full((2, 21, 3), np.nan, np.float32))


Detector = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
Estimator = Callable[[np.ndarray, int, np.ndarray], "PersonPose | None"]
"""estimate(frame, slot, box (5,)) -> the person's pose, or None when nothing was found in the box."""


def track_video(frames: Iterable[np.ndarray], detect: Detector, estimate: Estimator, size_hw: tuple[int, int],
                fps: float, max_people: int, on_frame: FrameProgressFn, backend: str,
                version: str, detect_every: int = 1) -> PoseData:
    """Detect, track and estimate every frame; slot p of the result is track p.

    With detect_every = k > 1 the detector runs on every k-th frame only while all `max_people`
    people are being followed; in between, each person's box comes from their own 2D keypoints
    of the previous frame (a lost person forces a detection on the next frame).
    Frames where a tracked person is not found stay NaN (filled or reported later by postprocess).
    P is the number of tracks that were ever opened, at least 1 (all NaN when nobody was seen).
    """
    tracker = IoUTracker(max_people)
    per_frame: list[dict[int, PersonPose]] = []
    since_detect = detect_every
    for i, frame in enumerate(frames):
        prev = per_frame[-1] if per_frame else {}
        follow = {s: keypoint_box(p, size_hw) for s, p in prev.items()}
        follow = {s: b for s, b in follow.items() if b is not None}
        if since_detect >= detect_every or len(follow) < max_people:
            boxes, _ = detect(frame)
            pairs = tracker.update(boxes)
            since_detect = 1
        else:
            slots = sorted(follow)
            boxes = np.array([follow[s] for s in slots], np.float32)
            pairs = tracker.update(boxes)
            since_detect += 1
        found: dict[int, PersonPose] = {}
        for slot, d in pairs:
            person = estimate(frame, slot, boxes[d])
            found[slot] = person if person is not None else PersonPose(bbox=boxes[d].astype(np.float32))
        per_frame.append(found)
        on_frame(i + 1)
    return assemble(per_frame, max(1, len(tracker.tracks)), size_hw, fps, backend, version)


def keypoint_box(person: PersonPose, size_hw: tuple[int, int], margin: float = 0.1) -> np.ndarray | None:
    """(5,) box around a person's body keypoints (grown by `margin`), or None without enough points."""
    h, w = size_hw
    pts = person.body2d[:, :2]
    ok = np.isfinite(pts).all(-1) & (np.nan_to_num(person.body2d[:, 2]) > 0.3)
    if ok.sum() < 4:
        return None
    xy = pts[ok] * np.array([w, h])
    (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
    mx, my = margin * (x1 - x0) + 8, margin * (y1 - y0) + 8
    score = float(person.bbox[4]) if np.isfinite(person.bbox[4]) else 0.5
    return np.array([max(0, x0 - mx), max(0, y0 - my), min(w, x1 + mx), min(h, y1 + my), score], np.float32)


def assemble(per_frame: list[dict[int, PersonPose]], num_people: int, size_hw: tuple[int, int], fps: float,
             backend: str, version: str) -> PoseData:
    """Stack per-frame {slot: PersonPose} into PoseData arrays (N, P, ...)."""
    pose = PoseData.empty(len(per_frame), num_people, size_hw, fps=fps, backend=backend, version=version)
    pose.K = official_intrinsics(size_hw)
    for i, found in enumerate(per_frame):
        for slot, person in found.items():
            pose.bbox[i, slot] = person.bbox
            pose.body3d[i, slot] = person.body3d
            pose.body2d[i, slot] = person.body2d
            pose.face2d[i, slot] = person.face2d
            pose.hands2d[i, slot] = person.hands2d
    return pose


def expand_box(box: np.ndarray, size_hw: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """Integer crop (x0, y0, x1, y1) around a box, grown by `margin` x its size per side, clipped."""
    h, w = size_hw
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    bw, bh = x1 - x0, y1 - y0
    cx0 = int(np.floor(max(0.0, x0 - margin * bw)))
    cy0 = int(np.floor(max(0.0, y0 - margin * bh)))
    cx1 = int(np.ceil(min(float(w), x1 + margin * bw)))
    cy1 = int(np.ceil(min(float(h), y1 + margin * bh)))
    return cx0, cy0, max(cx1, cx0 + 1), max(cy1, cy0 + 1)

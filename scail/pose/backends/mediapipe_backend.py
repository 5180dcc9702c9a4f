"""Backend `mediapipe`: the embedded default that needs no weights of its own.

Two landmark models (`pose.mediapipe_model`):

- `heavy` (default): MediaPipe Holistic with its largest pose model (`model_complexity=2`), each
  frame estimated on its own (static mode), as the official pipeline (NLF + DWPose) estimates every
  frame independently. The model is not in mediapipe's wheel; the pose stage installs it into the
  pose env first (scail/pose/landmark_model.py).
- `full`: the wheel's model (`model_complexity=1`) in video mode: Holistic's own landmark tracking
  carries each frame's region of interest to the next. No download, about a quarter less time on CPU.

Per tracked person, Holistic runs on the full frame with everything outside the person's grown YOLO
box blacked out: other people vanish and coordinates stay those of the frame. Its landmarks become
the schema through `scail.pose.backends.landmarks` (SMPL-24 in camera mm by solving the translation
through K).

Measured on examples/001 against the official pose video (benchmarks/pose_agreement.py, open-mask
IoU mean/min, hue agreement min): per-person crops that follow the box 0.61/0.23; masked full frame
0.66/0.30; the same with MediaPipe's landmark smoothing off 0.70/0.46 (the official pipeline has
none). After flips are fixed (scail/pose/flips.py): `full` 0.693/0.50, hue 0.873; `heavy` 0.709/0.46,
hue 0.869; the heavy model in video mode 0.696/0.20 (its tracking lost both arms for three frames of
the dancer's back view), the full model in static mode 0.629/0.21.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

from scail.pose.backends import landmarks as lmk
from scail.pose.backends.common import FrameProgressFn, PersonPose, assemble, expand_box, track_video
from scail.pose.schema import PoseData, official_intrinsics

log = logging.getLogger(__name__)

CROP_MARGIN = 0.25
"""The visible region = the person's box grown by this fraction of its size per side (hands, head)."""
MODELS = {"heavy": (2, True), "full": (1, False)}
"""pose.mediapipe_model -> (Holistic's model_complexity, each frame on its own)."""
DETECT_EVERY = 4
"""YOLO runs on every 4th frame while everyone is followed (Holistic tracks in between): YOLO costs
about twice Holistic per frame on CPU."""


def _landmarks(lms: Any) -> np.ndarray:
    """MediaPipe NormalizedLandmarkList -> (K, 4) x, y, z, visibility."""
    return np.array([[p.x, p.y, p.z, p.visibility] for p in lms.landmark], dtype=np.float64)


def _to_frame(xy_crop: np.ndarray, crop: tuple[int, int, int, int], size_hw: tuple[int, int]) -> np.ndarray:
    """Crop-normalised (x, y) -> frame-normalised (x/W, y/H)."""
    x0, y0, x1, y1 = crop
    h, w = size_hw
    return np.stack([(xy_crop[:, 0] * (x1 - x0) + x0) / w, (xy_crop[:, 1] * (y1 - y0) + y0) / h], -1)


def masked_outside(frame: np.ndarray, crop: tuple[int, int, int, int]) -> np.ndarray:
    """A black copy of the frame except inside the crop (other people vanish, coordinates stay)."""
    x0, y0, x1, y1 = crop
    out = np.zeros_like(frame)
    out[y0:y1, x0:x1] = frame[y0:y1, x0:x1]
    return out


def person_from_holistic(res: Any, crop: tuple[int, int, int, int], size_hw: tuple[int, int], K: np.ndarray,
                         box: np.ndarray) -> PersonPose | None:
    """Holistic results on a crop -> PersonPose in frame coordinates (None when no body was found)."""
    if res.pose_landmarks is None or res.pose_world_landmarks is None:
        return None
    body = _landmarks(res.pose_landmarks)                                      # (33, 4) crop-normalised
    xy = _to_frame(body[:, :2], crop, size_hw)                                 # (33, 2) frame-normalised
    vis = np.clip(body[:, 3], 0.0, 1.0)
    world = _landmarks(res.pose_world_landmarks)[:, :3]                        # (33, 3) metres
    uv = lmk.pixels_from_normalized(xy, size_hw)                               # (33, 2) pixel index
    person = PersonPose(bbox=np.asarray(box, np.float32)[:5])
    body3d = lmk.body3d_from_mediapipe(world, uv, vis, K)
    if body3d is not None:
        person.body3d = body3d.astype(np.float32)
    h, w = size_hw
    # body2d stores pixel-index / W like DWPose, so the 2D overlay lands where the 3D joints project
    person.body2d = lmk.openpose18_from_mediapipe(uv / np.array([w, h]), vis)
    if res.face_landmarks is not None:
        face = _to_frame(_landmarks(res.face_landmarks)[:, :2], crop, size_hw)
        person.face2d = lmk.face68_from_mesh(lmk.pixels_from_normalized(face, size_hw) / np.array([w, h]))
    for side, hand in enumerate((res.left_hand_landmarks, res.right_hand_landmarks)):
        if hand is not None:
            pts = _to_frame(_landmarks(hand)[:, :2], crop, size_hw)
            person.hands2d[side] = lmk.hand21(lmk.pixels_from_normalized(pts, size_hw) / np.array([w, h]))
    return person


class MediapipeBackend:
    """MediaPipe Holistic per tracked person, YOLO11n-pose boxes for detection and identity."""

    name = "mediapipe"

    def __init__(self, device: str = "cpu", model: str = "heavy") -> None:
        import mediapipe as mp

        from scail.pose.backends.detector import PersonDetector

        if model not in MODELS:
            raise ValueError(f"mediapipe model {model!r}: choose {' or '.join(MODELS)}")
        self.complexity, self.per_frame = MODELS[model]
        self._holistic_cls = mp.solutions.holistic.Holistic
        self.detector = PersonDetector(device=device)
        mode = "static" if self.per_frame else "video"
        self.version = f"mediapipe-{mp.__version__}-holistic-c{self.complexity}-{mode}+yolo11n-pose"

    def _holistic(self, static: bool) -> Any:
        return self._holistic_cls(static_image_mode=static, model_complexity=self.complexity, smooth_landmarks=False,
                                  refine_face_landmarks=False)

    def video(self, frames: Iterable[np.ndarray], size_hw: tuple[int, int], fps: float, max_people: int,
              on_frame: FrameProgressFn) -> PoseData:
        K = official_intrinsics(size_hw)
        graphs: dict[int, Any] = {}
        full = (0, 0, size_hw[1], size_hw[0])

        def estimate(frame: np.ndarray, slot: int, box: np.ndarray) -> PersonPose | None:
            if slot not in graphs:
                graphs[slot] = self._holistic(static=self.per_frame)
            res = graphs[slot].process(masked_outside(frame, expand_box(box, size_hw, CROP_MARGIN)))
            return person_from_holistic(res, full, size_hw, K, box)

        try:
            return track_video(frames, self.detector, estimate, size_hw, fps, max_people, on_frame,
                               self.name, self.version, detect_every=DETECT_EVERY)
        finally:
            for g in graphs.values():
                g.close()

    def image(self, image: np.ndarray) -> PoseData:
        """One frame in static mode: the most prominent person (or the whole image if YOLO finds none)."""
        size_hw = (int(image.shape[0]), int(image.shape[1]))
        K = official_intrinsics(size_hw)
        boxes, _ = self.detector(image)
        if len(boxes):
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            box = boxes[int(np.argmax(area * boxes[:, 4]))]
        else:
            box = np.array([0, 0, size_hw[1], size_hw[0], 0.0], np.float32)
        crop = expand_box(box, size_hw, CROP_MARGIN)
        x0, y0, x1, y1 = crop
        graph = self._holistic(static=True)
        try:
            res = graph.process(np.ascontiguousarray(image[y0:y1, x0:x1]))
        finally:
            graph.close()
        person = person_from_holistic(res, crop, size_hw, K, box)
        found = {0: person} if person is not None else {}
        return assemble([found], 1, size_hw, 16.0, self.name, self.version)

    def close(self) -> None:
        self.detector = None  # type: ignore[assignment]

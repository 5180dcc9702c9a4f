"""Frame normalisation: what every backend sees, whatever the source video looks like.

- The driving video is resampled to `fps` (16) by timestamps. The official code keeps every source
  frame and labels the result 16 fps, so a 30 fps source plays at half speed; we do not.
- Every frame is resized (bicubic, antialiased, covering the target) and centre-cropped to 512x896
  or 896x512, picked by the DRIVING video's orientation (official `resize_for_rectangle_crop`).
- The reference image is resized and cropped to the same size as the driving frames (official),
  even when its own orientation differs.
- The camera is the official one: f = max(H, W) / (2 tan 27.5deg), principal point (W/2, H/2).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scail.errors import InputError
from scail.pose.schema import official_intrinsics


@dataclass(frozen=True)
class FramePlan:
    """What the driving video becomes: its normalised size and an estimate of the frame count."""

    size_hw: tuple[int, int]
    fps: float
    num_frames: int
    source_fps: float
    source_hw: tuple[int, int]

    @property
    def K(self) -> np.ndarray:
        return official_intrinsics(self.size_hw)


def plan_driving(path: Path, fps: float, max_frames: int | None = None, start_s: float = 0.0,
                 end_s: float | None = None) -> FramePlan:
    """Probe the driving video and decide the normalised size and (estimated) frame count of the
    part used: [start_s, end_s) seconds, at most max_frames frames."""
    from scail import video
    from scail.frame_geometry import target_size_hw

    try:
        info = video.probe(path)
    except InputError:
        raise  # already one line naming the file and the fix
    except Exception as exc:
        raise InputError(f"{path}: cannot read the driving video ({exc}); is it a video file?") from exc
    if info.width <= 0 or info.height <= 0:
        raise InputError(f"{path}: the driving video has no picture (size {info.width}x{info.height})")
    n = max(1, round(info.duration_s * fps)) if info.duration_s > 0 else info.num_frames
    first, stop = frame_range(fps, max_frames, start_s, end_s)
    n = max(0, min(n, stop if stop is not None else n) - first)
    return FramePlan(target_size_hw(info.height, info.width), float(fps), int(n), float(info.fps),
                     (int(info.height), int(info.width)))


def frame_range(fps: float, max_frames: int | None = None, start_s: float = 0.0,
                end_s: float | None = None) -> tuple[int, int | None]:
    """(first, stop) output-frame indices at `fps` of [start_s, end_s) capped at max_frames frames."""
    first = round(start_s * fps)
    stop = round(end_s * fps) if end_s is not None else None
    if max_frames is not None:
        stop = first + max_frames if stop is None else min(stop, first + max_frames)
    return first, stop


def iter_driving(path: Path, plan: FramePlan, max_frames: int | None = None, start_s: float = 0.0,
                 end_s: float | None = None) -> Iterator[np.ndarray]:
    """Yield the normalised driving frames, (H, W, 3) uint8 RGB at plan.size_hw, plan.fps, of the
    part [start_s, end_s) (at most max_frames)."""
    import itertools

    from scail import video
    from scail.frame_geometry import resize_crop

    first, stop = frame_range(plan.fps, max_frames, start_s, end_s)
    for frame in itertools.islice(video.iter_frames(path, fps=plan.fps, max_frames=stop), first, None):
        yield np.asarray(resize_crop(frame[None], plan.size_hw))[0]


def load_reference(path: Path, size_hw: tuple[int, int]) -> np.ndarray:
    """The reference image (upright: EXIF orientation applied) resized and centre-cropped to
    size_hw: (H, W, 3) uint8 RGB."""
    from scail.frame_geometry import resize_crop
    from scail.images import read_image

    return np.asarray(resize_crop(read_image(path)[None], size_hw))[0]

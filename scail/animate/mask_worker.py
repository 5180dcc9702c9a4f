"""The mask worker: per-person segmentation inside the pose env, painted as SCAIL-2 identity masks.

    python -m scail.animate.mask_worker JOBFILE

Runs where the pose backends live (the pose env: mediapipe, ultralytics, av), from what the pose
stage already tracked: the person boxes of `.scail/pose.npz` (driving video) and
`.scail/ref_pose.npz` (reference). For every frame and tracked person, the frame with everything
outside the person's grown box blacked out (other people vanish, as the mediapipe pose backend
does) goes through a segmenter, and the mask is kept inside the box. Colours and backgrounds follow
`identity_masks` (left to right, the reference's people matched by rank).

Segmenters:

* `embedded` (default, offline, CPU): the segmentation output of MediaPipe's BlazePose landmark
  model (`pose_landmark_full.tflite`, shipped inside the mediapipe wheel; `enable_segmentation`),
  one tracker per person. Quality: a smooth body silhouette at the model's 256x256 input, good
  for one or two well-separated full-body people; loose hair, wide clothes, props and held
  objects are often cut off, overlapping people share the overlap badly, and a frame where
  BlazePose finds no body gives that person no mask (counted in the summary). Not validated
  against the official SAM3 masks.
* `sam` (optional, the user installs the weights): ultralytics SAM / SAM 2 / MobileSAM prompted
  with the person's box, from a weights file the user supplies (e.g. `sam2.1_b.pt`); runs on the
  GPU when there is one. Much closer to the official SAM3 masks.

Protocol: the result files are written atomically; the last stdout line is a JSON summary
`{"event": "done", ...}` or `{"event": "error", "message": ...}` (exit code 1).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

Segmenter = Callable[[np.ndarray, int], "np.ndarray | None"]
"""segment(masked_frame (H, W, 3) uint8, person) -> (H, W) bool, or None when nothing was found."""

BOX_MARGIN = 0.15
"""The visible region: the person's box grown by this fraction of its size per side."""


class MaskJob(BaseModel):
    """One mask job (the job file's JSON)."""

    model_config = ConfigDict(extra="forbid")

    driving: Path
    pose: Path
    out_driving_mask: Path
    reference: Path | None = None
    ref_pose: Path | None = None
    out_ref_mask: Path | None = None
    replace: bool = False
    fps: float | None = None
    """Read the driving video at this frame rate (the skeleton render's); None: every frame."""
    segmenter: Literal["embedded", "sam"] = "embedded"
    sam_weights: Path | None = None
    device: str = "cpu"


def grown_box(box: np.ndarray, size_hw: tuple[int, int], margin: float = BOX_MARGIN) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 of `box` grown by `margin` of its size per side, clipped to the frame."""
    h, w = size_hw
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    return (max(0, int(x0 - dx)), max(0, int(y0 - dy)), min(w, int(np.ceil(x1 + dx))), min(h, int(np.ceil(y1 + dy))))


def only_box(frame: np.ndarray, crop: tuple[int, int, int, int]) -> np.ndarray:
    """A black copy of `frame` except inside `crop`."""
    x0, y0, x1, y1 = crop
    out = np.zeros_like(frame)
    out[y0:y1, x0:x1] = frame[y0:y1, x0:x1]
    return out


def boxes_at(boxes: np.ndarray, pose_fps: float, scale_xy: tuple[float, float], t: float) -> np.ndarray:
    """The (P, 4) boxes of the pose frame nearest to time t, scaled to the video's pixels."""
    i = min(len(boxes) - 1, max(0, round(t * pose_fps)))
    sx, sy = scale_xy
    return boxes[i, :, :4] * np.array([sx, sy, sx, sy])


def person_masks(
    frame: np.ndarray, boxes: np.ndarray, segment: Segmenter
) -> tuple[list[np.ndarray], int]:
    """Per-person (H, W) bool masks for one frame (empty where absent) and how many were missed."""
    h, w = frame.shape[:2]
    masks, missed = [], 0
    for p, box in enumerate(boxes):
        mask = np.zeros((h, w), bool)
        if np.isfinite(box).all() and box[2] > box[0] and box[3] > box[1]:
            crop = grown_box(box, (h, w))
            found = segment(only_box(frame, crop), p)
            if found is None:
                missed += 1
            else:
                x0, y0, x1, y1 = crop
                mask[y0:y1, x0:x1] = found[y0:y1, x0:x1]
        masks.append(mask)
    return masks, missed


def embedded_segmenter(video_mode: bool) -> Segmenter:
    """MediaPipe BlazePose segmentation, one tracker per person (see the module docstring)."""
    import mediapipe as mp

    trackers: dict[int, Any] = {}

    def segment(frame: np.ndarray, person: int) -> np.ndarray | None:
        if person not in trackers:
            trackers[person] = mp.solutions.pose.Pose(
                static_image_mode=not video_mode, model_complexity=1, enable_segmentation=True,
                smooth_segmentation=video_mode,
            )  # fmt: skip
        res = trackers[person].process(frame)
        if res.segmentation_mask is None:
            return None
        return np.asarray(res.segmentation_mask) > 0.5

    return segment


def sam_segmenter(weights: Path, device: str, boxes_of: Callable[[int], np.ndarray]) -> Segmenter:
    """ultralytics SAM prompted with the person's box (`boxes_of(person)`: its current box)."""
    from ultralytics import SAM

    model = SAM(str(weights))

    def segment(frame: np.ndarray, person: int) -> np.ndarray | None:
        box = boxes_of(person)
        res = model(frame, bboxes=[box.tolist()], device=device, verbose=False)
        if not res or res[0].masks is None or len(res[0].masks.data) == 0:
            return None
        return res[0].masks.data[0].cpu().numpy().astype(bool)

    return segment


def _frames(path: Path, fps: float | None) -> Iterator[tuple[float, np.ndarray]]:
    """(time, RGB frame) of the video, every frame or resampled to `fps` (scail.video's reader)."""
    from scail.video import iter_frames, probe

    step = 1.0 / (fps if fps is not None else probe(path).fps)
    for i, frame in enumerate(iter_frames(path, fps=fps)):
        yield i * step, frame


def run(job: MaskJob) -> dict[str, Any]:
    """Write the driving mask video (and the reference mask image); return a summary."""
    from PIL import Image

    from scail.animate.identity_masks import assign_colours, background_for, left_to_right, paint
    from scail.atomic import atomic_path
    from scail.images import read_image
    from scail.pose.schema import load_pose
    from scail.video import VideoWriter, probe

    pose = load_pose(job.pose)
    info = probe(job.driving)
    scale = (info.width / pose.size[1], info.height / pose.size[0])
    boxes = pose.bbox.astype(np.float64)
    colours = assign_colours(boxes)
    order = [colours[p] for p in range(boxes.shape[1])]
    current: dict[int, np.ndarray] = {}
    segment = (
        embedded_segmenter(video_mode=True) if job.segmenter == "embedded"
        else sam_segmenter(_need(job.sam_weights), job.device, lambda p: current[p])
    )  # fmt: skip
    missed = frames = 0
    fps = job.fps if job.fps is not None else info.fps
    with atomic_path(job.out_driving_mask) as tmp, VideoWriter(tmp, fps, atomic=False) as writer:
        for t, frame in _frames(job.driving, job.fps):
            now = boxes_at(boxes, pose.fps, scale, t)
            current.update(enumerate(now))
            masks, m = person_masks(frame, now, segment)
            missed += m
            frames += 1
            writer.write(paint(masks, order, background_for("driving", job.replace)))
    summary: dict[str, Any] = {"frames": frames, "people": len(order), "missed_person_frames": missed}
    if job.reference is not None and job.ref_pose is not None and job.out_ref_mask is not None:
        ref_pose = load_pose(job.ref_pose)
        image = read_image(job.reference)  # upright (EXIF), as the pose stage read it for ref_pose
        rscale = (image.shape[1] / ref_pose.size[1], image.shape[0] / ref_pose.size[0])
        rboxes = boxes_at(ref_pose.bbox.astype(np.float64), 1.0, rscale, 0.0)
        ref_segment = (
            embedded_segmenter(video_mode=False) if job.segmenter == "embedded"
            else sam_segmenter(_need(job.sam_weights), job.device, lambda p: rboxes[p])
        )  # fmt: skip
        # the reference's people take the colours of the driving people of the same rank
        rank = left_to_right(ref_pose.bbox.astype(np.float64))
        by_rank = [colours[p] for p in left_to_right(boxes)]
        ref_colours = {p: by_rank[r] for r, p in enumerate(rank) if r < len(by_rank)}
        keep = [p for p in range(len(rboxes)) if p in ref_colours]
        masks, m = person_masks(image, rboxes[keep], ref_segment)
        painted = paint(masks, [ref_colours[p] for p in keep], background_for("reference", job.replace))
        with atomic_path(job.out_ref_mask) as tmp:
            Image.fromarray(painted).save(tmp, format="PNG")
        summary["reference_missed"] = m
    return summary


def _need(weights: Path | None) -> Path:
    if weights is None or not weights.is_file():
        raise FileNotFoundError(
            f"SAM weights {weights} not found; set animate.mask_sam_weights to a SAM / SAM 2 / MobileSAM "
            ".pt file (ultralytics names, e.g. sam2.1_b.pt)"
        )
    return weights


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        job = MaskJob.model_validate_json(Path(args[0]).read_text())
        summary = run(job)
    except Exception as exc:  # the parent turns this line into one clear error
        print(json.dumps({"event": "error", "message": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print(json.dumps({"event": "done", **summary}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

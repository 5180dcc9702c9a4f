"""SCAIL-2 identity masks made by the embedded segmenter (MediaPipe BlazePose) in the real pose env."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scail.animate.mask_stage import ensure_masks
from scail.example import Example
from scail.pose.schema import PoseData, save_pose
from scail.video import read_frames, write_video


def boxes_pose(frames: int, size_hw: tuple[int, int], boxes: list[list[float]], fps: float) -> PoseData:
    pose = PoseData.empty(frames, len(boxes), size_hw, fps=fps)
    for p, box in enumerate(boxes):
        pose.bbox[:, p] = [*box, 1.0]
    return pose


@pytest.mark.parametrize("ref_name", ["ref.png", "ref.jpg"])
def test_embedded_masks_from_tracked_boxes(repo_root: Path, tmp_path: Path, pose_python: Path,
                                          pose_cache_dir: Path, ref_name: str) -> None:  # fmt: skip
    """ref.jpg: the same reference stored as a phone stores it (pixels on their side, EXIF Orientation 6);
    the reference mask comes out upright, as the pose stage read the reference for ref_pose.npz."""
    src = repo_root / "examples" / "dance"
    if not (src / "driving.mp4").is_file():
        pytest.skip("examples/dance is absent")
    ex = Example(tmp_path / "dance")
    ex.root.mkdir()
    frames = read_frames(src / "driving.mp4", max_frames=5)  # (5, 896, 512, 3)
    h, w = frames.shape[1:3]
    write_video(ex.root / "driving.mp4", frames, fps=16)
    if ref_name == "ref.png":
        shutil.copy(src / "ref.png", ex.root / "ref.png")
    else:
        exif = Image.Exif()
        exif[0x0112] = 6  # display: turn the stored pixels 90 degrees clockwise
        upright = Image.open(src / "ref.png").convert("RGB")
        upright.transpose(Image.Transpose.ROTATE_90).save(ex.root / "ref.jpg", quality=95, exif=exif)
    ex.state_dir.mkdir()
    # one person: the pose stage's box (here: the middle of the frame, generous)
    save_pose(boxes_pose(5, (h, w), [[16.0, 150.0, 496.0, 720.0]], 16.0), ex.pose_data)
    ref = np.asarray(Image.open(src / "ref.png").convert("RGB"))
    rh, rw = ref.shape[:2]
    save_pose(boxes_pose(1, (rh, rw), [[0.05 * rw, 0.05 * rh, 0.95 * rw, 0.95 * rh]], 16.0), ex.ref_pose_data)

    summary = ensure_masks(ex, ex.root / "driving.mp4", replace=False, backend="embedded", cache_dir=pose_cache_dir)
    assert summary is not None and summary["frames"] == 5 and summary["people"] == 1
    masks = read_frames(ex.root / "rendered_mask_v2.mp4")
    assert masks.shape == frames.shape
    blue = (masks[..., 2] > 200) & (masks[..., 0] < 60) & (masks[..., 1] < 60)
    black = masks.max(axis=-1) < 40
    # the dancer covers ~8 % of the frame (BlazePose's silhouette), the rest is black background
    assert 0.03 < blue.mean() < 0.25 and black.mean() > 0.7
    assert not blue[:, :140].any()  # nothing outside the grown box
    ref_mask = np.asarray(Image.open(ex.root / "ref_mask.png"))
    assert ref_mask.shape[:2] == (rh, rw), "the reference mask is upright, the size the user sees"
    white = ref_mask.min(axis=-1) > 250
    assert white.mean() > 0.5 and ((ref_mask[..., 2] == 255) & (ref_mask[..., 0] == 0)).mean() > 0.02
    # user masks are never overwritten: a second call has nothing to do
    assert ensure_masks(ex, ex.root / "driving.mp4", replace=False, backend="embedded") is None

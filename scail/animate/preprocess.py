"""Inputs of the animate stage, prepared exactly as the official sample script does.

Reference image (scail-model.md §1.2): PIL RGB -> ToTensor -> [-1, 1] -> the official cover-resize
(bicubic, antialias, float32, no clamp) + centre crop. The reference's orientation picks the output
size: landscape (H0 < W0) -> 512x896, else 896x512 (SAT branch; the wan branch takes the size from
its CLI, which `size_hw` reproduces).

Pose video (§1.3): every frame (no fps resampling), the same resize + crop on uint8 (rounded and
clamped), `(p - 127.5) / 127.5`, then bilinear x0.5 without antialias: only this half-resolution
video is VAE-encoded for the DiT.

Frame count: the whole pose video is animated. The Wan VAE encodes the first frame alone and then
chunks of 4 frames, so the video is padded at the end with copies of its last frame to the form
4k + 1 and the decoded padding is dropped again: the sample has exactly the pose video's frame
count. Videos longer than the DiT's 81 frames run in temporal windows (`windows.py`).
`max_frames` is an opt-in cut. The pose video streams from the file in VAE chunks (`PoseChunks`),
so a 10-minute video never sits in memory as floats.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from scail.errors import InputError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class PoseVideo:
    """A pose video file; its frames are decoded one at a time when iterated."""

    path: Path
    max_frames: int | None = None

    def frames(self) -> Iterator[np.ndarray]:
        """(H1, W1, 3) uint8 frames, at most `max_frames`."""
        from scail.video import iter_frames

        return iter_frames(self.path, max_frames=self.max_frames)


@dataclass(frozen=True)
class AnimateInputs:
    """The preprocessed inputs of one sample.

    Attributes:
        ref_image: (3, H, W) float32, the cropped reference in [-1, 1] (may overshoot slightly).
        pose: the pose video, streamed from its file in VAE chunks (`PoseChunks`) when sampling.
        fps: the pose video's average frame rate: the output's frame rate.
        source_frames: frames in the pose video file (from its header).
    """

    ref_image: torch.Tensor
    pose: PoseVideo
    fps: float
    source_frames: int

    @property
    def size_hw(self) -> tuple[int, int]:
        return int(self.ref_image.shape[1]), int(self.ref_image.shape[2])

    def pose_chunks(self) -> PoseChunks:
        """The half-resolution pose video in VAE chunks, padded to 4k + 1 frames."""
        return PoseChunks(self.pose.frames(), self.size_hw)

    def pose_video(self) -> torch.Tensor:
        """(3, T, H/2, W/2) float32: the whole half-resolution pose video at once (short clips, tests)."""
        import torch

        return torch.cat(list(PoseChunks(self.pose.frames(), self.size_hw, pad=False)), dim=1)


class PoseChunks:
    """A pose video as the VAE's chunks: (3, 1, H/2, W/2) first, then (3, 4, H/2, W/2) each.

    Each chunk is `prepare_pose` of its frames (per frame, so chunking changes no pixel). With `pad`,
    the last chunk is filled up with copies of the last frame (the VAE takes 4k + 1 frames);
    `frames` counts the real frames, known once the iterator is exhausted.
    """

    def __init__(self, frames: Iterable[np.ndarray], size_hw: tuple[int, int], pad: bool = True) -> None:
        self.source, self.size_hw, self.pad = frames, size_hw, pad
        self.frames = 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        group: list[np.ndarray] = []
        want = 1
        for frame in self.source:
            group.append(frame)
            self.frames += 1
            if len(group) == want:
                yield prepare_pose(np.stack(group), self.size_hw)[1]
                group, want = [], 4
        if self.frames == 0:
            raise InputError("the pose video has no frames")
        if group:
            if self.pad:
                group += [group[-1]] * (want - len(group))
            yield prepare_pose(np.stack(group), self.size_hw)[1]


def used_frame_count(n: int, max_frames: int | None = None) -> int:
    """min(n, max_frames) rounded down to the form 4k + 1 (for callers that cut rather than pad)."""
    from scail.frame_geometry import frame_count_4n1

    if n < 1:
        raise ValueError(f"need at least one pose frame, got {n}")
    return frame_count_4n1(min(n, max_frames) if max_frames is not None else n)


def load_reference(path: Path) -> torch.Tensor:
    """The reference image as (3, H0, W0) float32 in [-1, 1] (PIL RGB, ToTensor, *2-1), upright."""
    import torch

    from scail.images import read_image

    rgb = read_image(path)  # upright: EXIF orientation applied, as the pose stage read it
    x = torch.from_numpy(rgb).permute(2, 0, 1).to(torch.float32).div(255)  # ToTensor
    return x * 2 - 1


def prepare_reference(image: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """(3, H0, W0) float in [-1, 1] -> (3, H, W): official cover-resize + centre crop, float32."""
    from scail.frame_geometry import resize_crop

    return resize_crop(image, size_hw)


def prepare_pose(frames: np.ndarray, size_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, H1, W1, 3) uint8 -> ((T, 3, H, W) uint8 resized, (3, T, H/2, W/2) float32 half-res).

    The uint8 frames are what the official code normalises; the half-res video is what the VAE encodes.
    """
    import torch
    import torch.nn.functional as F

    from scail.frame_geometry import resize_crop

    tchw = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (T, 3, H1, W1) uint8
    resized = resize_crop(tchw, size_hw)  # (T, 3, H, W) uint8, rounded + clamped
    pose = (resized.to(torch.float32) - 127.5) / 127.5  # official: (p - 127.5) / 127.5
    half = F.interpolate(pose, scale_factor=0.5, mode="bilinear", align_corners=False)  # no antialias
    return resized, half.permute(1, 0, 2, 3).contiguous()  # (3, T, H/2, W/2)


def check_size(size_hw: tuple[int, int]) -> None:
    """H and W must be multiples of 32: the half-res pose latent must patchify by 2 (scail-wan-branch §8)."""
    h, w = size_hw
    if h % 32 or w % 32 or h <= 0 or w <= 0:
        raise InputError(f"output size {h}x{w} is not a multiple of 32 in both sides; pick e.g. 512x896")


def load_inputs(
    reference: Path,
    pose_video: Path,
    size_hw: tuple[int, int] | None = None,
    max_frames: int | None = None,
    downscale: int = 1,
) -> AnimateInputs:
    """Read the reference image and open the pose video of one example (its frames stream later).

    Args:
        reference: ref.jpg / ref.png.
        pose_video: rendered_aligned.mp4 or rendered.mp4.
        size_hw: output (H, W); default from the reference's orientation (official SAT rule).
        max_frames: animate only the first this many pose frames (default: all of them).
        downscale: divide the orientation-rule size by this (the tiny-random model runs at 1/4:
            128x224), ignored when `size_hw` is given.
    """
    from scail.frame_geometry import target_size_hw
    from scail.video import probe

    ref = load_reference(reference)
    if size_hw is None:
        h, w = target_size_hw(int(ref.shape[1]), int(ref.shape[2]))
        size_hw = (h // downscale, w // downscale)
    check_size(size_hw)
    info = probe(pose_video)
    if max_frames is not None and max_frames < info.num_frames:
        log.warning("%s: animating the first %d of %d frames (animate.max_frames)", pose_video, max_frames,
                    info.num_frames)
    return AnimateInputs(
        ref_image=prepare_reference(ref, size_hw),
        pose=PoseVideo(pose_video, max_frames),
        fps=float(info.fps),
        source_frames=info.num_frames,
    )

"""Inputs of the animate stage, prepared exactly as the official sample script does.

Reference image (scail-model.md §1.2): PIL RGB -> ToTensor -> [-1, 1] -> the official cover-resize
(bicubic, antialias, float32, no clamp) + centre crop. The reference's orientation picks the output
size: landscape (H0 < W0) -> 512x896, else 896x512 (SAT branch; the wan branch takes the size from
its CLI, which `size_hw` reproduces).

Pose video (§1.3): every frame (no fps resampling), the same resize + crop on uint8 (rounded and
clamped), `(p - 127.5) / 127.5`, then bilinear x0.5 without antialias: only this half-resolution
video is VAE-encoded for the DiT.

Frame count: the Wan VAE encodes the first frame and then whole chunks of 4, so only `4n + 1`
frames are used; the DiT's RoPE tables stop at 21 latent frames (81 pixel frames). Longer videos
crash the official code; here they are cut to `max_frames` (default 81) with a warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from scail.errors import InputError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MAX_FRAMES = 81
"""4 * 20 + 1: the longest pose video the DiT's RoPE tables (21 latent frames) accept."""


@dataclass(frozen=True)
class AnimateInputs:
    """The preprocessed inputs of one sample.

    Attributes:
        ref_image: (3, H, W) float32, the cropped reference in [-1, 1] (may overshoot slightly).
        pose_video: (3, T, H/2, W/2) float32 in [-1, 1], the half-resolution pose video the VAE encodes.
        fps: the pose video's average frame rate: the output's frame rate.
        source_frames: frames in the pose video file (before trimming to T).
    """

    ref_image: torch.Tensor
    pose_video: torch.Tensor
    fps: float
    source_frames: int

    @property
    def size_hw(self) -> tuple[int, int]:
        return int(self.ref_image.shape[1]), int(self.ref_image.shape[2])

    @property
    def num_frames(self) -> int:
        return int(self.pose_video.shape[1])


def used_frame_count(n: int, max_frames: int | None = MAX_FRAMES) -> int:
    """How many pose frames are used: min(n, max_frames) rounded down to the form 4k + 1."""
    if n < 1:
        raise ValueError(f"need at least one pose frame, got {n}")
    cap = min(n, max_frames) if max_frames is not None else n
    return 1 + 4 * ((cap - 1) // 4)


def load_reference(path: Path) -> torch.Tensor:
    """The reference image as (3, H0, W0) float32 in [-1, 1] (PIL RGB, ToTensor, *2-1)."""
    import torch
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = np.array(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path}: not a readable image ({exc}); use a JPEG or PNG") from exc
    x = torch.from_numpy(rgb).permute(2, 0, 1).to(torch.float32).div(255)  # ToTensor
    return x * 2 - 1


def prepare_reference(image: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """(3, H0, W0) float in [-1, 1] -> (3, H, W): official cover-resize + centre crop, float32."""
    from scail.video import resize_crop

    return resize_crop(image, size_hw)


def prepare_pose(frames: np.ndarray, size_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, H1, W1, 3) uint8 -> ((T, 3, H, W) uint8 resized, (3, T, H/2, W/2) float32 half-res).

    The uint8 frames are what the official code normalises; the half-res video is what the VAE encodes.
    """
    import torch
    import torch.nn.functional as F

    from scail.video import resize_crop

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
    max_frames: int | None = MAX_FRAMES,
    downscale: int = 1,
) -> AnimateInputs:
    """Read and preprocess the reference image and the pose video of one example.

    Args:
        reference: ref.jpg / ref.png.
        pose_video: rendered_aligned.mp4 or rendered.mp4.
        size_hw: output (H, W); default from the reference's orientation (official SAT rule).
        max_frames: use at most this many pose frames (then 4k + 1 of them).
        downscale: divide the orientation-rule size by this (the tiny-random model runs at 1/4:
            128x224), ignored when `size_hw` is given.
    """
    from scail.video import probe, read_frames, target_size_hw

    ref = load_reference(reference)
    if size_hw is None:
        h, w = target_size_hw(int(ref.shape[1]), int(ref.shape[2]))
        size_hw = (h // downscale, w // downscale)
    check_size(size_hw)
    info = probe(pose_video)
    frames = read_frames(pose_video, max_frames=max_frames)  # never decodes more than it uses
    n = used_frame_count(len(frames), None)
    total = max(info.num_frames, len(frames))
    if n < total:
        log.warning(
            "%s: using %d of %d frames (the model takes 4k+1 frames, at most %s)",
            pose_video, n, total, max_frames if max_frames is not None else "unlimited",
        )
    _, half = prepare_pose(frames[:n], size_hw)
    return AnimateInputs(
        ref_image=prepare_reference(ref, size_hw),
        pose_video=half,
        fps=float(info.fps),
        source_frames=total,
    )

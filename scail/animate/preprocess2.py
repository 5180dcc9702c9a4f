"""SCAIL-2's identity masks as the DiT takes them: the official 28-channel compression and resize path.

A mask is an RGB image or video where a colour binds a region to a character identity
(research/scail2-model.md §2). `compress_mask` is the official `extract_and_compress_mask_to_latent`
(SAT `sample_video.py`; the wan branch's `scail_utils` does the same arithmetic):

1. a channel is on where its value > (225 - 127.5) / 127.5 (pixel 225 is off, 226 on);
2. seven binary planes: white, red, green, blue, yellow, magenta, cyan (any other colour is none);
3. area-downsampled by 8 (three halvings, rounding up): coverage fractions, not re-binarised;
4. the first frame repeated 4x, then every 4 frames stacked as one latent frame: channel 7k + c of
   latent frame j is colour c of pixel frame max(0, 4j - 3 + k).

Resizing before it follows the official wan-branch `generate.py` (§2.2): the driving mask is uint8
cover-resized (bicubic) and centre-cropped to the output size, normalised, then halved (bilinear,
no antialias) like the pose video; the reference mask is cover-resized and cropped as the reference
image. ComfyUI and Wan2GP resize masks differently (area / nearest): that changes edge values only.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from scail.animate.dit2 import MASK_COLOURS

COLOURS: tuple[str, ...] = ("white", "red", "green", "blue", "yellow", "magenta", "cyan")
"""The mask colours in channel order; (r, g, b) on/off patterns in `_PATTERNS`."""
_PATTERNS: tuple[tuple[bool, bool, bool], ...] = (
    (True, True, True),
    (True, False, False),
    (False, True, False),
    (False, False, True),
    (True, True, False),
    (True, False, True),
    (False, True, True),
)
ON_THRESHOLD = (225 - 127.5) / 127.5
"""A channel in [-1, 1] is on above this (official: `mask > (225 - 127.5) / 127.5`)."""
TEMPORAL_STRIDE = 4  # pixel frames per latent frame (the Wan VAE's temporal compression)
SPATIAL_STRIDE = 8  # pixels per latent cell


def colour_planes(video: torch.Tensor) -> torch.Tensor:
    """(3, T, H, W) in [-1, 1] -> (T, 7, H, W) float32 0/1: which of the 7 mask colours each pixel is."""
    if video.dim() != 4 or video.shape[0] != 3:
        raise ValueError(f"mask must be (3, T, H, W) RGB in [-1, 1], got {tuple(video.shape)}")
    on = video > ON_THRESHOLD  # (3, T, H, W) bool
    r, g, b = on.unbind(0)
    planes = [(r if pr else ~r) & (g if pg else ~g) & (b if pb else ~b) for pr, pg, pb in _PATTERNS]
    return torch.stack(planes, dim=1).to(torch.float32)


def compress_mask(video: torch.Tensor) -> torch.Tensor:
    """The official 28-channel compression: (3, T, H, W) in [-1, 1], T = 4k + 1 -> (28, k + 1, h, w).

    h, w = ceil(ceil(ceil(H / 2) / 2) / 2) (and W alike). A still image (T = 1) gives one latent
    frame with its 7 planes repeated 4 times.
    """
    t = int(video.shape[1]) if video.dim() == 4 else 0
    if t < 1 or (t - 1) % TEMPORAL_STRIDE:
        raise ValueError(f"mask video must have 4k+1 frames, got {t}")
    planes = colour_planes(video)  # (T, 7, H, W)
    h, w = planes.shape[-2:]
    size = (_latent_side(h), _latent_side(w))
    planes = F.interpolate(planes, size=size, mode="area")  # coverage fractions, (T, 7, h, w)
    padded = torch.cat([planes[:1].expand(TEMPORAL_STRIDE, -1, -1, -1), planes[1:]])  # (T + 3, 7, h, w)
    latent_frames = padded.shape[0] // TEMPORAL_STRIDE
    grouped = padded.reshape(latent_frames, TEMPORAL_STRIDE * MASK_COLOURS, *size)  # (F, 28, h, w)
    return grouped.permute(1, 0, 2, 3).contiguous()  # (28, F, h, w)


def _latent_side(n: int) -> int:
    """ceil(ceil(ceil(n / 2) / 2) / 2): the VAE's three halvings (official size rule)."""
    for _ in range(3):
        n = -(-n // 2)
    return n


def driving_mask_latent(frames: np.ndarray, size_hw: tuple[int, int]) -> torch.Tensor:
    """A decoded driving-mask video (T, H1, W1, 3) uint8 -> (28, F, H/16, W/16) at the pose latent's size.

    Official path: uint8 cover-resize + centre crop to `size_hw`, (x - 127.5) / 127.5, bilinear 0.5x
    (no antialias), `compress_mask`.
    """
    from scail.animate.preprocess import prepare_pose

    _, half = prepare_pose(frames, size_hw)  # (3, T, H/2, W/2): the pose video's exact path
    return compress_mask(half)


def ref_mask_latent(image: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """A reference mask (3, H0, W0) in [-1, 1] (`preprocess.load_reference`) -> (28, 1, H/8, W/8).

    Official path: the reference image's bicubic cover-resize + centre crop, then `compress_mask`.
    """
    from scail.animate.preprocess import prepare_reference

    return compress_mask(prepare_reference(image, size_hw)[:, None])

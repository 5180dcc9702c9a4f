"""The official frame geometry: output sizes, the resize + centre crop, 4n+1 frame counts.

What the official SCAIL code does to frames before the model sees them (research/scail-model.md),
reproduced bit for bit (tests/test_frame_geometry.py, and the pipeline fixture in tests/test_video.py):

* `target_size_hw`: landscape inputs become 512x896, portrait and square ones 896x512;
* `resize_crop`: cover-resize (bicubic, antialias) then centre crop, on numpy frames or tensors;
* `frame_count_4n1`: the Wan VAE keeps 4k + 1 frames.

torch is imported inside the functions that use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, overload

import numpy as np

if TYPE_CHECKING:
    import torch

_RESIZE_CHUNK = 8
"""Frames resized at once: bounds the float32 working copy (8 x 3 x 1080 x 2048 x 4 B = 212 MB)."""


def target_size_hw(h: int, w: int) -> tuple[int, int]:
    """The official output size for an input of h x w: landscape (h < w) -> 512x896, else 896x512."""
    return (512, 896) if h < w else (896, 512)


@overload
def resize_crop(frames: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray: ...
@overload
def resize_crop(frames: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor: ...
def resize_crop(frames: np.ndarray | torch.Tensor, size_hw: tuple[int, int]) -> np.ndarray | torch.Tensor:
    """Official `resize_for_rectangle_crop(..., reshape_mode="center")`: cover-resize, then centre crop.

    Scales so that `size_hw` is covered (official: if W0/H0 > W/H resize to (H, int(W0*H/H0)),
    else to (int(H0*W/W0), W)) with torchvision's tensor resize: bicubic, antialias, float32 math;
    uint8 input is clamped to [0, 255] and rounded back to uint8. Float input is not clamped
    (official: the [-1, 1] reference image may overshoot slightly). Then crops at
    top = (h' - H) // 2, left = (w' - W) // 2.

    Args:
        frames: (N, H0, W0, 3) or (H0, W0, 3) uint8 numpy RGB, or a torch tensor (N, C, H0, W0)
            or (C, H0, W0) of any float dtype or uint8.
        size_hw: target (H, W).

    Returns:
        The same kind, layout and dtype as `frames`, with spatial size `size_hw`.
    """
    import torch

    if isinstance(frames, np.ndarray):
        if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or frames.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) or (H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        nhwc = frames[None] if frames.ndim == 3 else frames
        # the official path permutes decord's (T, H, W, 3) to (T, 3, H, W) without a copy; same strides here
        out = _resize_crop_tensor(torch.from_numpy(nhwc).permute(0, 3, 1, 2), size_hw)
        result = np.ascontiguousarray(out.permute(0, 2, 3, 1).numpy())
        return result[0] if frames.ndim == 3 else result
    if frames.ndim not in (3, 4):
        raise ValueError(f"expected a (N, C, H, W) or (C, H, W) tensor, got shape {tuple(frames.shape)}")
    out = _resize_crop_tensor(frames[None] if frames.ndim == 3 else frames, size_hw)
    return out[0] if frames.ndim == 3 else out


def _cover_size(h0: int, w0: int, size_hw: tuple[int, int]) -> tuple[int, int]:
    h, w = size_hw
    if w0 / h0 > w / h:
        return h, int(w0 * h / h0)
    return int(h0 * w / w0), w


def _resize_crop_tensor(x: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """x: (N, C, H0, W0) -> (N, C, H, W), same dtype; resized in chunks of frames to bound memory."""
    h, w = size_hw
    h0, w0 = x.shape[-2:]
    rh, rw = _cover_size(h0, w0, size_hw)
    if (rh, rw) != (h0, w0):  # torchvision returns the input unchanged when the size already matches
        x = _torch_cat(
            [_bicubic_aa(x[i : i + _RESIZE_CHUNK], (rh, rw)) for i in range(0, len(x), _RESIZE_CHUNK)]
        )
    top, left = (rh - h) // 2, (rw - w) // 2
    return x[..., top : top + h, left : left + w]


def _torch_cat(chunks: list[torch.Tensor]) -> torch.Tensor:
    import torch

    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


def _bicubic_aa(x: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """torchvision's tensor `resize(BICUBIC, antialias=True)`, with its dtype handling."""
    import torch
    import torch.nn.functional as F

    out_dtype = x.dtype
    work = x if out_dtype in (torch.float32, torch.float64) else x.to(torch.float32)
    y = F.interpolate(work, size=list(size_hw), mode="bicubic", align_corners=False, antialias=True)
    if out_dtype == torch.uint8:
        y = y.clamp(0, 255)
    if y.dtype != out_dtype:
        if not out_dtype.is_floating_point:
            y = torch.round(y)
        y = y.to(out_dtype)
    return y


def frame_count_4n1(n: int) -> int:
    """The largest frame count of the form 4k + 1 that is <= n (what the Wan VAE keeps): 81, 65, ..."""
    if n < 1:
        raise ValueError(f"need at least one frame, got {n}")
    return 1 + 4 * ((n - 1) // 4)

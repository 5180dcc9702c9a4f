"""SCAIL-2 test helpers: fixture cases (fixtures/scail2/dit) as the DiT's keyword arguments, and
example folders with synthetic identity masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from scail.animate.dit import pad_context
from scail.example import Example
from scail.video import write_video


def btchw(a: np.ndarray) -> torch.Tensor:
    """Official per-sample [C, T, h, w] -> the DiT's (1, T, C, h, w)."""
    return torch.from_numpy(a).permute(1, 0, 2, 3)[None].contiguous()


def case_inputs(root: Path, case: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """DiT keyword arguments for the case (cond branch) and the uncond context."""
    i = dict(np.load(root / case / "inputs.npz"))
    ref_masks = i["ref_masks"]  # [28, 1+T, h, w]: the ref's mask, then T zero frames (official)
    assert not ref_masks[:, 1:].any()
    kwargs: dict = {
        "x": btchw(i["x"]),
        "timesteps": torch.from_numpy(i["t"]),
        "context": pad_context(torch.from_numpy(i["context"])[None], 512),
        "ref_latent": btchw(i["ref_latents"]),
        "pose_latent": btchw(i["pose_latents"]),
        "clip_features": load_file(str(root / "clip_fea.safetensors"))["clip_fea"].float(),
        "ref_mask": btchw(ref_masks[:, :1]),
        "driving_mask": btchw(i["driving_masks"]),
        "replace": bool(i["replace_flag"]),
    }
    if "additional_ref_latents" in i:
        kwargs["extra_refs"] = btchw(i["additional_ref_latents"])
        kwargs["extra_ref_masks"] = btchw(i["additional_ref_masks"])
    if "history_mask" in i:
        hist = i["history_mask"]  # [4, T, h, w]: 1 on the anchor's latent frames
        frames = int(hist[0, :, 0, 0].sum())
        expected = np.zeros_like(hist)
        expected[:, :frames] = 1
        assert frames == 2 and np.array_equal(hist, expected)
        kwargs["history_frames"] = frames
    null = pad_context(torch.from_numpy(i["context_null"])[None], 512)
    return kwargs, {"context_null": null}


H, W = 64, 96


def person_masks(frames: int, background: tuple[int, int, int]) -> np.ndarray:
    """Two identities (blue left, red right) moving right on `background`, (T, H, W, 3) uint8."""
    video = np.empty((frames, H, W, 3), np.uint8)
    video[:] = background
    for t in range(frames):
        video[t, 16:56, 8 + t : 30 + t] = (0, 0, 255)
        video[t, 16:56, 56 + t : 80 + t] = (255, 0, 0)
    return video


def make_example(root: Path, frames: int = 9, *, replace: bool = False, raw: bool = True,
                 v2: bool = False, extra: int = 0) -> Example:  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (H * 2, W * 2, 3), dtype=np.uint8)).save(root / "ref.png")
    video = rng.integers(0, 255, (frames, H, W, 3), dtype=np.uint8)
    if raw:
        write_video(root / "driving.mp4", video, fps=24)
    if v2:
        write_video(root / "rendered_v2.mp4", video, fps=24)
    if replace:
        write_video(root / "replace_mask.mp4", person_masks(frames, (255, 255, 255))[..., :], fps=24)
        Image.fromarray(person_masks(1, (0, 0, 0))[0]).save(root / "ref_mask.png")
    else:
        write_video(root / "rendered_mask_v2.mp4", person_masks(frames, (0, 0, 0)), fps=24)
        Image.fromarray(person_masks(1, (255, 255, 255))[0]).save(root / "ref_mask.jpg")
    for k in range(1, extra + 1):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / f"extra_ref_{k}.png")
        Image.fromarray(person_masks(1, (0, 0, 0))[0]).save(root / f"extra_ref_mask_{k}.png")
    return Example(root)

"""SCAIL-2's example-folder contract and its inputs, prepared as the official code does.

Files (research/scail2-model.md §3; official SAT `sample_video.py` names, plus scail's own):

    ref.jpg | ref.png | ref_image.*     the reference (official search order)
    ref_mask.jpg | ref_mask.png         its identity mask (animation: white background; replacement: black)
    rendered_v2.mp4                     the video the DiT is driven by (official): the raw driving video
                                        (end-to-end, replacement) or a skeleton render (pose-driven)
    driving.mp4                         the raw driving video (end-to-end / replacement without rendered_v2)
    rendered_aligned.mp4 | rendered.mp4 scail's skeleton render (pose-driven without rendered_v2)
    rendered_mask_v2.mp4                driving identity mask, black background -> animation
    replace_mask.mp4                    driving mask, white background, region to replace -> replacement
    extra_ref_<k>.jpg|png + extra_ref_mask_<k>.jpg|png   extra references (k = 1, 2, ...): multi-reference

The mode: `replacement` when replace_mask.mp4 exists (official SAT rule), else animation, driven by
rendered_v2.mp4 when present, else by the raw driving video (`end-to-end`, the recommended mode),
else by scail's skeleton render (`pose`). A setting (`animate.scail2_mode`) can force one; the DiT
sees end-to-end and pose-driven inputs the same way, only the video differs. Extra references
combine with either mode.

Preprocessing (§7): the reference, its mask and the extra references and masks go through the
reference's bicubic cover-resize + centre crop; the driving video and its mask through the pose
video's uint8 cover-resize, normalisation and bilinear 0.5x. The mask video stays a half-resolution
RGB video here: it is compressed to 28 channels per segment (`preprocess2.compress_mask`), since a
segment's first frame is repeated 4x.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from scail.errors import InputError
from scail.example import DRIVING_NAMES, Example

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

Scail2Mode = Literal["end-to-end", "pose", "replacement"]
MODES: tuple[Scail2Mode, ...] = ("end-to-end", "pose", "replacement")

REF_MASK_NAMES = ("ref_mask.jpg", "ref_mask.png")
RENDERED_V2 = "rendered_v2.mp4"
ANIMATION_MASK = "rendered_mask_v2.mp4"
REPLACE_MASK = "replace_mask.mp4"
_EXTRA_REF = re.compile(r"extra_ref_(\d+)\.(jpg|jpeg|png)$")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Scail2Files:
    """The files of one SCAIL-2 example and the mode they imply."""

    mode: Scail2Mode
    reference: Path
    reference_mask: Path
    driving: Path
    """The video the DiT is driven by (its `pose_latent`)."""
    driving_mask: Path
    extra_refs: tuple[tuple[Path, Path], ...] = ()
    """(image, mask) of each extra reference, by k."""

    @property
    def replace(self) -> bool:
        return self.mode == "replacement"

    def all(self) -> list[Path]:
        """Every input file (the stage's fingerprint)."""
        extra = [p for pair in self.extra_refs for p in pair]
        return [self.reference, self.reference_mask, self.driving, self.driving_mask, *extra]


def _first(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / n for n in names if (root / n).is_file()), None)


def detect_mode(root: Path) -> Scail2Mode:
    """The mode implied by the files present (see the module docstring)."""
    if (root / REPLACE_MASK).is_file():
        return "replacement"
    if (root / RENDERED_V2).is_file() or _first(root, DRIVING_NAMES) is not None:
        return "end-to-end"
    return "pose"


def driving_video(example: Example, mode: Scail2Mode) -> Path | None:
    """The video that drives the DiT in `mode`, or None if the folder has none."""
    root = example.root
    v2 = root / RENDERED_V2
    if mode == "pose":  # rendered_v2 is the official skeleton render in a pose-driven folder
        return v2 if v2.is_file() else example.pose_video()
    raw = example.find_driving()
    # end-to-end / replacement: the raw video; an official folder holds it as rendered_v2.mp4
    return raw if raw is not None else (v2 if v2.is_file() else None)


def extra_references(root: Path) -> tuple[tuple[Path, Path], ...]:
    """Extra references `extra_ref_<k>.*` with their masks `extra_ref_mask_<k>.*`, in k order."""
    found: dict[int, Path] = {}
    for p in root.iterdir():
        m = _EXTRA_REF.match(p.name)
        if m and p.is_file():
            found.setdefault(int(m.group(1)), p)
    pairs = []
    for k in sorted(found):
        mask = _first(root, tuple(f"extra_ref_mask_{k}{s}" for s in _IMAGE_SUFFIXES))
        if mask is None:
            raise InputError(
                f"{found[k]}: extra reference {k} has no mask; add extra_ref_mask_{k}.png "
                "(the identity colour on black, or white over a background plate)"
            )
        pairs.append((found[k], mask))
    return tuple(pairs)


def locate(example: Example, mode: Scail2Mode | Literal["auto"] = "auto") -> Scail2Files:
    """The files of `example` for `mode` ("auto": `detect_mode`); InputError names what is missing."""
    root = example.root
    resolved: Scail2Mode = detect_mode(root) if mode == "auto" else mode
    reference = example.reference()
    driving = driving_video(example, resolved)
    if driving is None:
        wanted = {
            "pose": f"{RENDERED_V2} or a skeleton render (run the pose and render stages)",
            "end-to-end": f"{DRIVING_NAMES[0]} or {RENDERED_V2}",
            "replacement": f"{DRIVING_NAMES[0]} or {RENDERED_V2}",
        }[resolved]
        raise InputError(f"{root}: SCAIL-2 {resolved} mode needs {wanted}; add it")
    mask_name = REPLACE_MASK if resolved == "replacement" else ANIMATION_MASK
    driving_mask = root / mask_name
    ref_mask = _first(root, REF_MASK_NAMES)
    missing = [n for n, p in ((mask_name, driving_mask), ("ref_mask.png", ref_mask)) if p is None or not p.is_file()]
    if missing:
        background = "white" if resolved == "replacement" else "black"
        raise InputError(
            f"{root}: SCAIL-2 {resolved} mode needs {' and '.join(missing)} (identity masks: the driving "
            f"mask on a {background} background, each person in its colour); run the mask stage "
            "(`animate.masks`) or add them"
        )
    assert ref_mask is not None
    return Scail2Files(resolved, reference, ref_mask, driving, driving_mask, extra_references(root))


# --------------------------------------------------------------------------------------------------
# Loading and preprocessing
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scail2Inputs:
    """The preprocessed inputs of one SCAIL-2 sample (the whole video; segments cut later).

    Attributes:
        mode: end-to-end, pose or replacement.
        ref_image: (3, H, W) float32 reference in [-1, 1].
        ref_mask: (28, 1, H/8, W/8) compressed reference mask.
        driving: (3, T, H/2, W/2) float32 half-resolution driving video in [-1, 1].
        driving_mask: (3, T, H/2, W/2) float32 half-resolution driving mask video in [-1, 1].
        extra_refs: (3, H, W) float32 images; extra_ref_masks: their (28, 1, H/8, W/8) masks.
        fps: the driving video's frame rate (the output's).
        source_frames: frames in the driving video file.
    """

    mode: Scail2Mode
    ref_image: torch.Tensor
    ref_mask: torch.Tensor
    driving: torch.Tensor
    driving_mask: torch.Tensor
    fps: float
    source_frames: int
    extra_refs: list[torch.Tensor] = field(default_factory=list)
    extra_ref_masks: list[torch.Tensor] = field(default_factory=list)

    @property
    def replace(self) -> bool:
        return self.mode == "replacement"

    @property
    def size_hw(self) -> tuple[int, int]:
        return int(self.ref_image.shape[1]), int(self.ref_image.shape[2])

    @property
    def num_frames(self) -> int:
        return int(self.driving.shape[1])


def load_inputs2(
    files: Scail2Files,
    size_hw: tuple[int, int] | None = None,
    max_frames: int | None = None,
    downscale: int = 1,
) -> Scail2Inputs:
    """Read and preprocess one SCAIL-2 example.

    Args:
        files: from `locate`.
        size_hw: output (H, W); default by the reference's orientation (512x896 or 896x512).
        max_frames: use at most this many driving frames (None: all; long videos run in segments).
        downscale: divide the orientation-rule size by this (tiny-random models), unless size_hw is set.
    """
    from scail.animate.pipeline2 import SEGMENT_FRAMES
    from scail.animate.preprocess import (
        check_size,
        load_reference,
        prepare_pose,
        prepare_reference,
        used_frame_count,
    )
    from scail.animate.preprocess2 import ref_mask_latent
    from scail.frame_geometry import target_size_hw
    from scail.video import probe, read_frames

    ref = load_reference(files.reference)
    if size_hw is None:
        h, w = target_size_hw(int(ref.shape[1]), int(ref.shape[2]))
        size_hw = (h // downscale, w // downscale)
    check_size(size_hw)
    info = probe(files.driving)
    frames = read_frames(files.driving, max_frames=max_frames)
    mask_frames = read_frames(files.driving_mask, max_frames=max_frames)
    if len(mask_frames) != len(frames):
        raise InputError(
            f"{files.driving_mask} has {len(mask_frames)} frames but {files.driving} has {len(frames)}; "
            "the mask video must have one frame per driving frame"
        )
    # one segment takes 4k+1 frames; longer videos run in 81-frame segments that cover every frame
    n = len(frames) if len(frames) > SEGMENT_FRAMES else used_frame_count(len(frames), None)
    total = max(info.num_frames, len(frames))
    if n < total:
        log.warning("%s: using %d of %d frames (the model takes 4k+1 frames)", files.driving, n, total)
    _, driving = prepare_pose(frames[:n], size_hw)
    _, mask = prepare_pose(mask_frames[:n], size_hw)
    extra = [(prepare_reference(load_reference(i), size_hw), load_reference(m)) for i, m in files.extra_refs]
    return Scail2Inputs(
        mode=files.mode,
        ref_image=prepare_reference(ref, size_hw),
        ref_mask=ref_mask_latent(load_reference(files.reference_mask), size_hw),
        driving=driving,
        driving_mask=mask,
        fps=float(info.fps),
        source_frames=total,
        extra_refs=[img for img, _ in extra],
        extra_ref_masks=[ref_mask_latent(m, size_hw) for _, m in extra],
    )

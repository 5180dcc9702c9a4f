"""Coloured identity masks for SCAIL-2: colour assignment and the mask images the model reads.

SCAIL-2 binds each character to a colour (research/scail2-model.md §2.3-2.4). The official tooling
(SCAIL-Pose) and ComfyUI assign the palette left to right by where each person first appears:

    palette (RGB): blue, red, green, magenta, cyan, yellow     (SCAIL-Pose DEFAULT_PALETTE_BGR)

and render, per mode:

    mode          driving mask (video)                      reference mask (image)
    animation     black background, each person its colour  white background, each person its colour
    replacement   white background, the region to replace   black background, the character in colour
                  in its colour

The reference's people get the colours of the driving video's people of the same left-to-right
rank (official: matched by normalised centre, which is the same when the layouts agree). Where
people overlap, the larger box (usually the nearer person) is painted last and wins.

This module only paints: the per-person binary masks come from a segmentation backend
(`mask_stage`), or the user provides the finished files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

PALETTE_RGB: tuple[tuple[int, int, int], ...] = (
    (0, 0, 255),  # blue
    (255, 0, 0),  # red
    (0, 255, 0),  # green
    (255, 0, 255),  # magenta
    (0, 255, 255),  # cyan
    (255, 255, 0),  # yellow
)
"""The identity colours in assignment order (white is the visible background: 7 model colours)."""

MaskKind = Literal["driving", "reference"]
MIN_AREA_FRACTION = 0.01
"""official: tracks covering under 1 % of the frame are dropped."""


def left_to_right(boxes: np.ndarray) -> list[int]:
    """Order of P people by the x centre of their box where each first appears.

    Args:
        boxes: (N, P, 4+) x0, y0, x1, y1 per frame and person; NaN where a person is absent.

    Returns:
        Person indices, leftmost first; people never seen come last.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    centres = []
    for p in range(boxes.shape[1]):
        seen = np.flatnonzero(np.isfinite(boxes[:, p, :4]).all(axis=1))
        centres.append((boxes[seen[0], p, 0] + boxes[seen[0], p, 2]) / 2 if len(seen) else np.inf)
    return sorted(range(boxes.shape[1]), key=lambda p: (centres[p], p))


def assign_colours(boxes: np.ndarray) -> dict[int, tuple[int, int, int]]:
    """Person index -> RGB colour, left to right (see `left_to_right`); at most 6 people."""
    order = left_to_right(boxes)
    if len(order) > len(PALETTE_RGB):
        raise ValueError(f"{len(order)} people, but SCAIL-2 has {len(PALETTE_RGB)} identity colours")
    return {p: PALETTE_RGB[rank] for rank, p in enumerate(order)}


def paint(
    person_masks: Sequence[np.ndarray],
    colours: Sequence[tuple[int, int, int]],
    background: Literal["black", "white"],
) -> np.ndarray:
    """One mask frame: each person's (H, W) bool mask in its colour over the background, (H, W, 3) uint8.

    People are painted in order of mask area, smallest first, so the largest wins where they overlap.
    """
    if len(person_masks) != len(colours):
        raise ValueError(f"{len(person_masks)} masks but {len(colours)} colours")
    if not person_masks:
        raise ValueError("no person masks to paint")
    h, w = person_masks[0].shape
    out = np.full((h, w, 3), 255 if background == "white" else 0, dtype=np.uint8)
    for i in sorted(range(len(person_masks)), key=lambda i: int(person_masks[i].sum())):
        out[person_masks[i]] = colours[i]
    return out


def background_for(kind: MaskKind, replace: bool) -> Literal["black", "white"]:
    """The background colour of a mask: animation driving/replacement reference black, else white."""
    return "white" if (kind == "reference") != replace else "black"

"""Identity-mask colours: left-to-right assignment, backgrounds by mode, overlap order, and that the
painted masks compress to the intended 28-channel planes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scail.animate.identity_masks import PALETTE_RGB, assign_colours, background_for, left_to_right, paint
from scail.animate.preprocess2 import COLOURS, compress_mask

NAN = np.nan


def test_left_to_right_by_first_appearance() -> None:
    boxes = np.array([
        [[60, 0, 80, 10], [NAN, NAN, NAN, NAN], [0, 0, 20, 10]],
        [[0, 0, 10, 10], [30, 0, 40, 10], [70, 0, 90, 10]],  # later positions do not matter
    ])  # fmt: skip
    assert left_to_right(boxes) == [2, 1, 0]
    colours = assign_colours(boxes)
    assert colours == {2: PALETTE_RGB[0], 1: PALETTE_RGB[1], 0: PALETTE_RGB[2]}  # blue, red, green
    never = np.concatenate([boxes, np.full((2, 1, 4), NAN)], axis=1)
    assert left_to_right(never)[-1] == 3
    with pytest.raises(ValueError, match="6 identity colours"):
        assign_colours(np.tile(boxes[:, :1], (1, 7, 1)))


def test_backgrounds_by_mode() -> None:
    assert background_for("driving", replace=False) == "black"
    assert background_for("reference", replace=False) == "white"
    assert background_for("driving", replace=True) == "white"
    assert background_for("reference", replace=True) == "black"


def test_paint_overlap_and_compression() -> None:
    small = np.zeros((16, 16), bool)
    small[4:12, 4:12] = True
    big = np.zeros((16, 16), bool)
    big[0:16, 8:16] = True
    frame = paint([big, small], [PALETTE_RGB[1], PALETTE_RGB[0]], "white")
    assert tuple(frame[0, 0]) == (255, 255, 255)
    assert tuple(frame[6, 6]) == PALETTE_RGB[0]  # small only
    assert tuple(frame[6, 10]) == PALETTE_RGB[1]  # overlap: the larger mask wins
    planes = compress_mask(torch.from_numpy(frame).permute(2, 0, 1)[:, None].float() / 127.5 - 1)
    means = planes[:7, 0].mean(dim=(1, 2))  # one still frame: the 7 planes
    on = {COLOURS[i] for i in range(7) if means[i] > 0}
    assert on == {"white", "red", "blue"}
    with pytest.raises(ValueError, match="2 masks but 1 colours"):
        paint([big, small], [PALETTE_RGB[0]], "black")

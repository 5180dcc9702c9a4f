"""SCAIL-2 masks: the official 28-channel compression, bit-exact on fixtures/scail2/masks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from scail.animate.preprocess import load_reference
from scail.animate.preprocess2 import COLOURS, compress_mask, driving_mask_latent, ref_mask_latent

CASES = ["anim_2id_land", "replace_1id_land", "anim_3id_portrait", "chart_all_colours"]


@pytest.mark.parametrize("case", CASES)
def test_official_compression_bit_exact(fixture_path: Callable[..., Path], case: str) -> None:
    root = fixture_path("scail2", "masks")
    expected = load_file(str(root / "expected.safetensors"))
    frames = np.load(root / f"driving_mask_{case}.npz")["frames"]  # (T, H, W, 3) uint8
    size = frames.shape[1:3]
    driving = driving_mask_latent(frames, size)
    assert torch.equal(driving, expected[f"{case}.driving_path"])
    video = (torch.from_numpy(frames).permute(3, 0, 1, 2).float() - 127.5) / 127.5  # (3, T, H, W)
    assert torch.equal(compress_mask(video), expected[f"{case}.fullres_compress"])
    ref = load_reference(root / f"ref_mask_{case}.png")
    assert torch.equal(ref_mask_latent(ref, size), expected[f"{case}.ref_path"])


def test_threshold_and_colours(fixture_path: Callable[..., Path]) -> None:
    """225 is off and 226 on in both normalisations; each palette colour lights its own plane only."""
    probes = json.loads(fixture_path("scail2", "masks", "masks.json").read_text())["threshold_probes"]
    for value, want in probes.items():
        px = torch.full((3, 1, 8, 8), float(value))
        for norm, key in (((px - 127.5) / 127.5, "driving_norm_on"), (px / 255 * 2 - 1, "ref_norm_on")):
            out = compress_mask(norm)
            assert bool(out[0].any()) == want[key]  # white plane
    rgb = {"white": (255, 255, 255), "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
           "yellow": (255, 255, 0), "magenta": (255, 0, 255), "cyan": (0, 255, 255)}  # fmt: skip
    for c, name in enumerate(COLOURS):
        px = torch.tensor(rgb[name], dtype=torch.float32)[:, None, None, None].expand(3, 5, 16, 16)
        out = compress_mask(px / 127.5 - 1)  # (28, 2, 2, 2)
        on = out.reshape(4, 7, 2, 2, 2).amax(dim=(0, 2, 3, 4))
        assert on.tolist() == [1.0 if i == c else 0.0 for i in range(7)], name
    black = compress_mask(torch.full((3, 1, 8, 8), -1.0))
    assert not black.any()


def test_temporal_packing() -> None:
    """Channel 7k + c of latent frame j is plane c of pixel frame max(0, 4j - 3 + k)."""
    t = 9
    video = torch.full((3, t, 8, 8), -1.0)
    for f in range(t):  # frame f: red in the top rows proportional to f (a unique coverage per frame)
        video[0, f, : f % 8 + 1] = 1.0
    out = compress_mask(video)  # (28, 3, 1, 1)
    red = [float((f % 8 + 1) / 8) for f in range(t)]
    for j in range(3):
        for k in range(4):
            assert out[7 * k + 1, j, 0, 0].item() == red[max(0, 4 * j - 3 + k)]


def test_bad_frame_count_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="4k\\+1 frames, got 6"):
        compress_mask(torch.zeros(3, 6, 8, 8))
    with pytest.raises(ValueError, match="RGB"):
        compress_mask(torch.zeros(1, 5, 8, 8))


def test_odd_sizes_round_up(tmp_path: Path) -> None:
    img = np.zeros((20, 36, 3), np.uint8)
    img[:, :18] = (255, 0, 0)
    Image.fromarray(img).save(tmp_path / "m.png")
    out = compress_mask(load_reference(tmp_path / "m.png")[:, None])
    assert out.shape == (28, 1, 3, 5)  # ceil(20/8), ceil(36/8) through three halvings

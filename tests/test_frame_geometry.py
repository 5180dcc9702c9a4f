"""The official frame geometry: output sizes, 4n+1 frame counts, resize + centre crop (layouts, chunking).

The bit-exact check against the official pipeline's decoded and resized frames is in tests/test_video.py.
"""

from __future__ import annotations

import numpy as np

from scail import frame_geometry


def test_target_size_and_4n1() -> None:
    assert frame_geometry.target_size_hw(1080, 1920) == (512, 896)
    assert frame_geometry.target_size_hw(1920, 1080) == (896, 512)
    assert frame_geometry.target_size_hw(512, 512) == (896, 512)
    assert [frame_geometry.frame_count_4n1(n) for n in (1, 4, 5, 65, 80, 81, 84)] == [1, 1, 5, 65, 77, 81, 81]


def test_resize_crop_cover_sizes_and_layouts() -> None:
    import torch

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 108, 204, 3), np.uint8)
    out = frame_geometry.resize_crop(img, (64, 112))
    assert isinstance(out, np.ndarray) and out.shape == (2, 64, 112, 3) and out.dtype == np.uint8
    assert frame_geometry.resize_crop(img[0], (64, 112)).shape == (64, 112, 3)
    np.testing.assert_array_equal(frame_geometry.resize_crop(img[1], (64, 112)), out[1])

    t = torch.from_numpy(img).permute(0, 3, 1, 2).float() / 127.5 - 1
    tout = frame_geometry.resize_crop(t, (64, 112))
    assert isinstance(tout, torch.Tensor) and tout.shape == (2, 3, 64, 112) and tout.dtype == torch.float32
    assert frame_geometry.resize_crop(t[0], (112, 64)).shape == (3, 112, 64)
    # uint8 = round(clamp(float result)): the two paths agree within rounding
    as_float = frame_geometry.resize_crop(torch.from_numpy(img).permute(0, 3, 1, 2).float(), (64, 112))
    expect = as_float.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(out, expect)


def test_resize_crop_chunking_matches_one_batch() -> None:
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(1)
    clip = rng.integers(0, 256, (11, 40, 72, 3), np.uint8)  # 11 > chunk size: three chunks
    out = frame_geometry.resize_crop(clip, (32, 32))
    x = torch.from_numpy(clip).permute(0, 3, 1, 2).float()
    ref = F.interpolate(x, size=[32, 57], mode="bicubic", align_corners=False, antialias=True)
    ref = ref.clamp(0, 255).round().to(torch.uint8)[..., :, 12:44].permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(out, ref)

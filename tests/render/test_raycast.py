"""The ray-capsule renderer: tile culling loses nothing, and the official geometry/shading hold."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scail.render import raycast
from scail.render.raycast import Camera, DepthShading, render_capsules
from scail.render.skeleton import Capsules


def _caps(starts: np.ndarray, ends: np.ndarray) -> Capsules:
    t, k = starts.shape[:2]
    colors = np.full((t, k, 3), 0.65, np.float32)
    colors[..., 0] = np.linspace(0.2, 1.0, k, dtype=np.float32)
    return Capsules(starts.astype(np.float32), ends.astype(np.float32), colors, np.ones((t, k), bool))


def test_tile_culling_matches_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    cam = Camera(fx=120.0, fy=110.0, cx=80.0, cy=48.0, height=96, width=160)
    a = rng.uniform([-600, -400, 300], [600, 400, 3000], size=(2, 12, 3))
    b = a + rng.normal(0, 250, size=a.shape)
    a[0, 0] = [0.0, 0.0, 40.0]                                  # one capsule right at the camera
    b[0, 1] = a[0, 1]                                           # and one of zero length
    caps = _caps(a, b)
    depth = DepthShading.from_range(caps.depth_range())
    culled = render_capsules(caps, cam, depth)

    def all_pairs(a_np, b_np, cam_, r, device):  # type: ignore[no-untyped-def]
        m, n = len(a_np), cam_.height * cam_.width
        cap = torch.arange(m).repeat_interleave(n)
        pix = torch.arange(n).repeat(m)
        return cap, pix % cam_.width, pix // cam_.width

    monkeypatch.setattr(raycast, "_pairs", all_pairs)
    brute = render_capsules(caps, cam, depth)
    assert (brute.max(-1).values > 0).sum() > 1000
    assert torch.equal(culled, brute)


def test_capsule_width_and_centre_shading() -> None:
    """A vertical capsule facing the camera: 2 R f / z pixels wide, centre lit as the official formula."""
    cam = Camera(fx=860.6, fy=860.6, cx=448.0, cy=256.0, height=512, width=896)
    z = 3000.0
    caps = _caps(np.array([[[0.0, -300.0, z]]]), np.array([[[0.0, 300.0, z]]]))
    depth = DepthShading.from_range(caps.depth_range())
    img = render_capsules(caps, cam, depth, radius_mm=21.5)[0].numpy()
    row = img[256].max(-1) > 0
    width = row.sum()
    assert abs(width - 2 * 21.5 * 860.6 / (z - 21.5)) <= 1.5
    # centre pixel: normal (0, 0, -1) -> diffuse 1, specular 1; depth factor from the clip constants
    p_z = np.float32(z - 21.5)
    df = 1 - (p_z - np.float32(depth.depth_near)) / (np.float32(depth.depth_far) - np.float32(0.1))
    expect = np.floor(np.clip(caps.colors[0, 0] * df + 0.5 * df, 0, 1) * 255)
    np.testing.assert_allclose(img[256, 448], expect, atol=1)
    assert math.isclose(depth.zfar, 10000.0) and depth.depth_near == pytest.approx(z, abs=1e-3)

"""The vectorised 2D overlay (`overlay_marks`) paints exactly what the OpenCV reference (`draw_overlay`) paints."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from scail.demo import dancer_pose
from scail.pose.schema import PoseData
from scail.render import prepare_render, render_pose
from scail.render.overlay import _stamp, draw_overlay, line_pixels, overlay_marks
from scail.render.raycast import render_capsules

LANDSCAPE = (512, 896)


def _reference(body: np.ndarray, face: np.ndarray, hands: np.ndarray, frames: np.ndarray) -> np.ndarray:
    out = frames.copy()
    for t in range(out.shape[0]):
        draw_overlay(out[t], body[t], face[t], hands[t])
    return out


def _vectorised(body: np.ndarray, face: np.ndarray, hands: np.ndarray, frames: np.ndarray) -> np.ndarray:
    out = frames.copy()
    overlay_marks(body, face, hands, frames.shape[1:3]).paste(out)
    return out


def _assert_same(body: np.ndarray, face: np.ndarray, hands: np.ndarray, size_hw: tuple[int, int],
                 seed: int = 0) -> np.ndarray:
    """Both paths on a random background (so per-channel replacement shows); returns the reference."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (body.shape[0], *size_hw, 3), dtype=np.uint8)
    ref = _reference(body, face, hands, frames)
    new = _vectorised(body, face, hands, frames)
    bad = np.argwhere((ref != new).any(-1))
    assert bad.size == 0, f"{len(bad)} pixels differ, first (frame, y, x): {bad[:5].tolist()}"
    return ref


def _random_points(rng: np.random.Generator, shape: tuple[int, ...], centre: np.ndarray, spread: float) -> np.ndarray:
    """(..., 3) points around `centre` (..., 2) with scores around the 0.3 thresholds, NaNs and edge values."""
    pts = np.empty((*shape, 3))
    pts[..., :2] = centre[..., None, :] + rng.normal(0.0, spread, (*shape, 2))
    pts[..., 2] = rng.choice([0.0, 0.2, 0.3, 0.31, 0.9, 1.0], size=shape, p=[0.05, 0.05, 0.1, 0.1, 0.3, 0.4])
    edge = rng.random(shape) < 0.04                          # exactly on the borders and the 0.01 rule
    pts[..., 0][edge] = rng.choice([0.0, 1e-3, 0.0011, 0.999, 1.0, 1.002], size=int(edge.sum()))
    nan = rng.random(shape) < 0.02
    pts[..., rng.integers(0, 3)][nan] = np.nan
    return pts


def _random_pose(rng: np.random.Generator, t: int, p: int, spread: float = 0.05,
                 dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    centre = rng.uniform(-0.05, 1.05, (t, p, 2))
    body = _random_points(rng, (t, p, 18), centre, spread * 0.5)
    face = _random_points(rng, (t, p, 68), centre, spread * 0.3)
    hands = np.stack([_random_points(rng, (t, p, 21), centre + rng.normal(0, 0.2, (t, p, 2)), spread)
                      for _ in range(2)], axis=2)
    return body.astype(dtype), face.astype(dtype), hands.astype(dtype)


@pytest.mark.parametrize("num_people", [1, 2, 3])
def test_dancer_frames_are_bit_identical(num_people: int) -> None:
    pose = dancer_pose(12, LANDSCAPE, num_people)
    ref = _assert_same(pose.body2d, pose.face2d, pose.hands2d, LANDSCAPE)
    assert (ref != np.random.default_rng(0).integers(0, 256, ref.shape, dtype=np.uint8)).any()


@pytest.mark.parametrize(("size_hw", "num_people", "spread", "dtype"), [
    (LANDSCAPE, 1, 0.05, np.float32),
    ((896, 512), 2, 0.05, np.float64),          # portrait; float64 as after alignment
    (LANDSCAPE, 3, 0.3, np.float32),            # people overlapping, long lines, marks off the frame
    ((720, 1280), 2, 0.05, np.float32),         # 2 px lines and dots (drawn by OpenCV / 2 px stamps)
    ((37, 53), 2, 0.2, np.float32),             # tiny frame: nearly everything clipped
])
def test_random_poses_are_bit_identical(size_hw: tuple[int, int], num_people: int, spread: float,
                                        dtype: type) -> None:
    rng = np.random.default_rng(hash((size_hw, num_people)) % 2**32)
    body, face, hands = _random_pose(rng, 24, num_people, spread, dtype)
    _assert_same(body, face, hands, size_hw, seed=1)


def test_points_near_and_beyond_the_borders() -> None:
    """Hands and heads straddling every border: clipped dots, clipped lines (OpenCV), the 0.01 rule."""
    h, w = LANDSCAPE
    rng = np.random.default_rng(5)
    t = 40
    body, face, hands = _random_pose(rng, t, 2, 0.02)
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 1.0], [1.0, 0.5]])
    c = corners[np.arange(t) % len(corners)][:, None, None, :]                       # (T, 1, 1, 2)
    hands[..., :2] = (c[:, :, None] + rng.normal(0, 0.02, hands[..., :2].shape)).astype(hands.dtype)
    body[..., :2] = (c + rng.normal(0, 0.01, body[..., :2].shape)).astype(body.dtype)
    face[..., :2] = (c + rng.normal(0, 0.01, face[..., :2].shape)).astype(face.dtype)
    hands[::3, 0, 0, :4, :2] = np.array([[1 / w, 1 / h], [1.5 / w, 2 / h], [1.0, 1.0], [2.0, 3.0]], hands.dtype)
    _assert_same(body, face, hands, (h, w), seed=2)


def test_nothing_drawn_without_visible_points() -> None:
    size = (40, 60)
    for t, p in ((0, 1), (3, 0)):
        empty = PoseData.empty(t, p, size)
        marks = overlay_marks(empty.body2d, empty.face2d, empty.hands2d, size)
        assert marks.num_frames == t and marks.index.size == 0
    blank = PoseData.empty(3, 2, size)                                              # all NaN
    assert overlay_marks(blank.body2d, blank.face2d, blank.hands2d, size).index.size == 0
    body, face, hands = _random_pose(np.random.default_rng(0), 3, 2)
    for part in (body, face, hands):
        part[..., 2] = 0.1                                                           # below every threshold
    assert overlay_marks(body, face, hands, size).index.size == 0


def test_absurd_coordinates_do_not_crash() -> None:
    body, face, hands = _random_pose(np.random.default_rng(1), 4, 1, 0.05, np.float64)
    body[0, 0, 0, :2] = 1e20
    face[1, 0, 40, :2] = -1e30
    hands[2, 0, 0, 5, :2] = 1e15
    hands[3, 0, 1, 0, :2] = np.inf
    marks = overlay_marks(body, face, hands, LANDSCAPE)
    frames = np.zeros((4, *LANDSCAPE, 3), np.uint8)
    marks.paste(frames)
    assert frames.any()


def test_paste_checks_the_frames() -> None:
    pose = dancer_pose(2, LANDSCAPE, 1)
    marks = overlay_marks(pose.body2d, pose.face2d, pose.hands2d, LANDSCAPE)
    with pytest.raises(ValueError, match="cannot be pasted"):
        marks.paste(np.zeros((3, *LANDSCAPE, 3), np.uint8))
    with pytest.raises(ValueError, match="cannot be pasted"):
        marks.paste(np.zeros((2, LANDSCAPE[0], LANDSCAPE[1] * 2, 3), np.uint8)[:, :, ::2])


def test_line_pixels_equal_opencv_lines() -> None:
    """The closed-form 8-connected line equals cv2.line (thickness 1) for every unclipped segment."""
    h, w = 48, 64
    rng = np.random.default_rng(3)
    n = 20000
    x1, x2 = rng.integers(0, w, n), rng.integers(0, w, n)
    y1, y2 = rng.integers(0, h, n), rng.integers(0, h, n)
    x2[:500], y2[:500] = x1[:500], y1[:500]                                         # single points
    y2[500:1000] = y1[500:1000]                                                      # horizontal
    x2[1000:1500] = x1[1000:1500]                                                    # vertical
    d = rng.integers(-20, 21, 500)
    x2[1500:2000], y2[1500:2000] = np.clip(x1[1500:2000] + d, 0, w - 1), np.clip(y1[1500:2000] + d, 0, h - 1)
    seg, xs, ys = line_pixels(x1, y1, x2, y2)
    bounds = np.searchsorted(seg, np.arange(n + 1))
    img = np.zeros((h, w), np.uint8)
    for s in range(n):
        img[:] = 0
        cv2.line(img, (int(x1[s]), int(y1[s])), (int(x2[s]), int(y2[s])), 1, thickness=1)
        ref = np.flatnonzero(img)
        mine = np.unique(ys[bounds[s]:bounds[s + 1]] * w + xs[bounds[s]:bounds[s + 1]])
        assert np.array_equal(ref, mine), (x1[s], y1[s], x2[s], y2[s])


@pytest.mark.parametrize("radius", [1, 2, 4])
def test_dot_stamps_equal_opencv_circles(radius: int) -> None:
    dy, dx = _stamp(radius)
    h, w = 20, 30
    for cy in range(-radius - 1, h + radius + 1):
        for cx in (-radius, -1, 0, 1, w // 2, w - 2, w - 1, w, w + radius - 1):
            ref = np.zeros((h, w), np.uint8)
            cv2.circle(ref, (cx, cy), radius, 1, thickness=-1)
            mine = np.zeros((h, w), np.uint8)
            x, y = cx + dx, cy + dy
            ok = (x >= 0) & (x < w) & (y >= 0) & (y < h)
            mine[y[ok], x[ok]] = 1
            assert np.array_equal(ref, mine), (cx, cy)


def test_render_pose_pastes_the_reference_overlay() -> None:
    """End to end, in chunks: render_pose(overlay=True) == 3D frames + the reference overlay, frame by frame."""
    pose = dancer_pose(7, LANDSCAPE, 2)
    prep = prepare_render(pose, overlay=True)
    plain = render_capsules(prep.capsules, prep.camera, prep.depth, prep.radius_mm).numpy()
    assert prep.overlay is not None
    expected = _reference(*prep.overlay, plain)
    assert np.array_equal(render_pose(pose, overlay=True, chunk_frames=3), expected)
    assert np.array_equal(render_pose(pose, overlay=False, chunk_frames=3), plain)


def test_parallel_frame_copy() -> None:
    """The CUDA path's host copy, split between threads, copies every frame exactly."""
    from concurrent.futures import ThreadPoolExecutor

    from scail.render.pipeline import _copy_frames

    src = np.random.default_rng(0).integers(0, 256, (11, 6, 5, 3), dtype=np.uint8)
    for workers in (1, 3, 16):
        dst = np.zeros_like(src)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            _copy_frames(dst, src, pool, workers)
        assert np.array_equal(dst, src)


def test_streaming_stopped_early_then_rendering_again() -> None:
    from scail.render import iter_render_pose

    pose = dancer_pose(9, LANDSCAPE, 1)
    full = render_pose(pose, overlay=True, chunk_frames=2)
    frames = iter_render_pose(pose, overlay=True, chunk_frames=2)
    first = [next(frames) for _ in range(3)]
    frames.close()                                                                  # consumer stops
    assert all(np.array_equal(a, b) for a, b in zip(first, full, strict=False))
    assert np.array_equal(render_pose(pose, overlay=True, chunk_frames=4), full)


def _pools_in_child(queue: object) -> None:
    from scail.render.pipeline import _shared_pool

    # torch's and OpenMP's own thread state after a fork is outside scail's control, so the child
    # exercises only what scail owns: its reused pools must work in the child
    got = [_shared_pool(name, 2).submit(lambda n=name: n.upper()).result(timeout=20) for name in ("copy", "overlay")]
    queue.put(got)  # type: ignore[attr-defined]


def test_render_after_fork_uses_fresh_worker_threads() -> None:
    """The reused worker pools are per process: a forked child gets threads of its own (a pool
    inherited from the parent has no threads in the child, and waiting on it would hang)."""
    import multiprocessing as mp

    from scail.render.pipeline import _POOLS

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork on this platform")
    render_pose(dancer_pose(3, LANDSCAPE, 1), overlay=True, chunk_frames=2)      # the parent's pools exist
    assert {"copy", "overlay"} <= set(_POOLS)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_pools_in_child, args=(queue,))
    child.start()
    try:
        got = queue.get(timeout=60)                                                 # a stale pool hangs here
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
    expected = ["COPY", "OVERLAY"]
    assert child.exitcode == 0 and got == expected

from __future__ import annotations

import numpy as np
import pytest

from scail.pose.backends import landmarks as lmk
from scail.pose.schema import official_intrinsics

K = official_intrinsics((512, 896))


def _project(P: np.ndarray) -> np.ndarray:
    return np.stack([K[0, 0] * P[:, 0] / P[:, 2] + K[0, 2], K[1, 1] * P[:, 1] / P[:, 2] + K[1, 2]], -1)


def _random_body(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0, 0.4, (33, 3))  # metres, hip-centred


def test_solve_translation_recovers_t_exactly() -> None:
    rng = np.random.default_rng(0)
    world = _random_body(rng) * 1000
    t_true = np.array([120.0, -80.0, 2500.0])
    uv = _project(world + t_true)
    t = lmk.solve_translation(world, uv, np.ones(33), K)
    assert t is not None
    np.testing.assert_allclose(t, t_true, atol=1e-3)


def test_solve_translation_robust_to_one_bad_landmark() -> None:
    rng = np.random.default_rng(1)
    world = _random_body(rng) * 1000
    t_true = np.array([0.0, 100.0, 2000.0])
    uv = _project(world + t_true)
    uv[5] += 200.0  # one landmark 200 px off
    t = lmk.solve_translation(world, uv, np.ones(33), K)
    assert t is not None and np.abs(t - t_true).max() < 30.0
    plain = lmk.solve_translation(world, uv, np.ones(33), K, iters=1)  # no reweighting
    assert plain is not None and np.abs(plain - t_true).max() > np.abs(t - t_true).max()


def test_solve_translation_needs_three_landmarks() -> None:
    w = np.zeros(33)
    w[:2] = 1
    assert lmk.solve_translation(np.ones((33, 3)), np.ones((33, 2)), w, K) is None


def test_body3d_lifted_joints_project_onto_2d_landmarks() -> None:
    rng = np.random.default_rng(2)
    world_m = _random_body(rng)
    placed = world_m * 1000 + np.array([50.0, 0.0, 2200.0])
    uv = _project(placed) + rng.normal(0, 3.0, (33, 2))  # 2D landmarks disagree a little with 3D
    J = lmk.body3d_from_mediapipe(world_m, uv, np.ones(33), K)
    assert J is not None and J.shape == (24, 3)
    # joints that are MediaPipe landmarks sit exactly on their 2D landmark's ray
    for smpl, mp in ((16, 11), (17, 12), (18, 13), (19, 14), (20, 15), (21, 16), (4, 25), (8, 28)):
        np.testing.assert_allclose(_project(J[smpl][None])[0], uv[mp], atol=1e-6)
    assert 1500 < J[:, 2].mean() < 3000  # depth from the rigid fit, in mm


def test_smpl_joint_definitions() -> None:
    L = np.zeros((33, 3))
    L[11], L[12] = [-200, 0, 0], [200, 0, 0]      # shoulders
    L[7], L[8] = [-80, -200, 0], [80, -200, 0]     # ears
    L[23], L[24] = [-150, 500, 0], [150, 500, 0]   # hips
    J = lmk.smpl24_from_mediapipe(L)
    np.testing.assert_allclose(J[12], [0, -200 * lmk.NECK_K, 0])   # neck 0.3 of the way to the ears
    np.testing.assert_allclose(J[15], [0, -200 * lmk.HEAD_K, 0])
    # hips narrower (0.65x) and 0.1 of the hip->shoulder vector lower
    np.testing.assert_allclose(J[1], [-150 * lmk.HIP_WIDTH, 500 + 0.1 * 500, 0])
    np.testing.assert_allclose(J[2], [150 * lmk.HIP_WIDTH, 550, 0])
    np.testing.assert_allclose(J[16], L[11])


def test_openpose18_and_face_and_hand_maps() -> None:
    xy = np.random.default_rng(3).uniform(0, 1, (33, 2))
    vis = np.linspace(0, 1, 33)
    op = lmk.openpose18_from_mediapipe(xy, vis)
    assert op.shape == (18, 3)
    np.testing.assert_allclose(op[1, :2], (xy[11] + xy[12]) / 2, rtol=1e-6)
    np.testing.assert_allclose(op[2, :2], xy[12], rtol=1e-6)  # RSho = MediaPipe right shoulder
    np.testing.assert_allclose(op[5, :2], xy[11], rtol=1e-6)
    assert op[1, 2] == pytest.approx(min(vis[11], vis[12]))
    assert len(set(lmk.FACE68_FROM_MESH.tolist())) == 68 and lmk.FACE68_FROM_MESH.max() < 468
    mesh = np.random.default_rng(4).uniform(0, 1, (468, 3))
    face = lmk.face68_from_mesh(mesh)
    assert face.shape == (68, 3) and np.all(face[:, 2] == 1)
    np.testing.assert_allclose(face[8, :2], mesh[152, :2], rtol=1e-6)  # chin
    assert lmk.hand21(np.zeros((21, 3))).shape == (21, 3)


def test_pixels_from_normalized_uses_pixel_index_convention() -> None:
    px = lmk.pixels_from_normalized(np.array([[0.5, 0.5]]), (512, 896))
    np.testing.assert_allclose(px, [[447.5, 255.5]])

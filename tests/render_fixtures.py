"""Read the official parity fixtures (../shared/fixtures/scail-render, scail-align) into PoseData."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from scail.pose.schema import PoseData


def _dwpose_to_arrays(d: dict, n_people: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One DWPose dict (official format, -1 = invisible) -> body2d (P,18,3), face2d (P,68,3), hands2d (P,2,21,3)."""
    cand = np.asarray(d["bodies"]["candidate"], np.float64)[:n_people, :18]
    subset = np.asarray(d["bodies"]["subset"], np.float64)[:n_people, :18]
    body = np.concatenate([cand, (subset != -1).astype(np.float64)[..., None]], -1)
    faces = np.asarray(d["faces"], np.float64)[:n_people]
    face = np.concatenate([faces, (faces != -1).all(-1, keepdims=True).astype(np.float64)], -1)
    hl = np.asarray(d["hands"], np.float64)
    n = hl.shape[0] // 2
    hands = np.stack([hl[:n], hl[n:]], 1)[:n_people]                               # (P, 2, 21, 2)
    hands = np.concatenate([hands, (hands != -1).all(-1, keepdims=True).astype(np.float64)], -1)
    return body.astype(np.float32), face.astype(np.float32), hands.astype(np.float32)


def _pose(size_hw: tuple[int, int], K: np.ndarray, joints: np.ndarray, poses_2d: list[dict]) -> PoseData:
    t, p = joints.shape[:2]
    pose = PoseData.empty(t, p, size_hw, fps=16.0, backend="fixture")
    pose.K = K
    pose.body3d = joints.astype(np.float32)
    for f, d in enumerate(poses_2d):
        n = min(p, len(d["bodies"]["candidate"]))
        b, fc, h = _dwpose_to_arrays(d, n)
        pose.body2d[f, :n], pose.face2d[f, :n], pose.hands2d[f, :n] = b, fc, h
    return pose.validate("fixture")


def load_render_case(case_dir: Path) -> tuple[PoseData, dict]:
    d = json.loads((case_dir / "inputs.json").read_text())
    joints = np.asarray(d["joints_mm"], np.float32)
    return _pose((d["H"], d["W"]), np.asarray(d["K"], np.float64), joints, d["poses_2d"]), d


def load_align_case(case_dir: Path) -> tuple[PoseData, PoseData, dict]:
    d = json.loads((case_dir / "inputs.json").read_text())
    size = (d["H"], d["W"])
    K = np.asarray(d["K"], np.float64)
    drv = _pose(size, K, np.asarray(d["driving_joints_mm"], np.float32), d["driving_poses_2d"])
    ref = _pose(size, K, np.asarray(d["ref_joints_mm"], np.float32).reshape(1, -1, 24, 3)[:, :1], [d["ref_pose_2d"]])
    return drv, ref, json.loads((case_dir / "outputs.json").read_text())


def read_frames(folder: Path, n: int) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(folder / f"frame_{i:03d}.png").convert("RGB")) for i in range(n)])


def compare(ours: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Fraction of bit-identical pixels, fraction with max channel diff > 8, PSNR (dB), coverage XOR per frame."""
    diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    return {
        "identical": float((diff.max(-1) == 0).mean()),
        "over8": float((diff.max(-1) > 8).mean()),
        "psnr": float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse),
        "coverage_xor_per_frame": float(((ours.max(-1) > 0) ^ (ref.max(-1) > 0)).sum() / len(ref)),
    }

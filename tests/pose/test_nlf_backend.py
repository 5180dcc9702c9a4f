"""The nlf backend's parts that run without its weights (masking, conversion, weights handling)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scail.errors import CheckpointError
from scail.pose.backends import nlf_weights, resolve_backend
from scail.pose.backends.nlf_backend import first_detection_joints, masked_person_image, person_from_wholebody


def test_masked_person_image_official_margins() -> None:
    frame = np.full((512, 896, 3), 200, np.uint8)
    out = masked_person_image(frame, np.array([300.2, 100.7, 500.5, 400.1, 0.9]))
    ys, xs = np.nonzero(out[..., 0])
    # x grows by 2.5% of W (22.4 px), y by 5% of H (25.6 px); floor low edges, ceil high edges
    assert xs.min() == int(np.floor(300.2 - 22.4)) and xs.max() == int(np.ceil(500.5 + 22.4)) - 1
    assert ys.min() == int(np.floor(100.7 - 25.6)) and ys.max() == int(np.ceil(400.1 + 25.6)) - 1
    assert out.shape == frame.shape and out[0, 0].sum() == 0


def test_masked_person_image_clips_at_the_border() -> None:
    frame = np.full((100, 200, 3), 7, np.uint8)
    out = masked_person_image(frame, np.array([-5.0, -5.0, 250.0, 150.0]))
    assert (out == 7).all()


def test_person_from_wholebody_maps_dwpose_layout() -> None:
    rng = np.random.default_rng(0)
    kpts = rng.uniform(0, 500, (133, 2))
    scores = rng.uniform(0.5, 1.0, 133)
    p = person_from_wholebody(kpts, scores, (512, 896), np.array([0, 0, 10, 10, 0.9]))
    wh = np.array([896, 512])
    np.testing.assert_allclose(p.body2d[0, :2], kpts[0] / wh, rtol=1e-5)          # nose
    np.testing.assert_allclose(p.body2d[1, :2], (kpts[5] + kpts[6]) / 2 / wh, rtol=1e-5)  # neck
    np.testing.assert_allclose(p.body2d[2, :2], kpts[6] / wh, rtol=1e-5)          # RSho = COCO 6
    np.testing.assert_allclose(p.body2d[14, :2], kpts[2] / wh, rtol=1e-5)         # REye = COCO 2
    np.testing.assert_allclose(p.face2d[0, :2], kpts[23] / wh, rtol=1e-5)
    np.testing.assert_allclose(p.hands2d[0, 0, :2], kpts[91] / wh, rtol=1e-5)     # left wrist
    np.testing.assert_allclose(p.hands2d[1, 20, :2], kpts[132] / wh, rtol=1e-5)
    assert p.body2d[1, 2] == 1.0
    scores[5] = 0.1  # a shoulder unseen: the neck does not count (official)
    assert person_from_wholebody(kpts, scores, (512, 896), np.zeros(5)).body2d[1, 2] == 0.0


def test_first_detection_joints() -> None:
    import torch

    out = first_detection_joints([torch.ones(2, 24, 3), torch.zeros(0, 24, 3)])
    assert out[0] is not None and out[0].shape == (24, 3) and out[1] is None


def test_auto_falls_back_to_mediapipe_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nlf_weights, "downloadable", lambda timeout_s=2.0: False)
    name, reason = resolve_backend("auto", tmp_path)
    assert name == "mediapipe" and "nlf_l_multi_0.3.2.torchscript" in reason
    d = nlf_weights.pose_weights_dir(tmp_path)
    d.mkdir(parents=True)
    for f in nlf_weights.FILES:
        (d / f.name).write_bytes(b"x")
    assert resolve_backend("auto", tmp_path)[0] == "nlf"
    assert resolve_backend("mediapipe", tmp_path)[0] == "mediapipe"


def test_weights_checksum_recorded_then_enforced(tmp_path: Path) -> None:
    spec = nlf_weights.WeightFile("w.bin", "https://invalid.invalid/w.bin", None)
    d = nlf_weights.pose_weights_dir(tmp_path)
    d.mkdir(parents=True)
    (d / "w.bin").write_bytes(b"weights")
    assert nlf_weights.ensure(tmp_path, spec) == d / "w.bin"    # placed by hand: hash recorded
    assert (d / "w.bin.sha256").read_text().startswith(nlf_weights.sha256_file(d / "w.bin"))
    (d / "w.bin").write_bytes(b"tampered")
    with pytest.raises(CheckpointError, match="does not match"):
        nlf_weights.ensure(tmp_path, spec)


def test_download_failure_is_one_clean_line(tmp_path: Path) -> None:
    spec = nlf_weights.WeightFile("w.bin", "http://127.0.0.1:9/w.bin", None)  # nothing listens on port 9
    with pytest.raises(CheckpointError, match=r"cannot download .*place the file at") as exc:
        nlf_weights.ensure(tmp_path, spec)
    assert "\n" not in str(exc.value)
    assert not list(nlf_weights.pose_weights_dir(tmp_path).iterdir())  # no partial file left

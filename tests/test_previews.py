"""Previews (scail/previews/): written after a real run, valid H.264, never in a fingerprint,
rewritten only when their sources change, removed by `scail clean`, and a failing preview never
fails the example."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from scail.cli import app
from scail.config import load_pipeline
from scail.demo import dancer_pose, write_demo_example
from scail.example import Example
from scail.previews import CONTACT_SHEET, OVERLAY, SIDE_BY_SIDE, TURNTABLE, preview_path, write_previews
from scail.previews import turntable as turntable_module
from scail.previews.sheet import draw_skeleton
from scail.render.skeleton import BONES, PALETTE_SINGLE
from scail.video import probe, read_frames

runner = CliRunner()
SMALL_PRESET = """name: small
pose: {backend: mediapipe, max_frames: 17}
render: {device: cpu, align: true}
animate: {model: tiny-random, solver: euler, steps: 2, size_hw: [64, 32], max_frames: 5, device: cpu,
          dtype: float32, offload: none, seed: 1}
"""
"""The tiny random model at a tiny size: the whole pipeline in seconds on a CPU."""


@pytest.fixture
def small_turntable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A short, small turntable clip (the real renderer, fewer pixels)."""
    monkeypatch.setattr(turntable_module, "FRAMES", 6)
    monkeypatch.setattr(turntable_module, "SIZE", 96)


def _outcomes(stdout: str) -> list[str]:
    return [s["outcome"] for e in json.loads(stdout)["examples"] for s in e["stages"]]


def test_a_run_writes_previews_that_play_and_that_no_fingerprint_sees(tmp_path: Path, small_turntable: None) -> None:
    root = write_demo_example(tmp_path / "examples" / "dance")
    ex = Example(root)
    examples = str(tmp_path / "examples")
    (tmp_path / "small.yaml").write_text(SMALL_PRESET, encoding="utf-8")
    SMALL = ["-p", str(tmp_path / "small.yaml")]

    # --no-previews: nothing is written
    result = runner.invoke(app, ["run", examples, *SMALL, "--until", "render", "--no-previews", "--json"])
    assert result.exit_code == 0, result.output
    assert not (root / "previews").exists()

    # previews on: pose and render stay fresh (previews are in no fingerprint), the previews appear
    result = runner.invoke(app, ["run", examples, *SMALL, "--json"])
    assert result.exit_code == 0, result.output
    assert _outcomes(result.stdout) == ["user-provided", "fresh", "ran"]
    names = [OVERLAY, CONTACT_SHEET, SIDE_BY_SIDE] + ([TURNTABLE] if not turntable_module.unavailable() else [])
    for name in names:
        assert preview_path(ex, name).is_file(), name
    for name in (OVERLAY, SIDE_BY_SIDE, TURNTABLE):
        path = preview_path(ex, name)
        if path.is_file():
            info = probe(path)  # the project's reader
            assert info.codec == "h264" and info.num_frames > 0
            assert read_frames(path).max() > 0
    assert probe(preview_path(ex, OVERLAY)).num_frames == 33  # one frame per pose frame
    sbs = probe(preview_path(ex, SIDE_BY_SIDE))
    assert sbs.num_frames == 5 and sbs.width >= 3 * sbs.height // 2  # driving | condition | result, portrait
    from PIL import Image

    with Image.open(preview_path(ex, CONTACT_SHEET)) as im:
        assert im.format == "JPEG" and im.width > im.height
    mtimes = {n: os.stat(preview_path(ex, n)).st_mtime_ns for n in names}

    # a rerun rewrites nothing; --no-previews changes no stage's freshness either
    for extra in ([], ["--no-previews"]):
        result = runner.invoke(app, ["run", examples, *SMALL, *extra, "--json"])
        assert _outcomes(result.stdout) == ["user-provided", "fresh", "fresh"]
    assert {n: os.stat(preview_path(ex, n)).st_mtime_ns for n in names} == mtimes
    status = runner.invoke(app, ["status", examples, *SMALL, "--no-previews", "--json"])
    stages = json.loads(status.stdout)["examples"][0]["stages"]
    assert [s["status"] for s in stages.values()] == ["user-provided", "fresh", "fresh"]

    # the previews are scail's files: `scail clean` removes them, and the folder
    ledger = json.loads((root / ".scail" / "outputs.json").read_text())["files"]
    assert {f"previews/{n}" for n in names} <= set(ledger)
    assert runner.invoke(app, ["clean", examples]).exit_code == 0
    assert not (root / "previews").exists() and not (root / ".scail" / "previews.json").exists()


def test_previews_follow_their_sources_and_a_broken_one_is_only_a_warning(
        tmp_path: Path, small_turntable: None, caplog: pytest.LogCaptureFixture) -> None:
    root = write_demo_example(tmp_path / "dance")
    ex = Example(root)
    config = load_pipeline("tiny-random", {"previews.turntable": False})
    leftover = preview_path(ex, ".overlay.tmp-1-2-3.mp4")  # what a run killed while writing left
    leftover.parent.mkdir()
    leftover.write_bytes(b"partial")
    written = write_previews(ex, config, ["pose"])  # after pose only: no condition video yet
    assert not leftover.exists()
    assert sorted(p.name for p in written) == [CONTACT_SHEET, OVERLAY]
    assert write_previews(ex, config, ["pose"]) == []  # nothing changed: nothing rewritten

    # killed between a preview's rename and the ledger's save: the next run records what is there
    from scail.cache import sha256_file
    from scail.outputs import OutputLedger

    ledger = OutputLedger(ex)
    assert write_previews(ex, config, ["pose"], ledger) == []
    assert ledger.files["previews/overlay.mp4"].sha256 == sha256_file(preview_path(ex, OVERLAY))

    (root / ".scail" / "previews.json").unlink()  # the stamps are a shortcut: the previews' own tags suffice
    assert write_previews(ex, config, ["pose"]) == []
    os.utime(ex.pose_data)  # new pose data: both are rewritten
    assert sorted(p.name for p in write_previews(ex, config, ["pose"])) == [CONTACT_SHEET, OVERLAY]

    ex.find_reference().write_bytes(b"not an image")  # type: ignore[union-attr]
    with caplog.at_level(logging.WARNING, logger="scail.previews"):
        written = write_previews(ex, config, ["pose"])
    assert written == []  # the overlay is unchanged; the contact sheet failed with a warning
    assert any("contact_sheet.jpg" in r.getMessage() and "not an image" in r.getMessage() for r in caplog.records)


def test_the_skeleton_is_drawn_with_the_official_bone_colours() -> None:
    pose = dancer_pose(4, size_hw=(448, 256))
    img = draw_skeleton(np.zeros((448, 256, 3), np.uint8), pose, 2)
    flat = img.reshape(-1, 3)
    for bone in (0, 9):  # neck -> right shoulder (red), neck -> left hip (blue)
        assert BONES[bone][0] == 1
        assert (flat == np.array(PALETTE_SINGLE[bone])).all(axis=1).sum() > 20, bone


def _dominant(frame: np.ndarray, rgb: tuple[int, int, int]) -> int:
    """Pixels whose colour is clearly `rgb`'s hue (shading scales it; the floor and background are grey)."""
    f = frame.astype(np.int32)
    on = np.array(rgb) > 128
    return int(((f[..., on] > 90).all(-1) & (f[..., ~on] < 50).all(-1)).sum())


def test_the_turntable_shows_the_limbs_in_their_colours_and_depth_the_camera_hides() -> None:
    problem = turntable_module.unavailable()
    if problem:  # CI installs pyrender (the dev extra) and libEGL (.ci/run): there it must run
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(problem)
    pose = dancer_pose(2, size_hw=(448, 256))
    frames = turntable_module.render_turntable(pose.body3d, frames=4, size=128)
    assert len(frames) == 4 and frames[0].shape == (128, 128, 3) and frames[0].dtype == np.uint8
    assert _dominant(frames[0], PALETTE_SINGLE[0]) > 5    # red: neck -> right shoulder
    assert _dominant(frames[0], PALETTE_SINGLE[9]) > 5    # blue: neck -> left hip
    # push the left wrist (SMPL 20) and elbow (18) back along the camera rays: the same pixels for the
    # driving camera, a different picture from the side (frame 1 of 4: a quarter turn)
    moved = pose.body3d.copy()
    moved[:, :, [18, 20]] *= 1.1  # about 30 cm further
    other = turntable_module.render_turntable(moved, frames=4, size=128)

    def diff(a: np.ndarray, b: np.ndarray) -> int:
        return int((np.abs(a.astype(np.int32) - b.astype(np.int32)).sum(-1) > 60).sum())

    assert diff(frames[1], other[1]) > 2 * diff(frames[0], other[0]) and diff(frames[1], other[1]) > 20


def test_the_fast_crop_cuts_the_same_box_as_the_official_one() -> None:
    """The previews crop with OpenCV; the box must be the pose stage's, or the skeleton would be off."""
    from scail.frame_geometry import resize_crop
    from scail.previews.sheet import cover_crop

    yy, xx = np.mgrid[0:720, 0:1280]
    frame = np.stack([xx * 255 // 1279, yy * 255 // 719, (xx + yy) % 256], -1).astype(np.uint8)
    frame[300:420, 700:760] = 255  # a sharp mark off-centre
    for size in ((512, 896), (896, 512)):
        ours = cover_crop(frame, size).astype(np.int32)
        official = resize_crop(frame, size).astype(np.int32)
        assert ours.shape == official.shape
        assert np.abs(ours - official)[..., :2].mean() < 2.0  # the gradients line up: same box, same scale
        assert (ours[..., 0] == 255).sum() > 0.8 * (official[..., 0] == 255).sum()

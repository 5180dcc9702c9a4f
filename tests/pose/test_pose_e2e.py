"""End to end: the real pose env, the mediapipe backend, the pose stage on real and edge-case videos.

One PoseStage (one worker process, models loaded once) serves every test in this module, as in a
batch. The first run on a machine builds the pose env from PyPI (see conftest.pose_python).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from scail.config import PoseConfig, Settings
from scail.errors import InputError
from scail.example import Example
from scail.pose import load_pose
from scail.pose.stage import PoseStage
from scail.stage import ProgressEvent, StageContext

MAX_FRAMES = 24  # enough to check tracking and stability, short enough for CI


@pytest.fixture(scope="module")
def stage(pose_python: Path, pose_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PoseStage]:
    settings = Settings(weights_dir=tmp_path_factory.mktemp("weights"), cache_dir=pose_cache_dir)
    st = PoseStage(PoseConfig(backend="mediapipe", max_frames=MAX_FRAMES), settings)
    yield st
    st.close()


def _run(stage: PoseStage, root: Path) -> tuple[Example, StageContext, list[ProgressEvent]]:
    ex = Example(root)
    events: list[ProgressEvent] = []
    ctx = StageContext(ex, "pose", on_event=events.append)
    stage.run(ex, ctx)
    return ex, ctx, events


def _example_from_frames(root: Path, frames: list[np.ndarray], ref_from: Path) -> Path:
    from scail.video import write_video

    root.mkdir(parents=True)
    write_video(root / "driving.mp4", frames, fps=16)
    (root / "ref.jpg").write_bytes(ref_from.read_bytes())
    return root


@pytest.fixture(scope="module")
def frames_001(shared_dir: Path) -> np.ndarray:
    from scail.video import read_frames

    return read_frames(shared_dir / "examples" / "001" / "driving.mp4", fps=16, max_frames=12)


def _bone_mm(j: np.ndarray, a: int, b: int) -> np.ndarray:
    return np.linalg.norm(j[:, a] - j[:, b], axis=-1)


@pytest.mark.parametrize("name", ["001", "002"])
def test_real_examples(stage: PoseStage, copy_example: Callable[[str], Path], name: str) -> None:
    root = copy_example(name)
    ex, ctx, events = _run(stage, root)
    assert all(p.is_file() for p in stage.outputs(ex))
    pose = load_pose(ex.pose_data)
    assert pose.fps == 16.0 and pose.size == (512, 896) and pose.backend == "mediapipe"
    assert pose.num_frames == MAX_FRAMES and pose.num_people == 1
    np.testing.assert_allclose(pose.K[0, 0], 896 / (2 * np.tan(np.radians(27.5))))
    body = pose.body3d[:, 0]
    assert np.isfinite(body).all(), "one dancer, visible in every frame"
    assert np.isfinite(pose.body2d).all() and np.isfinite(pose.bbox).all()
    # NaN only as whole parts (a hand or the face not found), never a partial point
    found = {}
    for part, arr in (("face", pose.face2d[:, 0]), ("left", pose.hands2d[:, 0, 0]), ("right", pose.hands2d[:, 0, 1])):
        per_frame = np.isnan(arr).reshape(len(arr), -1)
        assert np.all(per_frame.all(1) | ~per_frame.any(1))
        found[part] = int((~per_frame.all(1)).sum())
    assert found["face"] > MAX_FRAMES // 2, found
    assert found["left"] + found["right"] > 0, found  # 002 is a close-up: its hands often leave the frame
    # plausible, stable bone lengths (mm): upper arms, forearms, shoulder width
    for a, b, lo, hi in ((16, 18, 180, 420), (17, 19, 180, 420), (18, 20, 150, 380), (16, 17, 220, 500)):
        length = _bone_mm(body, a, b)
        assert lo < np.median(length) < hi, (a, b, np.median(length))
        assert length.std() / length.mean() < 0.25
    assert 800 < np.median(body[:, 0, 2]) < 8000  # pelvis depth in front of the camera
    ref = load_pose(ex.ref_pose_data)
    assert ref.num_frames == 1 and np.isfinite(ref.body3d).all()
    summary = json.loads((ex.state_dir / "pose_summary.json").read_text())
    assert summary["backend"] == "mediapipe" and summary["frames_without_detection"] == []
    assert summary["people_found"] == [{"person": 0, "frames": MAX_FRAMES, "coverage": 1.0, "first_frame": 0,
                                        "last_frame": MAX_FRAMES - 1}]
    assert ctx.notes["backend"] == "mediapipe"
    frames_done = [e.done for e in events if e.unit == "frames" and e.total]
    assert frames_done and max(frames_done) == MAX_FRAMES


def test_person_leaving_and_reentering(stage: PoseStage, frames_001: np.ndarray, shared_dir: Path,
                                       tmp_path: Path) -> None:
    black = [np.zeros_like(frames_001[0])] * 6
    frames = [*frames_001[:5], *black, *frames_001[5:10]]
    root = _example_from_frames(tmp_path / "reenter", frames, shared_dir / "examples" / "001" / "ref.jpg")
    ex, _, _ = _run(stage, root)
    pose = load_pose(ex.pose_data)
    assert pose.num_frames == 16 and pose.num_people == 1 and pose.track_id.tolist() == [0]
    seen = np.isfinite(pose.body3d[:, 0, 0, 0])
    assert seen[:5].all() and seen[11:].all() and not seen[5:11].any()  # a 6-frame gap is not filled
    summary = json.loads((ex.state_dir / "pose_summary.json").read_text())
    assert summary["frames_without_detection"] == list(range(5, 11))


def test_short_gap_is_filled(stage: PoseStage, frames_001: np.ndarray, shared_dir: Path, tmp_path: Path) -> None:
    frames = [*frames_001[:4], np.zeros_like(frames_001[0]), np.zeros_like(frames_001[0]), *frames_001[4:8]]
    root = _example_from_frames(tmp_path / "gap", frames, shared_dir / "examples" / "001" / "ref.jpg")
    ex, _, _ = _run(stage, root)
    pose = load_pose(ex.pose_data)
    assert np.isfinite(pose.body3d).all()
    summary = json.loads((ex.state_dir / "pose_summary.json").read_text())
    assert summary["frames_without_detection"] == [4, 5] and summary["frames_filled"] == {"0": [4, 5]}


def test_shortest_video_the_model_takes(stage: PoseStage, frames_001: np.ndarray, shared_dir: Path,
                                       tmp_path: Path) -> None:
    """5 frames (scail/pose/inputs.MIN_DRIVING_FRAMES) pass; shorter ones are refused (tests/pose/test_inputs.py)."""
    root = _example_from_frames(tmp_path / "short5", list(frames_001[:5]), shared_dir / "examples" / "001" / "ref.jpg")
    ex, _, _ = _run(stage, root)
    pose = load_pose(ex.pose_data)
    assert pose.num_frames == 5 and np.isfinite(pose.body3d).all()
    root = _example_from_frames(tmp_path / "short3", list(frames_001[:3]), shared_dir / "examples" / "001" / "ref.jpg")
    ex = Example(root)
    with pytest.raises(InputError, match=r"driving.mp4: the driving video has 3 frame\(s\) at 16 fps"):
        stage.run(ex, StageContext(ex, "pose"))
    assert not ex.pose_data.exists() and not ex.ref_pose_data.exists()


def test_rotated_jpeg_reference_gives_the_upright_pose(stage: PoseStage, frames_001: np.ndarray, shared_dir: Path,
                                                       tmp_path: Path) -> None:
    """A phone photo (pixels stored sideways + EXIF Orientation 6) gives the pose of the upright photo."""
    from PIL import Image

    refs = {}
    with Image.open(shared_dir / "examples" / "001" / "ref.jpg") as im:
        upright = im.convert("RGB")
    for name in ("upright", "phone"):
        root = _example_from_frames(tmp_path / name, list(frames_001[:5]), shared_dir / "examples" / "001" / "ref.jpg")
        if name == "upright":
            upright.save(root / "ref.jpg", quality=95)
        else:
            exif = Image.Exif()
            exif[0x0112] = 6  # "turn 90 degrees clockwise to display"
            upright.transpose(Image.Transpose.ROTATE_90).save(root / "ref.jpg", quality=95, exif=exif)
        ex, _, _ = _run(stage, root)
        refs[name] = load_pose(ex.ref_pose_data)
    a, b = refs["upright"], refs["phone"]
    assert np.isfinite(a.body2d[0, 0, :, :2]).all() and np.isfinite(b.body2d[0, 0, :, :2]).all()
    d2 = np.abs(a.body2d[0, 0, :, :2] - b.body2d[0, 0, :, :2])                   # frame fractions
    assert np.median(d2) < 0.002 and d2.max() < 0.05, d2.max()  # sideways, the person would lie down (~0.3)
    rel_a, rel_b = a.body3d[0, 0] - a.body3d[0, 0, :1], b.body3d[0, 0] - b.body3d[0, 0, :1]
    d3 = np.linalg.norm(rel_a - rel_b, axis=-1)                                  # mm, pelvis-relative
    assert np.median(d3) < 30.0 and d3.max() < 150.0, d3
    assert abs(float(a.body3d[0, 0, 0, 2] - b.body3d[0, 0, 0, 2])) < 150.0  # depth of the pelvis (~3 m)


def test_frame_range(pose_cache_dir: Path, frames_001: np.ndarray, shared_dir: Path, tmp_path: Path) -> None:
    """pose.start_s / end_s (`start`, `end` in scail.yaml) keep that part of the driving video."""
    root = _example_from_frames(tmp_path / "range", list(frames_001[:12]), shared_dir / "examples" / "001" / "ref.jpg")
    st = PoseStage(PoseConfig(backend="mediapipe", start_s=0.25, end_s=0.625),
                   Settings(weights_dir=tmp_path / "w", cache_dir=pose_cache_dir))
    try:
        ex, _, _ = _run(st, root)
    finally:
        st.close()
    pose = load_pose(ex.pose_data)
    assert pose.num_frames == 6 and np.isfinite(pose.body3d).all()  # frames 4..9 of 12


def test_nobody_in_the_video_is_a_clean_error(stage: PoseStage, frames_001: np.ndarray, shared_dir: Path,
                                              tmp_path: Path) -> None:
    frames = [np.full_like(frames_001[0], 30)] * 5
    root = _example_from_frames(tmp_path / "empty", frames, shared_dir / "examples" / "001" / "ref.jpg")
    ex = Example(root)
    with pytest.raises(InputError, match=r"driving.mp4: no person detected in any of the 5 frames"):
        stage.run(ex, StageContext(ex, "pose"))
    assert not ex.pose_data.exists()


def test_reference_without_a_person_gives_an_empty_ref_pose(stage: PoseStage, frames_001: np.ndarray,
                                                           tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "noref"
    root.mkdir()
    from scail.video import write_video

    write_video(root / "driving.mp4", list(frames_001[:5]), fps=16)
    Image.fromarray(np.full((300, 200, 3), 90, np.uint8)).save(root / "ref.jpg")
    ex, _, _ = _run(stage, root)
    ref = load_pose(ex.ref_pose_data)
    assert ref.num_frames == 1 and np.isnan(ref.body3d).all()
    assert json.loads((ex.state_dir / "pose_summary.json").read_text())["reference_person_found"] is False


def test_two_people_get_two_stable_tracks(pose_python: Path, pose_cache_dir: Path, shared_dir: Path,
                                          tmp_path: Path) -> None:
    from scail.frame_geometry import resize_crop
    from scail.video import read_frames

    def centre_half(name: str) -> np.ndarray:
        f = read_frames(shared_dir / "examples" / name / "driving.mp4", fps=16, max_frames=8)
        return np.asarray(resize_crop(f, (512, 896)))[:, :, 224:672]                # (8, 512, 448, 3)

    frames = list(np.concatenate([centre_half("001"), centre_half("002")], axis=2))  # dancer left, 002 right
    root = _example_from_frames(tmp_path / "two", frames, shared_dir / "examples" / "001" / "ref.jpg")
    settings = Settings(weights_dir=tmp_path / "w", cache_dir=pose_cache_dir)
    st = PoseStage(PoseConfig(backend="mediapipe", max_people=2), settings)
    try:
        ex, _, _ = _run(st, root)
    finally:
        st.close()
    pose = load_pose(ex.pose_data)
    assert pose.num_people == 2 and pose.track_id.tolist() == [0, 1]
    centre_x = (pose.bbox[..., 0] + pose.bbox[..., 2]) / 2                          # (N, P)
    assert np.isfinite(centre_x).all()
    left = int(np.argmin(centre_x[0]))
    assert (centre_x[:, left] < 448).all() and (centre_x[:, 1 - left] > 448).all()  # identities never swap
    neck_x = pose.body2d[:, :, 1, 0] * 896                                           # neck x per person
    assert (neck_x[:, left] < 448).all() and (neck_x[:, 1 - left] > 448).all()


def test_torchvision_nms_works_in_the_pose_env(pose_python: Path, tmp_path: Path) -> None:
    """The NLF torchscript calls torchvision::nms; beside the CPU torch build PyPI's torchvision needs our shim."""
    import os
    import subprocess

    import scail

    (tmp_path / "scail").symlink_to(Path(scail.__file__).resolve().parent)
    code = ("import torch\n"
            "from scail.pose.backends.nlf_backend import ensure_torchvision_ops\n"
            "ensure_torchvision_ops()\n"
            "import torchvision\n"
            "b = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60]], dtype=torch.float)\n"
            "print(torchvision.ops.nms(b, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist())\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    res = subprocess.run([str(pose_python), "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "[0, 2]"


@pytest.mark.parametrize(("model", "iou_mean", "flipped"), [("heavy", 0.70, [15, 16]), ("full", 0.65, list(range(15, 22)))])
def test_agreement_with_the_official_pose_video(pose_python: Path, pose_cache_dir: Path, shared_dir: Path,
                                                copy_example: Callable[[str], Path], tmp_path: Path, model: str,
                                                iou_mean: float, flipped: list[int]) -> None:
    """benchmarks/pose_agreement.py's metrics on all 65 frames of 001: open-mask IoU mean >= 0.70 with
    the default heavy landmark model (issue 12's target; 0.65 with the wheel's `full` model), min >= 0.40;
    colours (hue agreement) >= 0.85 in every frame (MediaPipe's raw labels are flipped around frames
    15-21: ~0.01 there without scail/pose/flips.py)."""
    from benchmarks import pose_agreement as agreement
    from scail.render import render_pose
    from scail.video import read_frames

    root = copy_example("001")
    st = PoseStage(PoseConfig(backend="mediapipe", mediapipe_model=model),  # type: ignore[arg-type]
                   Settings(weights_dir=tmp_path / "w", cache_dir=pose_cache_dir))
    try:
        ex, _, _ = _run(st, root)
    finally:
        st.close()
    official = read_frames(shared_dir / "examples" / "001" / "rendered.mp4")
    ours = render_pose(ex.pose_data, overlay=True)
    assert ours.shape == official.shape == (65, 512, 896, 3)
    iou = agreement.mask_iou(agreement.skeleton_mask(ours), agreement.skeleton_mask(official))
    assert iou.mean() >= iou_mean and iou.min() >= 0.40, (iou.mean(), iou.min())
    hue = agreement.hue_agreement(ours, official)
    assert hue.min() >= agreement.HUE_TARGET, hue.round(2)
    summary = json.loads((ex.state_dir / "pose_summary.json").read_text())
    assert summary["flips_fixed"] == {"0": flipped}
    assert load_pose(ex.pose_data).version.split("-")[3:5] == (["c2", "static+yolo11n"] if model == "heavy"
                                                               else ["c1", "video+yolo11n"])


def test_in_process_mode_inside_an_env_with_the_pose_deps(pose_python: Path, frames_001: np.ndarray,
                                                          shared_dir: Path, tmp_path: Path) -> None:
    """pose.in_process runs the same worker code in the calling interpreter (here: the pose env's)."""
    import os
    import subprocess

    import scail

    root = _example_from_frames(tmp_path / "inproc", list(frames_001[:5]), shared_dir / "examples" / "001" / "ref.jpg")
    link = tmp_path / "path"
    link.mkdir()
    (link / "scail").symlink_to(Path(scail.__file__).resolve().parent)
    code = ("import sys\n"
            "from pathlib import Path\n"
            "from scail.config import PoseConfig, Settings\n"
            "from scail.example import Example\n"
            "from scail.pose.stage import PoseStage\n"
            "from scail.stage import StageContext\n"
            "ex = Example(Path(sys.argv[1]))\n"
            "st = PoseStage(PoseConfig(backend='mediapipe', in_process=True),"
            " Settings(weights_dir=Path(sys.argv[2]), cache_dir=Path(sys.argv[2])))\n"
            "st.run(ex, StageContext(ex, 'pose'))\n"
            "st.close()\n")
    env = {**os.environ, "PYTHONPATH": str(link)}
    res = subprocess.run([str(pose_python), "-c", code, str(root), str(tmp_path / "cache")], capture_output=True,
                         text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    pose = load_pose(root / ".scail" / "pose.npz")
    assert pose.num_frames == 5 and np.isfinite(pose.body3d).all()


def test_nobody_in_the_first_frames(stage: PoseStage, frames_001: np.ndarray, shared_dir: Path,
                                    tmp_path: Path) -> None:
    """The official code crashes when frame 0 has no detection; we leave those frames empty."""
    frames = [np.zeros_like(frames_001[0])] * 2 + list(frames_001[:4])
    root = _example_from_frames(tmp_path / "late", frames, shared_dir / "examples" / "001" / "ref.jpg")
    ex, _, _ = _run(stage, root)
    pose = load_pose(ex.pose_data)
    seen = np.isfinite(pose.body3d[:, 0, 0, 0])
    assert seen.tolist() == [False, False, True, True, True, True]  # a leading gap has nothing to interpolate from
    summary = json.loads((ex.state_dir / "pose_summary.json").read_text())
    assert summary["frames_without_detection"] == [0, 1]

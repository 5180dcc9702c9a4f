"""End to end through the real `scail` command: pose (mediapipe, in the pose env) -> render -> animate.

examples/001 (its driving.mp4 and ref.jpg only) is run once per module on 9 frames with the
tiny-random model, in a subprocess as a user would run it; the tests then check the files, the
manifests, `scail status`, that a rerun does nothing, and that an animate-only change reruns only
animate. The pose env comes from the pose tests' fixtures (built from PyPI once per machine).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scail.cache import Manifest, read_manifest
from scail.config import STAGES
from scail.example import Example
from scail.pose import load_pose
from scail.video import probe

FRAMES = 9  # 4k+1 pose frames: the shortest clip the animate stage takes as it is
FAST = ["--pipeline", "tiny-random", "--set", f"pose.max_frames={FRAMES}", "--set", f"animate.max_frames={FRAMES}"]


def _scail(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scail", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def _outcomes(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert proc.returncode == 0, proc.stderr[-2000:]
    (example,) = json.loads(proc.stdout)["examples"]
    return {s["stage"]: s["outcome"] for s in example["stages"]}


def _status(env: dict[str, str], root: Path, *args: str) -> dict[str, str]:
    proc = _scail(env, "status", str(root), *FAST, *args, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (example,) = json.loads(proc.stdout)["examples"]
    return {stage: s["status"] for stage, s in example["stages"].items()}


def _manifest(root: Path, stage: str) -> Manifest:
    manifest = read_manifest(Example(root), stage)
    assert manifest is not None, f"{root}: no {stage} manifest"
    return manifest


def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """(mtime, sha256) of every output and manifest (not the logs, lock or hash cache)."""
    skip = {".scail/hashes.json", ".scail/lock", ".scail-summary.json", "scail-report.html"}  # rewritten by each run
    files = sorted(p for p in root.rglob("*") if p.is_file() and ".scail/logs" not in p.as_posix())
    return {p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in files if p.relative_to(root).as_posix() not in skip}


@pytest.fixture(scope="module")
def env(pose_python: Path, pose_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The subprocess environment: the pose tests' cache (its ready pose env), no real weights."""
    return {**os.environ, "SCAIL_CACHE_DIR": str(pose_cache_dir),
            "SCAIL_WEIGHTS_DIR": str(tmp_path_factory.mktemp("weights"))}


@pytest.fixture(scope="module")
def done(env: dict[str, str], shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/001 after one full `scail run` (module-scoped: the tests below only read it or copy it)."""
    src = shared_dir / "examples" / "001"
    if not (src / "driving.mp4").is_file():
        pytest.skip(f"{src}/driving.mp4 is absent")
    root = tmp_path_factory.mktemp("e2e") / "001"
    root.mkdir()
    for name in ("driving.mp4", "ref.jpg"):
        shutil.copy(src / name, root / name)
    assert _outcomes(_scail(env, "run", str(root), *FAST, "--json")) == dict.fromkeys(STAGES, "ran")
    return root


def test_run_writes_every_output_and_a_rerun_does_nothing(env: dict[str, str], done: Path) -> None:
    ex = Example(done)
    pose = load_pose(ex.pose_data)
    assert pose.num_frames == FRAMES and pose.backend == "mediapipe" and pose.size == (512, 896)
    assert load_pose(ex.ref_pose_data).num_frames == 1
    for video in (ex.rendered, ex.rendered_aligned):
        info = probe(video)
        assert (info.codec, info.num_frames, info.fps, info.height, info.width) == ("h264", FRAMES, 16.0, 512, 896)
    (sample,) = (done / "samples").glob("001_42_*.mp4")  # named by its fingerprint (scail/outputs.py)
    assert (done / "samples" / "001_latest.mp4").samefile(sample)
    info = probe(sample)
    notes = _manifest(done, "animate").notes
    assert (info.codec, info.num_frames, info.fps) == ("h264", FRAMES, 16.0)
    assert [info.height, info.width] == notes["size_hw"] == [128, 224]  # tiny-random: 1/4 of 512x896
    for stage in STAGES:
        manifest = _manifest(done, stage)
        assert manifest.status == "done" and manifest.error is None, stage
    assert _status(env, done) == dict.fromkeys(STAGES, "fresh")

    before = _snapshot(done)
    assert _outcomes(_scail(env, "run", str(done), *FAST, "--json")) == dict.fromkeys(STAGES, "fresh")
    assert _snapshot(done) == before


def test_changing_the_seed_reruns_only_animate(env: dict[str, str], done: Path, tmp_path: Path) -> None:
    root = tmp_path / "001"
    shutil.copytree(done, root)
    upstream = {k: v for k, v in _snapshot(root).items()
                if not k.startswith(("samples/", ".scail/animate", ".scail/outputs.json", "previews/side_by_side",
                                           ".scail/previews.json"))}
    outcomes = _outcomes(_scail(env, "run", str(root), *FAST, "--seed", "7", "--json"))
    assert outcomes == {"pose": "fresh", "render": "fresh", "animate": "ran"}
    after = _snapshot(root)
    assert {k: after[k] for k in upstream} == upstream
    (seed7,) = (root / "samples").glob("001_7_*.mp4")
    assert probe(seed7).num_frames == FRAMES and len(list((root / "samples").glob("001_42_*.mp4"))) == 1
    assert _manifest(root, "animate").notes["seed"] == 7
    assert _status(env, root, "--set", "animate.seed=7") == dict.fromkeys(STAGES, "fresh")
    assert _status(env, root) == dict.fromkeys(STAGES, "fresh")  # the seed-42 sample is kept, so still fresh
    assert _status(env, root, "--seed", "8") == {"pose": "fresh", "render": "fresh", "animate": "stale"}

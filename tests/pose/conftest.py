"""Pose test fixtures: the real pose env (created once per machine), example copies."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def pose_cache_dir() -> Path:
    """A cache dir shared by the pose tests of all runs on this machine, holding the real pose env.

    Creating the env downloads ~1 GB from PyPI once (about 80 s here); CI can keep the folder between
    runs. $SCAIL_TEST_POSE_CACHE overrides the location.
    """
    path = Path(os.environ.get("SCAIL_TEST_POSE_CACHE", Path(tempfile.gettempdir()) / "scail-test-pose-cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def pose_python(pose_cache_dir: Path) -> Path:
    """The pose env's python (built from PyPI on first use, under the env's file lock)."""
    from scail.pose.venv import ensure_pose_env

    return ensure_pose_env(pose_cache_dir)


@pytest.fixture
def copy_example(shared_dir: Path, tmp_path: Path) -> Callable[[str], Path]:
    """Factory: copy ../shared/examples/<name> inputs (driving.mp4, ref.jpg) to tmp_path/<name>."""

    def copy(name: str) -> Path:
        src = shared_dir / "examples" / name
        if not (src / "driving.mp4").is_file():
            pytest.skip(f"{src}/driving.mp4 is absent")
        dst = tmp_path / name
        dst.mkdir(parents=True)
        for f in ("driving.mp4", "ref.jpg"):
            shutil.copy(src / f, dst / f)
        return dst

    return copy

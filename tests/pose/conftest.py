"""Pose test fixtures: copies of the shared example inputs (the pose env fixtures are in tests/conftest.py)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest


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

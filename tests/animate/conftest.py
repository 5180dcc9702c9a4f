"""Shared helpers for the animate tests: the ../shared fixture folders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fixture_dir(shared_dir: Path) -> Path:
    """`<repo>/../shared/fixtures`; the test skips with the reason when it is absent."""
    path = shared_dir / "fixtures"
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the parity fixtures are not on this machine")
    return path


@pytest.fixture(scope="session")
def fixture_path(fixture_dir: Path) -> Callable[..., Path]:
    """Factory: `fixture_path("scail", "dit")` -> that path under the fixtures, or skip if absent."""

    def get(*parts: str) -> Path:
        path = fixture_dir.joinpath(*parts)
        if not path.exists():
            pytest.skip(f"{path} is absent: this parity fixture is not on this machine")
        return path

    return get

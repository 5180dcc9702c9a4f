"""Shared helpers for the animate tests: the official parity fixtures (tests/official_fixtures.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fixture_dir(fixtures_root: Path) -> Path:
    """The parity fixtures' root (repository copy first, ../shared/fixtures for what it lacks)."""
    return fixtures_root


@pytest.fixture(scope="session")
def fixture_path(fixture_dir: Path) -> Callable[..., Path]:
    """Factory: `fixture_path("scail", "dit")` -> that path under the fixtures, or skip if absent."""

    def get(*parts: str) -> Path:
        path = fixture_dir.joinpath(*parts)
        if not path.exists():
            pytest.skip(f"fixture {'/'.join(parts)} is not in tests/fixtures/official.tar.xz (trimmed) "
                        "and ../shared/fixtures is not beside the checkout")
        return path

    return get

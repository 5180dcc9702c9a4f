"""Shared fixtures: the ../shared fixture folder, isolated env and logging, toy example folders, the pose env.

Helper modules (toy_pipeline, tensor_checks, render_fixtures) live in this folder and are imported by
plain name: pyproject.toml puts tests/ on pytest's path (`pythonpath`); nothing edits sys.path.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from toy_pipeline import toy_factory

import scail.batch

REPO = Path(__file__).resolve().parents[1]

@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`<repo>/../shared`, for its `examples/`: the official repository's example footage (third-party
    videos, never committed here). Tests that read it skip, saying so, when it is absent; the parity
    fixtures do not need it (`fixtures_root`)."""
    path = (REPO / ".." / "shared").resolve()
    if not path.is_dir():
        pytest.skip(f"{path} is absent: this test reads the official example footage (third-party videos kept "
                    "outside the repository; README: what a fresh clone skips)")
    return path


@pytest.fixture(scope="session")
def fixtures_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official-code parity fixtures: the repository's trimmed copy, completed by ../shared/fixtures.

    See tests/official_fixtures.py. A file missing from both makes its test skip with the path.
    """
    from official_fixtures import build_root

    return build_root(tmp_path_factory.mktemp("official-fixtures"))


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test reads the developer's weights or cache, and handlers added by a test do not leak."""
    cache = tmp_path_factory.mktemp("scail-cache")
    monkeypatch.setenv("SCAIL_CACHE_DIR", str(cache))
    monkeypatch.setenv("SCAIL_WEIGHTS_DIR", str(cache / "weights"))
    logger = logging.getLogger("scail")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    for h in list(logger.handlers):
        if h not in handlers:
            logger.removeHandler(h)
    logger.setLevel(level)
    logger.propagate = propagate


@pytest.fixture
def toy_stages(monkeypatch: pytest.MonkeyPatch) -> list:
    """The CLI builds toy stages instead of the real ones (they are remembered in the list)."""
    built: list = []
    monkeypatch.setattr(scail.batch, "build_stages", toy_factory(built=built))
    return built


@pytest.fixture
def make_toy_example(tmp_path: Path) -> Callable[..., Path]:
    """Factory: `make_toy_example("001", frames=5)` -> a toy example folder under tmp_path/examples."""
    from toy_pipeline import write_toy_example

    def make(name: str = "001", frames: int = 5, driving: bytes | None = None) -> Path:
        return write_toy_example(tmp_path / "examples" / name, frames, driving).root

    return make


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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault-injection table (tests/faults): every fault, its input, the outcome, what was lost."""
    import fault_injection

    lines = fault_injection.format_table(fault_injection.TABLE)
    if lines:
        terminalreporter.section("fault injection")
        for line in lines:
            terminalreporter.write_line(line)

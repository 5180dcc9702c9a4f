"""Shared fixtures: the ../shared fixture folder, isolated env and logging, toy example folders."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Helper modules beside the tests (tests/<sub>/<name>.py) are imported by plain name, as pytest's
# default import mode allowed; with --import-mode=importlib (pyproject.toml) we put their folders on
# the path ourselves.
for _sub in sorted(p for p in Path(__file__).resolve().parent.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
    if str(_sub) not in sys.path:
        sys.path.append(str(_sub))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`<repo>/../shared` (read-only reference fixtures); tests that need it skip when it is absent."""
    path = (REPO / ".." / "shared").resolve()
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the shared reference fixtures are not on this machine")
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
def make_toy_example(tmp_path: Path) -> Callable[..., Path]:
    """Factory: `make_toy_example("001", frames=5)` -> a toy example folder under tmp_path/examples."""
    from toy_pipeline import write_toy_example

    def make(name: str = "001", frames: int = 5, driving: bytes | None = None) -> Path:
        return write_toy_example(tmp_path / "examples" / name, frames, driving).root

    return make

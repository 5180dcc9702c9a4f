"""The pose env: keyed by the pins, built once under a lock, clean errors when an install fails."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from scail.errors import ScailError
from scail.pose import venv


def test_env_path_is_keyed_by_the_pins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = venv.env_path(tmp_path)
    assert a.parent == tmp_path / "envs" and a.name == f"pose-{venv.requirements_hash()}"
    monkeypatch.setattr(venv, "POSE_REQUIREMENTS", (*venv.POSE_REQUIREMENTS, "extra==1"))
    assert venv.env_path(tmp_path) != a


def test_describe_before_creation(tmp_path: Path) -> None:
    info = venv.describe(tmp_path)
    assert info["exists"] is False and "first pose run" in str(info["hint"])


@pytest.fixture
def offline_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pip sees no index at all (an offline machine), without touching the network."""
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))


def test_failed_install_names_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline_pip: None) -> None:
    monkeypatch.setattr(venv, "requirements", lambda: ("scail-no-such-package==9.9",))
    with pytest.raises(ScailError) as exc:
        venv.ensure_pose_env(tmp_path)
    msg = str(exc.value)
    assert msg.startswith("pose env install failed (") and "\n" not in msg
    log_file = venv.env_path(tmp_path).with_name(venv.env_path(tmp_path).name + ".log")
    assert str(log_file) in msg and "scail-no-such-package" in log_file.read_text()
    assert not venv.is_ready(venv.env_path(tmp_path))
    assert "incomplete" in str(venv.describe(tmp_path)["hint"])


def test_concurrent_creation_builds_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline_pip: None) -> None:
    # "pip" is already in every fresh venv, so these installs succeed offline
    monkeypatch.setattr(venv, "requirements", lambda: ("pip",))
    monkeypatch.setattr(venv, "POSE_REQUIREMENTS_NO_DEPS", ("pip",))
    builds: list[int] = []
    real_build = venv._build

    def counting_build(path: Path, on_progress: venv.EnvProgressFn) -> None:
        builds.append(1)
        real_build(path, on_progress)

    monkeypatch.setattr(venv, "_build", counting_build)
    events: list[tuple[int, int | None, str]] = []
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(
        venv.ensure_pose_env(tmp_path, on_progress=lambda d, t, s: events.append((d, t, s))))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and len(results) == 2 and results[0] == results[1]
    assert results[0].exists() and venv.is_ready(venv.env_path(tmp_path))
    assert events[-1][0] == events[-1][1] and "ready" in events[-1][2]
    info = venv.describe(tmp_path)
    assert info["exists"] is True and str(info["python"]).startswith("3.")
    assert venv.ensure_pose_env(tmp_path) == results[0] and len(builds) == 1  # reused


def test_torch_pin_follows_the_parent_build() -> None:
    from importlib.metadata import version

    req = venv.torch_requirement()
    assert req.startswith(f"torch=={venv.TORCH_VERSION}")
    assert req.endswith("+cpu") == version("torch").endswith("+cpu")  # never PyPI's CUDA build on a CPU box
    assert venv.requirements()[0] == req

"""Config helpers that every room shares: the weights-folder rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from scail.config import resolve_weights_dir


def test_weights_folder_flag_then_env_then_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SCAIL_WEIGHTS_DIR", str(tmp_path / "env-weights"))
    assert resolve_weights_dir(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_weights_dir("~/w") == Path.home() / "w"
    assert resolve_weights_dir(None) == tmp_path / "env-weights"
    monkeypatch.delenv("SCAIL_WEIGHTS_DIR")
    monkeypatch.setenv("SCAIL_CACHE_DIR", str(tmp_path / "cache"))
    assert resolve_weights_dir() == tmp_path / "cache" / "weights"

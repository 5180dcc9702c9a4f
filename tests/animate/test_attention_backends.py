"""Attention backend discovery: flash-attn 4's wheel is told apart from flash-attn 2."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from scail.animate import attention


@pytest.fixture
def fa4_namespace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A `flash_attn` namespace holding only `cute`, laid out as the flash-attn-4 wheel installs it."""
    pkg = tmp_path / "flash_attn" / "cute"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("def flash_attn_func(q, k, v):\n    raise RuntimeError('no GPU here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "flash_attn" or m.startswith("flash_attn.")]:
        monkeypatch.delitem(sys.modules, name)
    attention._has_module.cache_clear()
    attention._has_fa2.cache_clear()
    yield
    for name in [m for m in sys.modules if m == "flash_attn" or m.startswith("flash_attn.")]:
        del sys.modules[name]  # the fake package must not outlive the test
    attention._has_module.cache_clear()
    attention._has_fa2.cache_clear()


def test_fa4_wheel_is_not_taken_for_flash_attn_2(fa4_namespace: None) -> None:
    names = attention.available_backends()
    assert "flash_attn_4" in names and "flash_attn_2" not in names
    with pytest.raises(ValueError, match=r"'flash_attn_2' is not installed here \(pip install flash-attn\)"):
        attention.set_backend("flash_attn_2")
    attention.set_backend("flash_attn_4")
    try:  # on CPU tensors a flash backend falls back to SDPA
        assert attention.resolve_backend(torch.empty(1, 1, 1, 8)) == "sdpa"
    finally:
        attention.set_backend("auto")


def test_missing_fa4_names_the_extra() -> None:
    if attention._has_module("flash_attn.cute"):
        pytest.skip("flash-attn 4 is installed here")
    with pytest.raises(ValueError, match=r"pip install 'scail\[fa4\]'"):
        attention.set_backend("flash_attn_4")

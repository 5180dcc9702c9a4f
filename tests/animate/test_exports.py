"""`scail.animate`'s public names: importable, and the package itself loads no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

import scail.animate


def test_light_modules_of_the_package_do_not_import_torch() -> None:
    code = ("import sys\nimport scail.animate, scail.animate.weights, scail.animate.weights_cli, scail.animate.stage\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("name", scail.animate.__all__)
def test_every_public_name_resolves(name: str) -> None:
    value = getattr(scail.animate, name)
    assert value.__name__ == name


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'load_ditt'"):
        _ = scail.animate.load_ditt  # type: ignore[attr-defined]

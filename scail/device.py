"""The one device rule: which strings name a device, and which torch device "auto" becomes.

`parse_device` is pure (no torch): the CLI and the config validate `--device` / `*.device` with it
before any work starts. `resolve_device` turns a valid name into a `torch.device` at run time.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import TYPE_CHECKING

from scail.errors import InputError

if TYPE_CHECKING:
    import torch


class DeviceKind(str, Enum):
    """The device kinds scail runs on; `cuda` takes an optional index (`cuda:1`)."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


DEVICE_HELP = "auto (cuda when available, else cpu), cpu, cuda or cuda:N"
_DEVICE = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


def parse_device(text: str) -> str:
    """Validate a device name and return it normalised (`" CUDA:1 "` -> `"cuda:1"`).

    Raises `ValueError` naming the accepted forms: only `cuda` takes an index.
    """
    name = str(text).strip().lower()
    match = _DEVICE.match(name)
    if not match or (match.group(2) is not None and match.group(1) != DeviceKind.cuda.value):
        raise ValueError(f"'{text}' is not a device; use {DEVICE_HELP}")
    return name


def resolve_device(device: str | torch.device, *, what: str = "device") -> torch.device:
    """A device name (see `parse_device`) or `torch.device` -> the `torch.device` to use.

    "auto" is cuda when available, else cpu. Asking for cuda where there is none is an `InputError`
    naming `what` (e.g. "render.device") and the fix.
    """
    import torch

    if isinstance(device, torch.device):
        dev = device
    else:
        try:
            name = parse_device(device)
        except ValueError as exc:
            raise InputError(f"{what}: {exc}") from None
        if name == DeviceKind.auto.value:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"{what} {str(device)!r}: CUDA is not available here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"{what} {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA "
                         "device(s); use a smaller index")
    return dev

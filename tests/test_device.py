"""The one device rule (scail/device.py): names checked without torch, "auto" resolved with it."""

from __future__ import annotations

import pytest
import torch

from scail.config import load_pipeline
from scail.device import parse_device, resolve_device
from scail.errors import InputError


@pytest.mark.parametrize(("text", "name"), [("auto", "auto"), ("cpu", "cpu"), ("cuda", "cuda"),
                                            (" CUDA:1 ", "cuda:1"), ("cuda:12", "cuda:12")])
def test_device_names_are_normalised(text: str, name: str) -> None:
    assert parse_device(text) == name


@pytest.mark.parametrize("text", ["gpu", "cpu:1", "cuda:", "cuda:x", "auto:0", "mps", ""])
def test_other_device_names_are_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a device; use auto .*, cpu, cuda or cuda:N"):
        parse_device(text)


def test_resolve_device_auto_and_cpu() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(InputError, match=r"^render.device: 'gpu' is not a device"):
        resolve_device("gpu", what="render.device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_names_the_fix() -> None:
    with pytest.raises(InputError, match=r"^animate.device 'cuda:1': CUDA is not available here; use --device cpu$"):
        resolve_device("cuda:1", what="animate.device")


def test_config_device_fields_take_the_same_names() -> None:
    config = load_pipeline("tiny-random", {"animate.device": "CUDA:0", "pose.device": "auto"})
    assert (config.animate.device, config.pose.device) == ("cuda:0", "auto")
    with pytest.raises(InputError, match=r"^--set render.device=gpu: 'gpu' is not a device; use auto"):
        load_pipeline("tiny-random", {"render.device": "gpu"})

"""DiT checkpoint loading: SAT folders and files, wan-named safetensors, key maps, and bad files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from scail.animate import DiTConfig, load_dit
from scail.animate.dit import DiT
from scail.animate.dit_loader import SAT_PREFIX, resolve_dit_file, sat_to_wan, wan_to_sat
from scail.errors import CheckpointError


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    """A tiny random DiT's state dict in wan names."""
    dit = DiT(DiTConfig.tiny()).init_weights(torch.Generator().manual_seed(3))
    return {k: v.contiguous() for k, v in dit.state_dict().items()}


def save_sat(folder: Path, state: dict[str, torch.Tensor], iteration: str = "7") -> Path:
    """Write `state` in the released SAT layout: folder/latest + folder/<n>/mp_rank_00_model_states.pt."""
    (folder / iteration).mkdir(parents=True)
    (folder / "latest").write_text(iteration + "\n")
    torch.save({"module": wan_to_sat(state)}, folder / iteration / "mp_rank_00_model_states.pt")
    return folder


def assert_same_weights(dit: DiT, state: dict[str, torch.Tensor]) -> None:
    loaded = dit.state_dict()
    assert loaded.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(loaded[k].float(), v.float()), k


def one_line_error(exc: pytest.ExceptionInfo[CheckpointError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------------------------------
# Formats that load
# --------------------------------------------------------------------------------------------------


def test_sat_folder_file_and_parent_folder(tmp_path: Path, tiny_state: dict[str, torch.Tensor]) -> None:
    model_dir = save_sat(tmp_path / "SCAIL-Preview" / "model", tiny_state)
    for path in (model_dir, model_dir.parent, model_dir / "7" / "mp_rank_00_model_states.pt"):
        assert resolve_dit_file(path) == model_dir / "7" / "mp_rank_00_model_states.pt"
    dit = load_dit(model_dir, num_heads=2)
    assert dit.config == DiTConfig.tiny()
    assert_same_weights(dit, tiny_state)
    assert not dit.training and not any(p.requires_grad for p in dit.parameters())


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model.", "diffusion_model."])
def test_wan_safetensors_with_comfyui_prefixes(
    tmp_path: Path, tiny_state: dict[str, torch.Tensor], prefix: str
) -> None:
    file = tmp_path / "scail.safetensors"
    save_file({prefix + k: v.bfloat16() for k, v in tiny_state.items()}, str(file))
    dit = load_dit(file, num_heads=2)
    assert_same_weights(dit, {k: v.bfloat16() for k, v in tiny_state.items()})
    assert resolve_dit_file(tmp_path) == file  # a folder holding one .safetensors file


def test_wan_named_torch_file(tmp_path: Path, tiny_state: dict[str, torch.Tensor]) -> None:
    torch.save({"state_dict": tiny_state}, tmp_path / "scail.pth")
    assert_same_weights(load_dit(tmp_path / "scail.pth", num_heads=2), tiny_state)


def test_bf16_load_keeps_fp32_params(tmp_path: Path, tiny_state: dict[str, torch.Tensor]) -> None:
    file = tmp_path / "scail.safetensors"
    save_file(tiny_state, str(file))
    dit = load_dit(file, num_heads=2, dtype=torch.bfloat16)
    dtypes = {k: v.dtype for k, v in dit.state_dict().items()}
    assert dtypes["blocks.1.cross_attn.k_img.weight"] == torch.bfloat16
    assert dtypes["blocks.1.modulation"] == dtypes["head.head.bias"] == torch.float32


def test_default_heads_are_dim_over_128(tmp_path: Path) -> None:
    config = DiTConfig(dim=256, num_heads=4, num_layers=1, ffn_dim=32, freq_dim=16, text_dim=8, clip_dim=8)
    file = tmp_path / "scail.safetensors"
    save_file(DiT(config).state_dict(), str(file))
    assert load_dit(file).config.num_heads == 2  # 256 // 128
    assert load_dit(file, num_heads=4).config == config


def test_sat_and_wan_maps_are_inverse(tiny_state: dict[str, torch.Tensor]) -> None:
    sat = wan_to_sat(tiny_state)
    assert all(k.startswith(SAT_PREFIX) for k in sat)
    assert len(sat) == 25 + 24 * 2 and len(tiny_state) == 25 + 32 * 2
    back = sat_to_wan(sat)
    assert back.keys() == tiny_state.keys()
    assert all(torch.equal(back[k], v) for k, v in tiny_state.items())
    qkv = sat[SAT_PREFIX + "transformer.layers.0.attention.query_key_value.weight"]
    assert torch.equal(qkv[64:128], tiny_state["blocks.0.self_attn.k.weight"])  # rows [D:2D] are k


def test_fixture_sat_copy_equals_wan_file(fixture_path: Callable[..., Path]) -> None:
    """The fixture's SAT checkpoint, mapped by our key table, equals the official convert.py output."""
    from safetensors.torch import load_file

    from scail.animate.checkpoint import read_tensors

    root = fixture_path("scail", "dit")
    wan = load_file(str(root / "weights_wan.safetensors"))
    mapped = sat_to_wan(read_tensors(resolve_dit_file(root / "sat")))
    assert mapped.keys() == wan.keys()
    assert all(torch.equal(mapped[k].to(v.dtype), v) for k, v in wan.items())


# --------------------------------------------------------------------------------------------------
# Files that do not load: one-line CheckpointError naming the file and the problem
# --------------------------------------------------------------------------------------------------


def test_missing_key(tmp_path: Path, tiny_state: dict[str, torch.Tensor]) -> None:
    file = tmp_path / "scail.safetensors"
    save_file(
        {k: v for k, v in tiny_state.items() if k != "blocks.1.cross_attn.norm_k_img.weight"}, str(file)
    )
    with pytest.raises(CheckpointError) as exc:
        load_dit(file, num_heads=2)
    message = one_line_error(exc)
    assert (
        str(file) in message
        and "1 missing keys" in message
        and "blocks.1.cross_attn.norm_k_img.weight" in message
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("blocks.0.foo", torch.zeros(1), "1 unexpected keys (e.g. 'blocks.0.foo')"),
        ("blocks.0.ffn.2.bias", torch.zeros(65), "1 shape mismatches (e.g. 'blocks.0.ffn.2.bias': file [65], model [64])"),
    ],
    ids=["unexpected_key", "wrong_shape"],
)
def test_extra_key_or_wrong_shape(
    tmp_path: Path, tiny_state: dict[str, torch.Tensor], key: str, value: torch.Tensor, message: str
) -> None:
    file = tmp_path / "scail.safetensors"
    save_file({**tiny_state, key: value}, str(file))
    with pytest.raises(CheckpointError) as exc:
        load_dit(file, num_heads=2)
    assert message in one_line_error(exc)


def test_unknown_sat_key(tmp_path: Path, tiny_state: dict[str, torch.Tensor]) -> None:
    sat = {**wan_to_sat(tiny_state), SAT_PREFIX + "mixins.lora.weight": torch.zeros(1)}
    torch.save({"module": sat}, tmp_path / "mp_rank_00_model_states.pt")
    with pytest.raises(CheckpointError) as exc:
        load_dit(tmp_path, num_heads=2)
    assert "1 unexpected keys (e.g. 'model.diffusion_model.mixins.lora.weight')" in one_line_error(exc)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_truncated_file(tmp_path: Path, tiny_state: dict[str, torch.Tensor], suffix: str) -> None:
    file = tmp_path / f"scail{suffix}"
    if suffix == ".safetensors":
        save_file(tiny_state, str(file))
    else:
        torch.save({"module": wan_to_sat(tiny_state)}, file)
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as exc:
        load_dit(file, num_heads=2)
    message = one_line_error(exc)
    assert str(file) in message and "truncated" in message


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_not_a_checkpoint(tmp_path: Path, suffix: str) -> None:
    file = tmp_path / f"notes{suffix}"
    file.write_text("these are not weights\n")
    with pytest.raises(CheckpointError) as exc:
        load_dit(file, num_heads=2)
    assert str(file) in one_line_error(exc)


def test_checkpoint_of_another_model(tmp_path: Path) -> None:
    file = tmp_path / "vae.safetensors"
    save_file({"encoder.conv1.weight": torch.zeros(4, 3, 3, 3)}, str(file))
    with pytest.raises(CheckpointError) as exc:
        load_dit(file)
    assert "missing keys" in one_line_error(exc)


def test_sat_folder_problems(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file or folder"):
        load_dit(tmp_path / "absent")
    (tmp_path / "latest").write_text("3")
    with pytest.raises(
        CheckpointError, match=r"names iteration '3' but .*3/mp_rank_00_model_states.pt does not exist"
    ):
        load_dit(tmp_path)
    (tmp_path / "latest").unlink()
    with pytest.raises(CheckpointError, match="no DiT checkpoint found"):
        load_dit(tmp_path)


def test_heads_that_do_not_divide(tmp_path: Path, tiny_state: dict[str, torch.Tensor]) -> None:
    file = tmp_path / "scail.safetensors"
    save_file(tiny_state, str(file))
    with pytest.raises(CheckpointError, match="hidden size 64 cannot be split into 0 heads; pass num_heads"):
        load_dit(file)


def test_deepspeed_metadata_with_numpy_rng_loads(tmp_path: Path, tiny_state: dict[str, torch.Tensor]) -> None:
    """SAT saves `np.random.get_state()` and other client state beside `module` (model_io.py)."""
    import random

    import numpy as np

    folder = save_sat(tmp_path / "model", tiny_state)
    file = folder / "7" / "mp_rank_00_model_states.pt"
    torch.save(
        {
            "module": wan_to_sat(tiny_state),
            "iteration": 7,
            "np_rng_state": np.random.get_state(),
            "random_rng_state": random.getstate(),
            "torch_rng_state": torch.get_rng_state(),
            "param_shapes": [{"a": torch.Size([2, 3])}],
            "ds_version": "0.14.0",
        },
        file,
    )
    assert_same_weights(load_dit(folder, num_heads=2), tiny_state)


def test_pickled_objects_are_refused(tmp_path: Path, tiny_state: dict[str, torch.Tensor]) -> None:
    import argparse

    file = tmp_path / "mp_rank_00_model_states.pt"
    torch.save({"module": wan_to_sat(tiny_state), "args": argparse.Namespace(lr=1.0)}, file)
    with pytest.raises(CheckpointError) as exc:
        load_dit(file, num_heads=2)
    assert "not loaded for safety (argparse.Namespace)" in one_line_error(exc)

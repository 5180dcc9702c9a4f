"""SCAIL-2 checkpoints and weights folder: the released SAT layout (fsdp2 file with RNG states), the
wan layout, ComfyUI's and Wan2GP's names, the model kind from the keys, `scail weights --model scail-2`."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from scail2_cases import case_inputs
from tensor_checks import assert_close
from tiny_weights import tiny_architectures, write_encoders
from typer.testing import CliRunner

from scail.animate import weights
from scail.animate.dit2 import SCAIL2Config, SCAIL2DiT
from scail.animate.dit_loader import load_dit, wan_to_sat
from scail.animate.weights import Architectures, verify
from scail.errors import CheckpointError


def tiny2_arch() -> Architectures:
    return tiny_architectures(SCAIL2Config.tiny())


def save_fsdp2(path: Path, state: dict[str, torch.Tensor]) -> None:
    """As SAT's save_fsdp2_checkpoint: iteration, module and the RNG states (python, numpy, torch)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"iteration": 1, "module": wan_to_sat(state), "random_rng_state": random.getstate(),
                "np_rng_state": np.random.get_state(), "torch_rng_state": torch.get_rng_state()}, path)  # fmt: skip


@pytest.fixture()
def scail2_weights(tmp_path: Path) -> Path:
    """<weights>/scail-2 in the official SCAIL-2 layout with tiny models; CLIP only in <weights> (Preview's)."""
    arch = tiny2_arch()
    root = weights.model_dir(tmp_path / "weights", "scail-2")
    dit = SCAIL2DiT(arch.dit).init_weights(torch.Generator().manual_seed(0))
    save_fsdp2(root / "model" / "1" / weights.SCAIL2_SAT_FILE, dit.state_dict())
    (root / "model" / "latest").write_text("1\n")
    clip = write_encoders(root, arch)
    torch.save(clip, root.parent / weights.CLIP_FILES[0])
    return root


@pytest.mark.parametrize("source", ["sat/model", "weights_wan.safetensors"])
def test_official_layouts_load_as_scail2(fixture_path: Callable[..., Path], source: str) -> None:
    root = fixture_path("scail2", "dit")
    dit = load_dit(root / source, num_heads=2)
    assert isinstance(dit, SCAIL2DiT)
    assert dit.config == SCAIL2Config.from_json(json.loads((root / "config.json").read_text()))
    kwargs, _ = case_inputs(root, "c_replace_T3_land")
    from safetensors.torch import load_file

    out = load_file(str(root / "c_replace_T3_land" / "outputs.safetensors"))["out_cond"]
    with torch.no_grad():
        assert_close(dit(**kwargs), out.permute(1, 0, 2, 3)[None])


def test_comfyui_and_wan2gp_files(fixture_path: Callable[..., Path], tmp_path: Path) -> None:
    """ComfyUI's file name and `model.diffusion_model.` prefix; Wan2GP's pose/mask embedding names."""
    from safetensors.torch import load_file

    wan = load_file(str(fixture_path("scail2", "dit", "weights_wan.safetensors")))
    renamed = {
        "model.diffusion_model." + k.replace("patch_embedding_pose.", "pose_patch_embedding.").replace(
            "patch_embedding_mask.", "mask_patch_embedding."
        ): v
        for k, v in wan.items()
    }
    file = tmp_path / "w" / "diffusion_models" / "wan2.1_14B_SCAIL_2_fp16.safetensors"
    file.parent.mkdir(parents=True)
    save_file(renamed, str(file))
    assert weights.locate(tmp_path / "w")["dit"] == file
    dit = load_dit(file, num_heads=2)
    assert isinstance(dit, SCAIL2DiT)
    assert all(torch.equal(dit.state_dict()[k], v.float()) for k, v in wan.items())


def test_scail2_folder_resolves_verifies_and_builds(scail2_weights: Path) -> None:
    from scail.animate.build import build_scail_preview

    paths = weights.resolve(scail2_weights, model="scail-2")
    assert paths.dit.name == "fsdp2_rank_0000_checkpoint.pt"
    assert paths.clip.parent == scail2_weights.parent  # SCAIL-Preview's CLIP beside it
    rows = verify(scail2_weights, tiny2_arch(), model="scail-2")
    assert all(r.ok for r in rows), [r.detail for r in rows if not r.ok]
    pipe = build_scail_preview(scail2_weights, "cpu", torch.float32, offload="none", architectures=tiny2_arch(),
                               model="scail-2-14b")  # fmt: skip
    assert isinstance(pipe.dit, SCAIL2DiT) and pipe.label.startswith("scail-2-14b")
    with pytest.raises(CheckpointError, match=r"holds a SCAIL-2 DiT but animate\.model is scail-preview-14b"):
        build_scail_preview(scail2_weights, "cpu", torch.float32, offload="none", architectures=tiny2_arch())
    # checked against the released 14B sizes, the tiny DiT is refused with its shapes
    assert not {r.component: r for r in verify(scail2_weights, model="scail-2")}["dit"].ok


def test_missing_scail2_weights_name_the_command(tmp_path: Path) -> None:
    from scail.animate.weights_cli import weights_app

    (tmp_path / "scail-2").mkdir()
    with pytest.raises(CheckpointError, match=r"fsdp2_rank_0000_checkpoint\.pt.*--model scail-2"):
        weights.resolve(tmp_path / "scail-2", model="scail-2")
    result = CliRunner().invoke(weights_app, ["verify", "--model", "scail-2", "--dir", str(tmp_path / "scail-2")])
    assert result.exit_code == 1
    assert f"scail weights download --model scail-2 --dir {tmp_path / 'scail-2'}" in result.output.replace("\n", "")

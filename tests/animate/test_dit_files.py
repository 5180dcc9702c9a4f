"""The DiT loaded from the files users have (fp8-scaled checkpoints, LoRAs) through the real loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from scail.animate.dit import DiT, DiTConfig
from scail.animate.dit_files import load_dit_with
from scail.animate.fast import FP8_LINEARS, FP8Linear
from scail.animate.lora import LoraSpec, attach_loras, random_lora
from scail.errors import CheckpointError

FP8 = torch.float8_e4m3fn


def tiny_state() -> dict[str, torch.Tensor]:
    dit = DiT(DiTConfig.tiny()).init_weights(torch.Generator().manual_seed(3))
    return {k: v.detach().clone() for k, v in dit.state_dict().items()}


def is_block_linear(key: str) -> bool:
    parts = key.split(".")
    return parts[0] == "blocks" and parts[-1] == "weight" and ".".join(parts[2:-1]) in FP8_LINEARS


def kijai_fp8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """kijai's *_fp8_e4m3fn_scaled_KJ layout: block linears float8 with a per-tensor scale_weight, the
    rest bf16, a `scaled_fp8` marker, all under `model.diffusion_model.` (as ComfyUI saves it)."""
    out: dict[str, torch.Tensor] = {"scaled_fp8": torch.empty(0, dtype=FP8)}
    for k, v in state.items():
        if is_block_linear(k):
            scale = v.abs().max().float() / 448.0
            out[f"model.diffusion_model.{k}"] = (v / scale).to(FP8)
            out[f"model.diffusion_model.{k.removesuffix('.weight')}.scale_weight"] = scale.reshape(1)
        else:
            out[f"model.diffusion_model.{k}"] = v.bfloat16()
    return out


def inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    cfg = DiTConfig.tiny()
    return (torch.randn(1, 2, 16, 8, 12, generator=g), torch.tensor([700.0]),
            torch.randn(1, 7, cfg.text_dim, generator=g), torch.randn(1, 1, 16, 8, 12, generator=g),
            torch.randn(1, 2, 16, 4, 6, generator=g), torch.randn(1, 257, cfg.clip_dim, generator=g))


def run(dit: DiT) -> torch.Tensor:
    with torch.no_grad():
        return dit(*inputs())


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("dit")
    state = tiny_state()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    paths = {"plain": folder / "dit.safetensors", "fp8": folder / "dit_fp8_e4m3fn_scaled_KJ.safetensors",
             "lora": folder / "lightx2v_rank4.safetensors"}
    save_file(state, str(paths["plain"]))
    save_file(kijai_fp8(state), str(paths["fp8"]))
    save_file(random_lora(shapes, rank=4, generator=torch.Generator().manual_seed(5), dtype=torch.float32, std=0.05),
              str(paths["lora"]))
    return paths


def test_fp8_scaled_file_loads_dequantised(files: dict[str, Path]) -> None:
    loaded = load_dit_with(files["fp8"], num_heads=2)
    assert loaded.format.name == "fp8_e4m3fn_scaled" and loaded.fp8_linears == 0
    stored = kijai_fp8(tiny_state())
    got = loaded.dit.state_dict()
    key = "blocks.1.ffn.2.weight"
    expected = stored[f"model.diffusion_model.{key}"].float() * stored["model.diffusion_model.blocks.1.ffn.2.scale_weight"]
    assert torch.equal(got[key], expected)  # float32 compute dtype: exactly the file's values
    assert torch.equal(got["blocks.0.norm3.weight"], tiny_state()["blocks.0.norm3.weight"].bfloat16().float())
    assert rel(run(loaded.dit), run(load_dit_with(files["plain"], num_heads=2).dit)) < 0.05


def test_fp8_scaled_file_runs_on_its_own_fp8_weights(files: dict[str, Path]) -> None:
    """fast mode's FP8 linears take the file's float8 bytes as they are (no second quantization)."""
    loaded = load_dit_with(files["fp8"], num_heads=2, fp8_linears=True)
    layers = [m for m in loaded.dit.modules() if isinstance(m, FP8Linear)]
    assert loaded.fp8_linears == len(layers) == 2 * len(FP8_LINEARS)
    stored = kijai_fp8(tiny_state())
    q = loaded.dit.get_submodule("blocks.0.self_attn.q")
    assert isinstance(q, FP8Linear)
    assert torch.equal(q.weight_fp8.view(torch.uint8), stored["model.diffusion_model.blocks.0.self_attn.q.weight"].view(torch.uint8))
    assert rel(run(loaded.dit), run(load_dit_with(files["fp8"], num_heads=2).dit)) < 0.05


def test_lora_merged_at_load_equals_applied_at_run_time(files: dict[str, Path]) -> None:
    """Through the real loader: merged (float32) == unmerged + the LoRA at run time, rel <= 1e-6."""
    spec = [LoraSpec(files["lora"], 0.7)]
    merged = load_dit_with(files["plain"], num_heads=2, loras=spec)
    assert merged.merged and "lightx2v_rank4.safetensors@0.7" in merged.describe()
    later = load_dit_with(files["plain"], num_heads=2, loras=spec, lora_merge=False)
    assert not later.merged
    attach_loras(later.dit, later.loras)
    assert rel(run(merged.dit), run(later.dit)) <= 1e-6
    assert rel(run(merged.dit), run(load_dit_with(files["plain"], num_heads=2).dit)) > 1e-3
    zero = load_dit_with(files["plain"], num_heads=2, loras=[LoraSpec(files["lora"], 0.0)])
    assert torch.equal(run(zero.dit), run(load_dit_with(files["plain"], num_heads=2).dit))


def test_lora_on_an_fp8_file_merges_into_the_dequantised_weights(files: dict[str, Path]) -> None:
    spec = [LoraSpec(files["lora"], 1.0)]
    loaded = load_dit_with(files["fp8"], num_heads=2, loras=spec, fp8_linears=True)
    assert loaded.fp8_linears == 0  # every block linear got a LoRA update: none keeps the file's bytes
    plain = load_dit_with(files["fp8"], num_heads=2).dit.state_dict()
    delta = next(d for d in loaded.loras[0][0].deltas if d.target == "blocks.0.ffn.0.weight")
    expected = plain["blocks.0.ffn.0.weight"] + delta.materialize(plain["blocks.0.ffn.0.weight"].shape)
    torch.testing.assert_close(loaded.dit.state_dict()["blocks.0.ffn.0.weight"], expected, rtol=0, atol=1e-6)


def test_unrelated_lora_fails_the_load_naming_it(files: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "flux_style.safetensors"
    save_file({"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 3072),
               "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight": torch.zeros(3072, 4)}, str(other))
    with pytest.raises(CheckpointError, match=r"flux_style\.safetensors: none of its 2 keys applies to the SCAIL DiT"):
        load_dit_with(files["plain"], num_heads=2, loras=[LoraSpec(other)])


def test_build_pipeline_applies_config_loras(tmp_path: Path) -> None:
    """`animate.loras` reach the model the stage builds: merged by default, at run time with
    lora_merge=false, same output either way; strength 0 is the model without the LoRA."""
    from scail.animate.build import build_pipeline
    from scail.config import AnimateConfig

    base = build_pipeline(AnimateConfig(model="tiny-random", device="cpu"))
    shapes = {k: tuple(v.shape) for k, v in base.dit.state_dict().items()}
    lora = tmp_path / "tiny_lora.safetensors"
    save_file(random_lora(shapes, rank=4, generator=torch.Generator().manual_seed(9), dtype=torch.float32, std=0.05),
              str(lora))
    merged = build_pipeline(AnimateConfig(model="tiny-random", device="cpu", loras=[f"{lora}:0.9"]))
    hooked = build_pipeline(AnimateConfig(model="tiny-random", device="cpu", loras=[f"{lora}:0.9"], lora_merge=False))
    zero = build_pipeline(AnimateConfig(model="tiny-random", device="cpu", loras=[f"{lora}:0"]))
    assert hooked.pending_loras == [] and merged.pending_loras == []
    assert merged.label.endswith(" + tiny_lora.safetensors@0.9")
    cfg = base.dit.config
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(1, 2, 16, 8, 12, generator=g), torch.tensor([700.0]), torch.randn(1, 7, cfg.text_dim, generator=g),
            torch.randn(1, 1, 16, 8, 12, generator=g), torch.randn(1, 2, 16, 4, 6, generator=g),
            torch.randn(1, 257, cfg.clip_dim, generator=g))
    with torch.no_grad():
        out = {name: p.dit(*args) for name, p in
               {"base": base, "merged": merged, "hooked": hooked, "zero": zero}.items()}
    assert rel(out["merged"], out["hooked"]) <= 1e-6
    assert rel(out["merged"], out["base"]) > 1e-3
    assert torch.equal(out["zero"], out["base"])


def test_loras_reach_the_scail2_dit(tmp_path: Path) -> None:
    """SCAIL-2 presets take LoRAs as SCAIL-Preview does (lightx2v layout here): merged at load equals
    run-time hooks, and the LoRA changes the SCAIL-2 DiT's output."""
    from scail.animate.build import build_pipeline
    from scail.config import AnimateConfig

    def build(**kw: object) -> torch.nn.Module:
        return build_pipeline(AnimateConfig(model="tiny-random-scail-2", device="cpu", **kw)).dit  # type: ignore[arg-type]

    base = build()
    shapes = {k: tuple(v.shape) for k, v in base.state_dict().items()}
    lora = tmp_path / "lightx2v.safetensors"
    save_file(random_lora(shapes, rank=4, generator=torch.Generator().manual_seed(9), dtype=torch.float32, std=0.05),
              str(lora))
    merged, hooked = build(loras=[f"{lora}:0.8"]), build(loras=[f"{lora}:0.8"], lora_merge=False)
    cfg = base.config
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(1, 2, 16, 8, 12, generator=g), torch.tensor([700.0]), torch.randn(1, 7, cfg.text_dim, generator=g),
            torch.randn(1, 1, 16, 8, 12, generator=g), torch.randn(1, 2, 16, 4, 6, generator=g),
            torch.randn(1, 257, cfg.clip_dim, generator=g))
    kw = {"ref_mask": torch.rand(1, 1, 28, 8, 12, generator=g), "driving_mask": torch.rand(1, 2, 28, 4, 6, generator=g)}
    with torch.no_grad():
        out = {name: dit(*args, **kw) for name, dit in {"base": base, "merged": merged, "hooked": hooked}.items()}
    assert rel(out["merged"], out["hooked"]) <= 1e-6
    assert rel(out["merged"], out["base"]) > 1e-3

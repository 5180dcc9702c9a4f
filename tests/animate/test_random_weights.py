"""Random weights (benchmarks, tests): built in memory they equal the same networks written in the
release layout and loaded from those files by the real loaders."""

from __future__ import annotations

from pathlib import Path

import torch

from scail.animate import weights
from scail.animate.build import build_scail_preview
from scail.animate.random_weights import RandomWeights, write_weights_folder


def _tiny() -> weights.Architectures:
    from scail.animate.clip import CLIPConfig
    from scail.animate.dit import DiTConfig
    from scail.animate.t5 import T5Config
    from scail.animate.vae import VAEConfig

    return weights.Architectures(DiTConfig.tiny(), VAEConfig.tiny(), T5Config.tiny(), CLIPConfig.tiny())


def test_in_memory_networks_equal_the_files_they_write(tmp_path: Path) -> None:
    source = RandomWeights(seed=3, architectures=_tiny())
    root = write_weights_folder(tmp_path / "SCAIL-Preview", source)
    assert all(r.ok for r in weights.verify(root, _tiny())), weights.verify(root, _tiny())
    from_files = build_scail_preview(root, "cpu", torch.float32, architectures=_tiny())
    in_memory = build_scail_preview(tmp_path / "unused", "cpu", torch.float32, weights=source)
    assert "random weights" in in_memory.label
    for a, b in ((from_files.dit, in_memory.dit), (from_files.vae.model, in_memory.vae.model),
                 (from_files.text_encoder.model, in_memory.text_encoder.model),
                 (from_files.image_encoder.model, in_memory.image_encoder.model)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    other = build_scail_preview(tmp_path / "unused", "cpu", torch.float32, weights=RandomWeights(4, _tiny()))
    assert not torch.equal(other.dit.blocks[0].ffn[0].weight, in_memory.dit.blocks[0].ffn[0].weight)


def test_a_folder_with_a_scaled_fp8_dit_loads_as_the_same_networks_to_fp8_rounding(tmp_path: Path) -> None:
    """The benchmarks' fp8 folder: the DiT as ComfyUI's scaled fp8 file under model/, read in place of the
    SAT checkpoint; its linears are the bf16 ones to e4m3 rounding, everything else is equal."""
    from scail.animate.checkpoint import read_tensors
    from scail.animate.fast import FP8_LINEARS, relative_error
    from scail.animate.quant import detect_format, safetensors_metadata

    source = RandomWeights(seed=3, architectures=_tiny())
    root = write_weights_folder(tmp_path / "SCAIL-Preview", source, dit_format="fp8_e4m3fn_scaled")
    dit_file = weights.resolve(root).dit
    assert dit_file.name.endswith("_fp8_e4m3fn_scaled.safetensors")
    assert detect_format(read_tensors(dit_file), safetensors_metadata(dit_file)).name == "fp8_e4m3fn_scaled"
    from_file = build_scail_preview(root, "cpu", torch.float32, architectures=_tiny()).dit.state_dict()
    in_memory = build_scail_preview(tmp_path / "unused", "cpu", torch.float32, weights=source).dit.state_dict()
    assert from_file.keys() == in_memory.keys()
    quantized = [k for k in in_memory if any(k.endswith(f".{n}.weight") for n in FP8_LINEARS) and k.startswith("blocks.")]
    assert quantized
    for k in in_memory:
        if k in quantized:
            assert 0 < relative_error(from_file[k], in_memory[k]) < 0.05, k
        else:
            assert torch.equal(from_file[k], in_memory[k]), k

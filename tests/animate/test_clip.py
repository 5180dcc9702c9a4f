"""CLIP ViT-H/14 image tower: parity with the official code (fixtures/scail/clip, pipeline), loaders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tensor_checks import assert_close, errors

from scail.animate.clip import CLIPConfig, CLIPImageEncoder, CLIPVisionTower, load_clip, preprocess
from scail.errors import CheckpointError


@pytest.fixture(scope="module")
def tiny_clip(fixture_path: Callable[..., Path]) -> CLIPVisionTower:
    return load_clip(
        fixture_path("scail", "clip") / "weights.safetensors", dtype=torch.float32, config=CLIPConfig.tiny()
    )


def test_encoder_matches_official_fixture(
    fixture_path: Callable[..., Path], tiny_clip: CLIPVisionTower
) -> None:
    """Squash to 56x56 + normalise + all blocks but the last, against `CLIPModel.visual`."""
    image = load_file(fixture_path("scail", "clip") / "inputs.safetensors")["image"]  # (3, 40, 72) in [-1, 1]
    ref = load_file(fixture_path("scail", "clip") / "outputs.safetensors")
    out = CLIPImageEncoder(tiny_clip).encode(image[None])
    assert len(tiny_clip.transformer) == 2  # 3 blocks in the file, the last one unused
    assert_close(out, ref["visual_use_31_block"])
    # the last block really is excluded: the all-blocks output is far away
    assert errors(out, ref["visual_all_blocks"])[1] > 1e-2


def test_pipeline_preprocessing_and_features(
    fixture_path: Callable[..., Path], tiny_clip: CLIPVisionTower
) -> None:
    """The official generate() run: cropped reference -> CLIP input -> clip_fea."""
    ref = load_file(fixture_path("scail", "pipeline") / "intermediates.safetensors")
    image = ref["clip_input_image_c1hw"].transpose(0, 1)  # (1, 3, 64, 128)
    x = preprocess(image, image_size=56)
    assert x.shape == (1, 3, 56, 56)
    assert errors(x, ref["clip_vit_input_normalized"])[0] < 1e-5
    assert_close(CLIPImageEncoder(tiny_clip).encode(image), ref["clip_fea"])


def test_float16_load_stays_close(fixture_path: Callable[..., Path], tiny_clip: CLIPVisionTower) -> None:
    """The official dtype (fp16 weights); LayerNorm still computed in float32."""
    image = load_file(fixture_path("scail", "clip") / "inputs.safetensors")["image"][None]
    model = load_clip(fixture_path("scail", "clip") / "weights.safetensors", config=CLIPConfig.tiny())
    assert model.pos_embedding.dtype == torch.float16
    assert not any(p.requires_grad for p in model.parameters())
    out = CLIPImageEncoder(model).encode(image)
    assert out.dtype == torch.float16
    assert errors(out, CLIPImageEncoder(tiny_clip).encode(image))[1] < 1e-2


def _hf_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The fixture's official names written as a Hugging Face CLIPVisionModel state dict."""
    block = {"attn.proj": "self_attn.out_proj", "norm1": "layer_norm1", "norm2": "layer_norm2"}
    block |= {"mlp.0": "mlp.fc1", "mlp.2": "mlp.fc2"}
    hf = {
        "vision_model.embeddings.class_embedding": state["visual.cls_embedding"].flatten(),
        "vision_model.embeddings.patch_embedding.weight": state["visual.patch_embedding.weight"],
        "vision_model.embeddings.position_embedding.weight": state["visual.pos_embedding"][0],
        "vision_model.embeddings.position_ids": torch.arange(17)[None],
        "vision_model.pre_layrnorm.weight": state["visual.pre_norm.weight"],
        "vision_model.pre_layrnorm.bias": state["visual.pre_norm.bias"],
        "vision_model.post_layernorm.weight": state["visual.post_norm.weight"],
        "vision_model.post_layernorm.bias": state["visual.post_norm.bias"],
        "visual_projection.weight": state["visual.head"].t().contiguous(),
    }
    for key, value in state.items():
        if not key.startswith("visual.transformer."):
            continue
        i, rest = key[len("visual.transformer.") :].split(".", 1)
        module, param = rest.rsplit(".", 1)
        prefix = f"vision_model.encoder.layers.{i}."
        if module == "attn.to_qkv":
            for name, part in zip("qkv", value.chunk(3), strict=True):
                hf[f"{prefix}self_attn.{name}_proj.{param}"] = part.contiguous()
        else:
            hf[f"{prefix}{block[module]}.{param}"] = value
    return hf


def test_loads_every_file_layout(
    fixture_path: Callable[..., Path], tiny_clip: CLIPVisionTower, tmp_path: Path
) -> None:
    state = load_file(fixture_path("scail", "clip") / "weights.safetensors")  # visual.* + log_scale
    image = torch.rand(2, 3, 30, 50) * 2 - 1
    expected = CLIPImageEncoder(tiny_clip).encode(image)
    tiny = CLIPConfig.tiny()

    full = dict(state)  # the full Wan file also holds the XLM-RoBERTa text tower
    full["textual.token_embedding.weight"] = torch.zeros(10, 8)
    full["textual.head.0.weight"] = torch.zeros(8, 8)
    layouts = {
        "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth": full,
        "onlyvisual.pth": state,
        "no_prefix.safetensors": {
            k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")
        },
        "clip_vision_h.safetensors": _hf_names(state),
    }
    for name, tensors in layouts.items():
        path = tmp_path / name
        if name.endswith(".pth"):
            torch.save(tensors, path)
        else:
            save_file(tensors, path)
        out = CLIPImageEncoder(load_clip(path, torch.float32, config=tiny)).encode(image)
        assert torch.equal(out, expected), name


def test_loader_errors(fixture_path: Callable[..., Path], tmp_path: Path) -> None:
    state = load_file(fixture_path("scail", "clip") / "weights.safetensors")
    tiny = CLIPConfig.tiny()

    with pytest.raises(CheckpointError, match="no such file"):
        load_clip(tmp_path / "absent.pth", config=tiny)

    t5_like = tmp_path / "t5.safetensors"
    save_file({"token_embedding.weight": torch.zeros(4, 4)}, t5_like)
    with pytest.raises(CheckpointError, match=r"t5\.safetensors: no 'visual\.\*' keys"):
        load_clip(t5_like, config=tiny)

    broken = dict(state)
    del broken["visual.transformer.0.attn.to_qkv.bias"]
    broken["visual.transformer.5.norm1.weight"] = torch.ones(32)
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(CheckpointError) as info:
        load_clip(path, config=tiny)
    message = str(info.value)
    assert "\n" not in message
    assert "1 missing keys (e.g. 'transformer.0.attn.to_qkv.bias')" in message
    assert "1 unexpected keys (e.g. 'transformer.5.norm1.weight')" in message

    wrong_head = dict(state)
    wrong_head["visual.head"] = torch.zeros(32, 8)
    path = tmp_path / "wrong_head.safetensors"
    save_file(wrong_head, path)
    with pytest.raises(CheckpointError, match=r"'head' has shape \[32, 8\], expected \[32, 16\]"):
        load_clip(path, config=tiny)

    # The tiny file against the real configuration: shapes refused, not silently broadcast.
    wider = CLIPConfig(**{**tiny.__dict__, "dim": 64})
    with pytest.raises(
        CheckpointError, match=r"shape mismatches \(e\.g\. 'cls_embedding': file \[1, 1, 32\]"
    ):
        load_clip(fixture_path("scail", "clip") / "weights.safetensors", config=wider)


def test_real_config_builds_on_meta() -> None:
    cfg = CLIPConfig.vit_h_14()
    assert (cfg.image_size, cfg.patch_size, cfg.dim, cfg.num_heads, cfg.num_layers) == (224, 14, 1280, 16, 32)
    with torch.device("meta"):
        model = CLIPVisionTower(cfg)
    assert len(model.transformer) == 31
    per_block = (
        2 * 2 * 1280
        + (1280 * 3840 + 3840)
        + (1280 * 1280 + 1280)
        + (1280 * 5120 + 5120)
        + (5120 * 1280 + 1280)
    )
    stem = 1280 * 3 * 14 * 14 + 1280 + 257 * 1280 + 2 * 1280  # patch (no bias), cls, positions, pre-norm
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == stem + 31 * per_block == 611_086_080
    # + the unused last block, post-norm and head = the 632M-parameter ViT-H/14 tower of the file
    assert n_params + per_block + 2 * 1280 + 1280 * 1024 == 632_076_800
    out = CLIPImageEncoder(model).encode(torch.zeros(1, 3, 512, 896, device="meta"))
    assert out.shape == (1, 257, 1280)

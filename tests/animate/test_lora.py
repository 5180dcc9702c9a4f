"""LoRA loading: every layout maps every key of the real 14B names; merged == applied at run time;
strength 0 == no LoRA; a LoRA for another model is an error naming the file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from scail.animate.dit import DiT, DiTConfig
from scail.animate.lora import LoraSpec, attach_loras, map_lora, merge_loras, random_lora, read_lora
from scail.errors import CheckpointError, InputError

# --------------------------------------------------------------------------------------------------
# The real 14B names, and the names each layout writes for them (written here independently of
# scail/animate/lora.py's tables, from the layouts' own conventions)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes_14b() -> dict[str, tuple[int, ...]]:
    """The real SCAIL 14B state-dict names and shapes (DiT built on the meta device)."""
    with torch.device("meta"):
        dit = DiT(DiTConfig.scail_14b())
    return {k: tuple(v.shape) for k, v in dit.state_dict().items()}


def test_meta_names_are_the_released_names(shapes_14b: dict[str, tuple[int, ...]], fixtures_root: Path) -> None:
    """The names the key-map tests use are the official model's (keys_14B.json, from the wan branch)."""
    listing = fixtures_root / "scail" / "keys_14B.json"
    if not listing.is_file():
        pytest.skip(f"{listing} is absent")
    wan = json.loads(listing.read_text())["dit_wan"]
    assert {k: tuple(v) for k, v in wan.items()} == shapes_14b


LINEAR_SUFFIXES = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k",
                   "cross_attn.v", "cross_attn.o", "cross_attn.k_img", "cross_attn.v_img", "ffn.0", "ffn.2")
NORM_SUFFIXES = ("self_attn.norm_q", "self_attn.norm_k", "cross_attn.norm_q", "cross_attn.norm_k",
                 "cross_attn.norm_k_img", "norm3")
GLOBAL_LINEARS = ("head.head", "text_embedding.0", "text_embedding.2", "time_embedding.0", "time_embedding.2",
                  "time_projection.1", "img_emb.proj.1", "img_emb.proj.3", "patch_embedding", "patch_embedding_pose")
GLOBAL_NORMS = ("img_emb.proj.0", "img_emb.proj.4")

DIFFUSERS = {  # wan module suffix -> diffusers WanTransformer3DModel name
    "self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0", "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v", "cross_attn.o": "attn2.to_out.0", "cross_attn.k_img": "attn2.add_k_proj",
    "cross_attn.v_img": "attn2.add_v_proj", "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2",
    "head.head": "proj_out", "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
    "patch_embedding": "patch_embedding",
}  # fmt: skip


def linear_modules(num_layers: int) -> list[str]:
    return [f"blocks.{i}.{s}" for i in range(num_layers) for s in LINEAR_SUFFIXES] + list(GLOBAL_LINEARS)


def pair(shape: tuple[int, ...], rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(up, down) meta tensors for a weight of `shape` (a conv's factors as kohya writes them)."""
    up = torch.empty(shape[0], rank, *([1] * (len(shape) - 2)), device="meta", dtype=torch.bfloat16)
    down = torch.empty(rank, *shape[1:], device="meta", dtype=torch.bfloat16)
    return up, down


def comfyui_file(shapes: dict[str, tuple[int, ...]], rank: int = 4, prefix: str = "diffusion_model.",
                 with_alpha: bool = True) -> dict[str, torch.Tensor]:
    """kijai / lightx2v layout: lora_down/up/alpha + diff_b on linears, diff (+diff_b) on norms,
    diff_m on each block's and the head's modulation."""
    out: dict[str, torch.Tensor] = {}
    meta = torch.device("meta")
    layers = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("blocks."))
    for m in linear_modules(layers):
        up, down = pair(shapes[f"{m}.weight"], rank)
        out[f"{prefix}{m}.lora_up.weight"], out[f"{prefix}{m}.lora_down.weight"] = up, down
        if with_alpha:
            out[f"{prefix}{m}.alpha"] = torch.tensor(float(rank))
        out[f"{prefix}{m}.diff_b"] = torch.empty(shapes[f"{m}.bias"], device=meta)
    norms = [f"blocks.{i}.{s}" for i in range(layers) for s in NORM_SUFFIXES] + list(GLOBAL_NORMS)
    for m in norms:
        out[f"{prefix}{m}.diff"] = torch.empty(shapes[f"{m}.weight"], device=meta)
        if f"{m}.bias" in shapes:
            out[f"{prefix}{m}.diff_b"] = torch.empty(shapes[f"{m}.bias"], device=meta)
    for i in range(layers):
        out[f"{prefix}blocks.{i}.diff_m"] = torch.empty(shapes[f"blocks.{i}.modulation"], device=meta)
    out[f"{prefix}head.diff_m"] = torch.empty(shapes["head.modulation"], device=meta)
    return out


def diffusers_file(shapes: dict[str, tuple[int, ...]], rank: int = 4) -> dict[str, torch.Tensor]:
    """diffusers `save_lora_weights` layout: transformer.<diffusers name>.lora_A/B.weight (+ lora_B.bias)."""
    out: dict[str, torch.Tensor] = {}
    layers = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("blocks."))
    for m in linear_modules(layers):
        if m.startswith("blocks."):
            _, index, suffix = m.split(".", 2)
            name = f"blocks.{index}.{DIFFUSERS[suffix]}"
        elif m in DIFFUSERS:
            name = DIFFUSERS[m]
        else:
            continue  # patch_embedding_pose: SCAIL's own, no diffusers name
        up, down = pair(shapes[f"{m}.weight"], rank)
        out[f"transformer.{name}.lora_A.weight"], out[f"transformer.{name}.lora_B.weight"] = down, up
        out[f"transformer.{name}.lora_B.bias"] = torch.empty(shapes[f"{m}.bias"], device="meta")
    return out


def peft_wan_file(shapes: dict[str, tuple[int, ...]], rank: int = 4) -> dict[str, torch.Tensor]:
    """PEFT on the wan module names with the adapter name (DiffSynth-Studio style)."""
    out: dict[str, torch.Tensor] = {}
    layers = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("blocks."))
    for m in linear_modules(layers):
        up, down = pair(shapes[f"{m}.weight"], rank)
        out[f"base_model.model.{m}.lora_A.default.weight"] = down
        out[f"base_model.model.{m}.lora_B.default.weight"] = up
    return out


def kohya_file(shapes: dict[str, tuple[int, ...]], rank: int = 4) -> dict[str, torch.Tensor]:
    """kohya / musubi-tuner: lora_unet_<module with _>.lora_down/up.weight + alpha."""
    out: dict[str, torch.Tensor] = {}
    layers = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("blocks."))
    for m in linear_modules(layers):
        name = "lora_unet_" + m.replace(".", "_")
        up, down = pair(shapes[f"{m}.weight"], rank)
        out[f"{name}.lora_up.weight"], out[f"{name}.lora_down.weight"] = up, down
        out[f"{name}.alpha"] = torch.tensor(rank / 2)
    return out


LAYOUTS: dict[str, Callable[[dict[str, tuple[int, ...]]], dict[str, torch.Tensor]]] = {
    "comfyui": comfyui_file,
    "official-wan (no prefix, no alpha)": lambda s: comfyui_file(s, prefix="", with_alpha=False),
    "diffusers": diffusers_file,
    "peft-wan": peft_wan_file,
    "kohya": kohya_file,
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_key_of_each_layout_maps(layout: str, shapes_14b: dict[str, tuple[int, ...]]) -> None:
    """Each layout, written with the real 14B names, maps every key to the right parameter."""
    tensors = LAYOUTS[layout](shapes_14b)
    lora = map_lora(tensors, shapes_14b, Path(f"{layout}.safetensors"))
    assert lora.unused == {}
    assert lora.num_keys == len(tensors)
    targets = {d.target for d in lora.deltas}
    n_linear = 40 * len(LINEAR_SUFFIXES) + len(GLOBAL_LINEARS) - (1 if layout == "diffusers" else 0)
    low_rank = {d.target for d in lora.deltas if d.low_rank}
    assert len(low_rank) == n_linear
    assert "blocks.39.self_attn.q.weight" in low_rank and "blocks.0.cross_attn.v_img.weight" in low_rank
    assert "blocks.7.ffn.2.weight" in low_rank and "head.head.weight" in low_rank
    if layout.startswith(("comfyui", "official")):
        assert {"blocks.3.modulation", "head.modulation", "blocks.5.norm3.bias", "blocks.0.cross_attn.norm_k_img.weight",
                "img_emb.proj.0.bias", "patch_embedding_pose.bias"} <= targets
    if layout == "diffusers":
        assert "blocks.12.ffn.0.bias" in targets and "time_projection.1.bias" in targets
    scales = {d.scale for d in lora.deltas if d.low_rank}
    assert scales == ({0.5} if layout == "kohya" else {1.0})


def test_random_lora_is_the_lightx2v_layout(shapes_14b: dict[str, tuple[int, ...]]) -> None:
    """The benchmark's generated LoRA (meta tensors here) uses the real names: every key applies."""
    tensors = random_lora(shapes_14b, rank=64, device="meta")
    lora = map_lora(tensors, shapes_14b, Path("random.safetensors"))
    assert lora.unused == {} and lora.rank == 64
    assert lora.layouts == ("comfyui",)
    assert tensors["diffusion_model.blocks.0.self_attn.q.lora_down.weight"].shape == (64, 5120)


# --------------------------------------------------------------------------------------------------
# Numerics on the tiny model
# --------------------------------------------------------------------------------------------------


def tiny_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cfg = DiTConfig.tiny()
    return {
        "x": torch.randn(1, 2, 16, 8, 12, generator=g),
        "t": torch.tensor([700.0]),
        "context": torch.randn(1, 7, cfg.text_dim, generator=g),
        "ref_latent": torch.randn(1, 1, 16, 8, 12, generator=g),
        "pose_latent": torch.randn(1, 2, 16, 4, 6, generator=g),
        "clip": torch.randn(1, 257, cfg.clip_dim, generator=g),
    }


def run(dit: DiT, i: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return dit(i["x"], i["t"], i["context"], i["ref_latent"], i["pose_latent"], i["clip"])


def tiny_model() -> DiT:
    return DiT(DiTConfig.tiny()).init_weights(torch.Generator().manual_seed(3)).eval().requires_grad_(False)


def with_state(state: dict[str, torch.Tensor]) -> DiT:
    dit = tiny_model()
    dit.load_state_dict(state)
    return dit


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.fixture(scope="module")
def tiny_lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real safetensors file in the lightx2v layout for the tiny DiT (random, rank 4, non-zero)."""
    shapes = {k: tuple(v.shape) for k, v in tiny_model().state_dict().items()}
    tensors = random_lora(shapes, rank=4, generator=torch.Generator().manual_seed(5), dtype=torch.float32, std=0.05)
    path = tmp_path_factory.mktemp("lora") / "tiny_lightx2v.safetensors"
    save_file(tensors, str(path))
    return path


def test_merged_equals_applied_at_run_time(tiny_lora: Path) -> None:
    """W + s*up@down merged at load gives the output of the base model with the LoRA's update added to
    each linear's output at run time (float32, rel <= 1e-6); and the LoRA does change the output."""
    base = tiny_model()
    state = base.state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    lora = read_lora(tiny_lora, shapes)
    assert lora.unused == {}
    merged_params = merge_loras(state, [(lora, 0.8)], dtype_of=lambda _: torch.float32)
    merged = with_state({**state, **merged_params})
    runtime = tiny_model()
    handles = attach_loras(runtime, [(lora, 0.8)])
    assert handles, "the linears get run-time hooks"
    i = tiny_inputs()
    out_merged, out_runtime, out_base = run(merged, i), run(runtime, i), run(base, i)
    assert rel(out_merged, out_runtime) <= 1e-6
    assert rel(out_merged, out_base) > 1e-3


def test_two_loras_add(tiny_lora: Path) -> None:
    """Two LoRAs on the same weights add their updates (strengths 0.5 + 0.5 == one at 1.0)."""
    state = tiny_model().state_dict()
    lora = read_lora(tiny_lora, {k: tuple(v.shape) for k, v in state.items()})
    halves = merge_loras(state, [(lora, 0.5), (lora, 0.5)], dtype_of=lambda _: torch.float32)
    whole = merge_loras(state, [(lora, 1.0)], dtype_of=lambda _: torch.float32)
    assert halves.keys() == whole.keys()
    for k in whole:
        torch.testing.assert_close(halves[k], whole[k], rtol=1e-6, atol=1e-7)


def test_strength_zero_is_no_lora(tiny_lora: Path) -> None:
    base = tiny_model()
    state = base.state_dict()
    lora = read_lora(tiny_lora, {k: tuple(v.shape) for k, v in state.items()})
    assert merge_loras(state, [(lora, 0.0)], dtype_of=lambda _: torch.float32) == {}
    runtime = tiny_model()
    attach_loras(runtime, [(lora, 0.0)])
    i = tiny_inputs()
    assert torch.equal(run(runtime, i), run(base, i))


def test_merge_casts_after_float32(tiny_lora: Path) -> None:
    """The merge runs in float32 and casts once: bf16 result == bf16(f32 weight + f32 delta)."""
    state = tiny_model().state_dict()
    lora = read_lora(tiny_lora, {k: tuple(v.shape) for k, v in state.items()})
    merged = merge_loras({k: v.bfloat16() for k, v in state.items()}, [(lora, 1.0)], dtype_of=lambda _: torch.bfloat16)
    key = "blocks.0.self_attn.q.weight"
    delta = next(d for d in lora.deltas if d.target == key)
    expected = (state[key].bfloat16().float() + delta.materialize(state[key].shape)).bfloat16()
    assert merged[key].dtype == torch.bfloat16 and torch.equal(merged[key], expected)



# SCAIL-2's own LoRAs (zai-org `bias-aware-dpo-lora.pt`, `relighting-lora.pt`): SAT names in a DeepSpeed
# `module` dict, per block; written from the SAT module names (the wan branch's convert_lora.py map)
SAT_MODULES = {"self_attn.q": "attention.query_key_value.lora_layer.0", "self_attn.k": "attention.query_key_value.lora_layer.1",
               "self_attn.v": "attention.query_key_value.lora_layer.2", "self_attn.o": "attention.dense.lora_layer",
               "cross_attn.q": "cross_attention.query.lora_layer", "cross_attn.k": "cross_attention.key_value.lora_layer.0",
               "cross_attn.v": "cross_attention.key_value.lora_layer.1", "cross_attn.o": "cross_attention.dense.lora_layer",
               "ffn.0": "mlp.dense_h_to_4h.lora_layer", "ffn.2": "mlp.dense_4h_to_h.lora_layer"}  # fmt: skip


def sat_file(shapes: dict[str, tuple[int, ...]], rank: int = 4, device: str = "meta",
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    out: dict[str, torch.Tensor] = {}
    layers = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("blocks."))
    for i in range(layers):
        for wan, sat in SAT_MODULES.items():
            o, n = shapes[f"blocks.{i}.{wan}.weight"]
            name = f"model.diffusion_model.transformer.layers.{i}.{sat}"
            out[f"{name}.down.weight"] = torch.randn(rank, n, device=device, generator=generator) * 0.05
            out[f"{name}.up.weight"] = torch.randn(o, rank, device=device, generator=generator) * 0.05
    return out


def test_scail2_sat_lora_maps_every_key(shapes_14b: dict[str, tuple[int, ...]]) -> None:
    """The SAT layout of SCAIL-2's released LoRAs, with the real 14B names: every key applies, each to
    the wan weight the SAT module is (scale 1: the file has no alpha)."""
    tensors = sat_file(shapes_14b, rank=128)
    lora = map_lora(tensors, shapes_14b, Path("bias-aware-dpo-lora.pt"))
    assert lora.unused == {} and lora.layouts == ("sat",) and lora.num_keys == len(tensors) == 40 * 10 * 2
    targets = {d.target: d for d in lora.deltas}
    assert len(targets) == 400 and all(d.low_rank and d.scale == 1.0 for d in lora.deltas)
    key = "model.diffusion_model.transformer.layers.7.attention.query_key_value.lora_layer.1.down.weight"
    assert targets["blocks.7.self_attn.k.weight"].keys[0] in (key, key.replace("down", "up"))
    unknown = {"model.diffusion_model.transformer.layers.0.attention.query_key_value.lora_layer.3.down.weight":
               torch.empty(4, 5120, device="meta")}  # fmt: skip
    assert map_lora({**tensors, **unknown}, shapes_14b, Path("x.pt")).unused.keys() == unknown.keys()


def test_scail2_sat_lora_pt_file_equals_its_comfyui_conversion(tmp_path: Path) -> None:
    """A SAT `.pt` LoRA (DeepSpeed `module` dict, as released) merges to the same weights as the same
    factors under the ComfyUI names (what COMFY's repackaged safetensors hold)."""
    state = tiny_model().state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    tensors = sat_file(shapes, device="cpu", generator=torch.Generator().manual_seed(2))
    pt = tmp_path / "relighting-lora.pt"
    torch.save({"module": tensors}, pt)
    by_sat = {v: k for k, v in SAT_MODULES.items()}
    comfy = {}
    for key, t in tensors.items():
        head, _, tail = key.partition(".lora_layer")
        block, sat = head.removeprefix("model.diffusion_model.transformer.layers.").split(".", 1)
        part = tail.removesuffix(".down.weight").removesuffix(".up.weight")
        wan = by_sat[f"{sat}.lora_layer{part}"]
        comfy[f"diffusion_model.blocks.{block}.{wan}.lora_{'down' if key.endswith('down.weight') else 'up'}.weight"] = t
    st = tmp_path / "relighting.safetensors"
    save_file(comfy, str(st))
    merged = [merge_loras(state, [(read_lora(p, shapes), 1.0)], dtype_of=lambda _: torch.float32) for p in (pt, st)]
    assert merged[0].keys() == merged[1].keys() and len(merged[0]) == 2 * 10
    assert all(torch.equal(merged[0][k], merged[1][k]) for k in merged[0])

# --------------------------------------------------------------------------------------------------
# Errors and reports
# --------------------------------------------------------------------------------------------------


def test_lora_for_another_model_is_an_error_naming_the_file(tmp_path: Path) -> None:
    shapes = {k: tuple(v.shape) for k, v in tiny_model().state_dict().items()}
    other = tmp_path / "sdxl_style.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(320, 4)}, str(other))
    with pytest.raises(CheckpointError, match=r"sdxl_style\.safetensors: none of its 2 keys applies"):
        read_lora(other, shapes)
    wrong_size = tmp_path / "wan_1_3b.safetensors"  # right names, other width
    save_file({"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.zeros(4, 1536),
               "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.zeros(1536, 4)}, str(wrong_size))
    with pytest.raises(CheckpointError, match=r"wan_1_3b\.safetensors: .*do not fit blocks\.0\.self_attn\.q\.weight"):
        read_lora(wrong_size, shapes)
    with pytest.raises(InputError, match=r"missing\.safetensors: LoRA file not found"):
        read_lora(tmp_path / "missing.safetensors", shapes)


def test_keys_not_applied_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    shapes = {k: tuple(v.shape) for k, v in tiny_model().state_dict().items()}
    tensors = {
        "diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.zeros(4, 64),
        "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.zeros(64, 4),
        "diffusion_model.blocks.0.self_attn.k.lora_down.weight": torch.zeros(4, 64),  # no up
        "diffusion_model.blocks.0.self_attn.v.lora_down.weight": torch.zeros(4, 64),  # DoRA: the pair is
        "diffusion_model.blocks.0.self_attn.v.lora_up.weight": torch.zeros(64, 4),  # not applied without
        "diffusion_model.blocks.0.self_attn.v.dora_scale": torch.zeros(1, 64),  # its magnitude
        "diffusion_model.vace_blocks.0.proj.lora_down.weight": torch.zeros(4, 64),
        "diffusion_model.vace_blocks.0.proj.lora_up.weight": torch.zeros(64, 4),
    }
    with caplog.at_level("WARNING"):
        lora = map_lora(tensors, shapes, Path("mixed.safetensors"))
    assert [d.target for d in lora.deltas] == ["blocks.0.self_attn.q.weight"] and len(lora.unused) == 6
    assert "lora_up missing" in lora.unused["diffusion_model.blocks.0.self_attn.k.lora_down.weight"]
    assert "unsupported" in lora.unused["diffusion_model.blocks.0.self_attn.v.dora_scale"]
    assert "unsupported" in lora.unused["diffusion_model.blocks.0.self_attn.v.lora_up.weight"]
    assert "no DiT parameter for 'vace_blocks.0.proj'" in lora.unused["diffusion_model.vace_blocks.0.proj.lora_up.weight"]
    assert "mixed.safetensors: 6 of 8 keys not applied" in caplog.text


@pytest.mark.parametrize(
    ("text", "path", "strength"),
    [("a.safetensors", "a.safetensors", 1.0), ("a.safetensors:0.8", "a.safetensors", 0.8),
     ("dir/x:y.safetensors", "dir/x:y.safetensors", 1.0), ("C:/loras/a.safetensors:-0.5", "C:/loras/a.safetensors", -0.5)],
)
def test_lora_spec_parse(text: str, path: str, strength: float) -> None:
    spec = LoraSpec.parse(text)
    assert spec.path == Path(path) and spec.strength == strength


def test_lora_spec_parse_rejects_empty_and_nan() -> None:
    with pytest.raises(InputError, match="give a LoRA file"):
        LoraSpec.parse(":0.5")
    with pytest.raises(InputError, match="finite"):
        LoraSpec.parse("a.safetensors:nan")


def test_write_random_lora_loads_through_the_reader(tmp_path: Path) -> None:
    from scail.animate.lora import write_random_lora

    path = write_random_lora(tmp_path / "r.safetensors", DiTConfig.tiny(), rank=8, seed=1)
    shapes = {k: tuple(v.shape) for k, v in tiny_model().state_dict().items()}
    lora = read_lora(path, shapes)
    assert lora.unused == {} and lora.rank == 8 and len(lora.deltas) == len(shapes)

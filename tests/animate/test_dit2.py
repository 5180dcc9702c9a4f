"""SCAIL-2 DiT: parity with the official SCAIL2Model (fixtures/scail2), RoPE tables, the 14B layout."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scail2_cases import case_inputs
from tensor_checks import assert_close, errors

from scail.animate.dit import DiT, DiTConfig, scail_rope_tables
from scail.animate.dit2 import SCAIL2Config, SCAIL2DiT, scail2_rope_tables

CASES = [
    "a_anim_pose_T3_land",
    "b_e2e_T3_land",
    "c_replace_T3_land",
    "d_anim_multiref2_T3_land",
    "f_anim_history_T6_land",
    "g_anim_pose_T6_portrait",
    "g2_replace_T3_portrait",
]


@pytest.fixture(scope="module")
def dit2(fixture_path: Callable[..., Path]) -> SCAIL2DiT:
    root = fixture_path("scail2", "dit")
    config = SCAIL2Config.from_json(json.loads((root / "config.json").read_text()))
    model = SCAIL2DiT(config)
    state = {k: v.float() for k, v in load_file(str(root / "weights_wan.safetensors")).items()}
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.mark.parametrize("case", CASES)
def test_official_parity_cond_uncond(dit2: SCAIL2DiT, fixture_path: Callable[..., Path], case: str) -> None:
    root = fixture_path("scail2", "dit")
    kwargs, extra = case_inputs(root, case)
    out = load_file(str(root / case / "outputs.safetensors"))
    ref = {k: v.permute(1, 0, 2, 3)[None] for k, v in out.items()}  # [C,T,h,w] -> (1, T, C, h, w)
    with torch.no_grad():
        cond = dit2(**kwargs)
        uncond = dit2(**{**kwargs, "context": extra["context_null"]})
    assert_close(cond, ref["out_cond"])
    assert_close(uncond, ref["out_uncond"])
    assert errors(cond, uncond)[1] > 1e-3  # the text matters


@pytest.mark.parametrize("case", CASES)
def test_official_intermediates(dit2: SCAIL2DiT, fixture_path: Callable[..., Path], case: str) -> None:
    """Token sequence entering block 0 (masks, history, extra refs, order), RoPE factors, time
    modulation, and where shipped every block's output and the head's."""
    root = fixture_path("scail2", "dit")
    kwargs, _ = case_inputs(root, case)
    ref = load_file(str(root / case / "intermediates.safetensors"))
    with torch.no_grad():
        tokens, cond = dit2.embed(**kwargs)
        assert_close(tokens[0], ref["tokens_in"])
        factors = torch.stack([cond.rope_cos, cond.rope_sin], dim=-1).flatten(1)  # (L, Dh) re, im
        assert_close(factors, ref["rope_factors"].reshape(factors.shape))
        assert_close(cond.e0[0], ref["time_e0"])
        if "block0_out" in ref:
            x = tokens
            for i, block in enumerate(dit2.blocks):
                x = block(x, cond.e0, cond.text, cond.image, cond.rope_cos, cond.rope_sin)
                assert_close(x[0], ref[f"block{i}_out"])
            head = dit2.head(x, cond.e)
            assert_close(head[0], ref["head_out"])


def test_rows_in_turn_and_batch_pair_match(dit2: SCAIL2DiT, fixture_path: Callable[..., Path]) -> None:
    """The CFG pair as one batch of 2 (masks and refs shared with batch 1) equals two single calls,
    also with the rows run in turn through the blocks."""
    root = fixture_path("scail2", "dit")
    kwargs, extra = case_inputs(root, "d_anim_multiref2_T3_land")
    pair = {
        **kwargs,
        "x": kwargs["x"].expand(2, -1, -1, -1, -1),
        "context": torch.cat([extra["context_null"], kwargs["context"]]),
    }
    with torch.no_grad():
        single = torch.cat([dit2(**{**kwargs, "context": extra["context_null"]}), dit2(**kwargs)])
        together = dit2(**pair)
        dit2.set_rows_in_turn(True)
        try:
            in_turn = dit2(**pair)
        finally:
            dit2.set_rows_in_turn(False)
    assert_close(together, single, rel_l2=1e-6, max_abs=1e-5)
    assert_close(in_turn, single, rel_l2=1e-6, max_abs=1e-5)



def test_block_offload_and_compiled_blocks_match(fixture_path: Callable[..., Path]) -> None:
    """Offload and compile take the SCAIL-2 DiT as they take Preview's: its blocks streamed through
    the slots and compiled (aot_eager: no C compiler needed) give the official outputs of a
    multi-reference case."""
    from scail.animate.offload import offload_dit_blocks

    root = fixture_path("scail2", "dit")
    config = SCAIL2Config.from_json(json.loads((root / "config.json").read_text()))
    model = SCAIL2DiT(config)
    model.load_state_dict({k: v.float() for k, v in load_file(str(root / "weights_wan.safetensors")).items()})
    model.eval().compile_blocks(backend="aot_eager")
    streamer = offload_dit_blocks(model, "cpu")
    kwargs, _ = case_inputs(root, "d_anim_multiref2_T3_land")
    ref = load_file(str(root / "d_anim_multiref2_T3_land" / "outputs.safetensors"))["out_cond"]
    with torch.no_grad():
        assert_close(model(**kwargs), ref.permute(1, 0, 2, 3)[None])
    assert streamer.copies >= len(model.blocks)

def test_bad_inputs_name_the_tensor(dit2: SCAIL2DiT, fixture_path: Callable[..., Path]) -> None:
    kwargs, _ = case_inputs(fixture_path("scail2", "dit"), "d_anim_multiref2_T3_land")
    with pytest.raises(ValueError, match="ref_mask and driving_mask"):
        dit2(**{**kwargs, "ref_mask": None})
    with pytest.raises(ValueError, match="driving_mask must be"):
        dit2(**{**kwargs, "driving_mask": kwargs["driving_mask"][:, :, :7]})
    with pytest.raises(ValueError, match="give both or neither"):
        dit2(**{**kwargs, "extra_ref_masks": None})
    with pytest.raises(ValueError, match="extra_ref_masks must be"):
        dit2(**{**kwargs, "extra_ref_masks": kwargs["extra_ref_masks"][:, :1]})
    with pytest.raises(ValueError, match="history_frames"):
        dit2(**{**kwargs, "history_frames": 4})


# --------------------------------------------------------------------------------------------------
# RoPE tables at head dim 128 (captured inside the official rope_apply_*)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["anim_N0", "anim_N2", "replace_N0", "replace_N2"])
def test_rope_tables_head_dim_128(fixture_path: Callable[..., Path], table: str) -> None:
    npz = np.load(fixture_path("scail2", "rope", "rope_tables.npz"))
    meta = json.loads(fixture_path("scail2", "rope", "rope.json").read_text())["tables"][table]
    ref = torch.from_numpy(npz[f"{table}.factors"])  # (L, 64, 2) float64
    config = DiTConfig(dim=128, num_heads=1, num_layers=1, ffn_dim=256)
    cpu = torch.device("cpu")
    cos, sin = scail2_rope_tables(
        config, 3, 4, 6, cpu, extra_refs=meta["n_additional_refs"], replace=meta["replace_flag"]
    )
    mine = torch.stack([cos, sin], dim=-1)
    assert mine.shape == ref.shape
    assert (mine - ref).abs().max().item() < 1e-12
    pose = torch.from_numpy(npz[f"{table}.segment"] == 3)
    magnitude = cos.hypot(sin)
    assert magnitude[~pose].sub(1).abs().max().item() < 1e-12  # pure rotations
    assert magnitude[pose].min().item() == pytest.approx(np.cos(0.5))  # official averaged factors
    # float32 tables (SAT-branch numerics): angles up to ~125 rad in float32 are off by ~1e-5 rad,
    # so the bound is that of float32 angles (observed 2.5e-6), not the 1e-6 of a float32 cast
    cos32, sin32 = scail2_rope_tables(
        DiTConfig(dim=128, num_heads=1, num_layers=1, ffn_dim=256, rope_dtype="float32"), 3, 4, 6, cpu,
        extra_refs=meta["n_additional_refs"], replace=meta["replace_flag"],
    )  # fmt: skip
    assert (torch.stack([cos32, sin32], dim=-1).double() - ref).abs().max().item() < 1e-5


def test_rope_animation_without_extra_refs_is_preview() -> None:
    config = DiTConfig(dim=256, num_heads=2, num_layers=1, ffn_dim=256)
    cpu = torch.device("cpu")
    for frames, gh, gw in [(3, 4, 6), (21, 32, 56)]:
        preview = scail_rope_tables(config, frames, gh, gw, cpu)
        scail2 = scail2_rope_tables(config, frames, gh, gw, cpu)
        assert all(torch.equal(a, b) for a, b in zip(preview, scail2, strict=True))


# --------------------------------------------------------------------------------------------------
# The real 14B layout
# --------------------------------------------------------------------------------------------------


def test_14b_builds_on_meta_with_official_keys(fixture_path: Callable[..., Path]) -> None:
    keys = json.loads(fixture_path("scail2", "keys_scail2_14B.json").read_text())
    config = SCAIL2Config.from_json(keys["dit_config"])
    assert config == SCAIL2Config.scail_14b()
    with torch.device("meta"):
        dit = SCAIL2DiT(config)
    state = dit.state_dict()
    assert {k: v["shape"] for k, v in keys["dit_wan"].items()} == {k: list(v.shape) for k, v in state.items()}
    assert len(state) == keys["dit_wan_num_keys"] == 1307
    assert sum(v.numel() for v in state.values()) == keys["dit_wan_num_params"] == 16_395_544_384
    with torch.device("meta"):
        preview = DiT(DiTConfig.scail_14b())
    assert set(state) - set(preview.state_dict()) == {"patch_embedding_mask.weight", "patch_embedding_mask.bias"}

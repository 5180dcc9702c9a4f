"""Wan VAE: parity with the official code (fixtures), streaming/causality, tiling, loader errors."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tensor_checks import errors

from scail.animate.vae import (
    TileConfig,
    VAEConfig,
    VideoVAE,
    WanVAE,
    _tiled,
    build_vae,
    load_vae,
)
from scail.errors import CheckpointError

# Fixture README: float32 reimplementation should reach rel_l2 < 1e-5 and max_abs < 1e-4.
REL_L2, MAX_ABS = 1e-5, 1e-4


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """The tiny convolutions are ~50x slower with 2 OpenMP threads on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------
# Parity with the official wan-branch VAE (../shared/fixtures/scail/vae)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vae_fixture(fixture_path: Callable[..., Path]) -> tuple[WanVAE, dict, dict]:
    folder = fixture_path("scail", "vae")
    vae = load_vae(folder / "weights.safetensors")
    return vae, load_file(folder / "inputs.safetensors"), load_file(folder / "outputs.safetensors")


def _case(vae: WanVAE, inputs: dict, name: str) -> torch.Tensor:
    if name == "latent_mean":  # the video, encoded
        return vae.encode(inputs["video"][None])[0]
    if name == "image_latent":  # the reference image, one frame
        return vae.encode(inputs["image"][None])[0]
    if name == "pose_latent":  # the pose video halved bilinearly (official generate), then encoded
        half = F.interpolate(inputs["pose_video_fullres_tchw"], scale_factor=0.5, mode="bilinear")
        return vae.encode(half.permute(1, 0, 2, 3)[None])[0]
    raise KeyError(name)


@pytest.mark.parametrize("name", ["latent_mean", "image_latent", "pose_latent"])
def test_encode_matches_official(vae_fixture: tuple[WanVAE, dict, dict], name: str) -> None:
    vae, inputs, outputs = vae_fixture
    mine = _case(vae, inputs, name)
    assert mine.shape == outputs[name].shape and mine.dtype == torch.float32
    max_abs, rel_l2 = errors(mine, outputs[name])
    print(f"{name}: max_abs {max_abs:.3g} rel_l2 {rel_l2:.3g}")  # shown with pytest -s
    assert max_abs < MAX_ABS and rel_l2 < REL_L2, (max_abs, rel_l2)


def test_pose_halving_matches_official(vae_fixture: tuple[WanVAE, dict, dict]) -> None:
    _, inputs, outputs = vae_fixture
    half = F.interpolate(inputs["pose_video_fullres_tchw"], scale_factor=0.5, mode="bilinear")
    assert torch.equal(half, outputs["pose_video_halfres_tchw"])


def test_decode_matches_official(vae_fixture: tuple[WanVAE, dict, dict]) -> None:
    vae, _, outputs = vae_fixture
    latent = outputs["latent_mean"][None]
    decoded = vae.decode(latent)[0]
    assert decoded.shape == outputs["decoded"].shape
    max_abs, rel_l2 = errors(decoded, outputs["decoded"])
    print(f"decoded: max_abs {max_abs:.3g} rel_l2 {rel_l2:.3g}")
    assert max_abs < MAX_ABS and rel_l2 < REL_L2, (max_abs, rel_l2)
    # before the clamp too, where errors cannot hide behind +-1
    raw = vae.model.decode(vae.denormalize(latent))[0]
    max_abs, rel_l2 = errors(raw, outputs["decoded_unclamped"])
    print(f"decoded_unclamped: max_abs {max_abs:.3g} rel_l2 {rel_l2:.3g}")
    assert max_abs < MAX_ABS and rel_l2 < REL_L2, (max_abs, rel_l2)


def test_latent_stats_match_fixture(fixture_path: Callable[..., Path]) -> None:
    config = json.loads((fixture_path("scail", "vae") / "config.json").read_text())
    cfg = VAEConfig.wan21()
    mean32 = torch.tensor(cfg.latent_mean, dtype=torch.float32)
    std32 = torch.tensor(cfg.latent_std, dtype=torch.float32)
    assert torch.equal(mean32, torch.tensor(config["latent_mean_per_channel"], dtype=torch.float32))
    assert torch.equal(std32, torch.tensor(config["latent_std_per_channel"], dtype=torch.float32))
    assert VAEConfig.tiny().dim == config["WanVAE_kwargs"]["dim"]
    assert cfg.dim == config["real_kwargs"]["dim"]


def test_real_config_keys_equal_released(fixture_path: Callable[..., Path]) -> None:
    keys = json.loads(fixture_path("scail", "keys_14B.json").read_text())
    with torch.device("meta"):
        model = VideoVAE(VAEConfig.wan21())
    mine = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert mine == keys["vae_wan"]
    assert sum(v.numel() for v in model.state_dict().values()) == keys["vae_num_params"]


# ----------------------------------------------------------------------------------------------
# Streaming: the chunked encode/decode with the cache is causal and batch-independent
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_vae() -> WanVAE:
    torch.manual_seed(0)
    return build_vae(VAEConfig.tiny())


def test_shapes_and_dropped_frames(tiny_vae: WanVAE) -> None:
    video = torch.rand(1, 3, 11, 16, 24) * 2 - 1  # 11 frames: 1 + 4 + 4, two dropped
    latent = tiny_vae.encode(video)
    assert latent.shape == (1, 16, 3, 2, 3)
    assert torch.equal(latent, tiny_vae.encode(video[:, :, :9]))
    assert tiny_vae.decode(latent).shape == (1, 3, 9, 16, 24)


def test_encode_is_causal(tiny_vae: WanVAE) -> None:
    """Latent frame f depends only on video frames <= 4f: a shorter video gives a prefix."""
    video = torch.rand(1, 3, 13, 16, 16) * 2 - 1
    full = tiny_vae.encode(video)  # (1, 16, 4, 2, 2)
    prefix = tiny_vae.encode(video[:, :, :5])  # (1, 16, 2, 2, 2)
    assert torch.equal(prefix, full[:, :, :2])
    changed = video.clone()
    changed[:, :, 9:] = 0  # frames of the last chunk only
    assert torch.equal(tiny_vae.encode(changed)[:, :, :3], full[:, :, :3])
    assert not torch.allclose(tiny_vae.encode(changed)[:, :, 3], full[:, :, 3])


def test_decode_is_causal(tiny_vae: WanVAE) -> None:
    latent = torch.randn(1, 16, 4, 2, 2)
    full = tiny_vae.decode(latent)  # (1, 3, 13, 16, 16)
    prefix = tiny_vae.decode(latent[:, :, :2])  # (1, 3, 5, 16, 16)
    # exact: the latent projection runs per frame (a 1x1x1 conv over 4 vs 2 frames summed in another
    # order and differed by 1 ulp, which the random tiny decoder amplified to 4e-6)
    assert torch.equal(prefix, full[:, :, :5])
    # the second latent frame changes frames 1..4 and later ones, never frame 0
    changed = latent.clone()
    changed[:, :, 1] += 1
    other = tiny_vae.decode(changed)
    assert torch.equal(other[:, :, :1], full[:, :, :1])
    assert not torch.allclose(other[:, :, 1:5], full[:, :, 1:5])


def test_streams_equal_whole_encode_and_decode(tiny_vae: WanVAE) -> None:
    """encode_stream / decode_stream (what long videos use: one chunk in memory) are bit for bit
    the whole-video encode and decode, tiled or not."""
    video = torch.rand(1, 3, 9, 16, 24) * 2 - 1
    chunks = [video[:, :, :1], video[:, :, 1:5], video[:, :, 5:9]]
    assert torch.equal(torch.cat(list(tiny_vae.encode_stream(iter(chunks))), dim=2), tiny_vae.encode(video))
    latent = torch.randn(1, 16, 3, 4, 6)
    for tile in (None, TileConfig(size=3, overlap=1)):
        pieces = list(tiny_vae.decode_stream(latent, tile=tile))
        assert [p.shape[2] for p in pieces] == [1, 4, 4]
        assert torch.equal(torch.cat(pieces, dim=2), tiny_vae.decode(latent, tile=tile))
    with pytest.raises(ValueError, match="chunk 1 has 3 frames, expected 4"):
        list(tiny_vae.encode_stream(iter([video[:, :, :1], video[:, :, 1:4]])))


def test_batch_equals_one_by_one(tiny_vae: WanVAE) -> None:
    video = torch.rand(2, 3, 5, 16, 16) * 2 - 1
    both = tiny_vae.encode(video)
    for i in range(2):
        torch.testing.assert_close(both[i : i + 1], tiny_vae.encode(video[i : i + 1]), rtol=1e-5, atol=1e-6)


def test_progress_and_bad_shapes(tiny_vae: WanVAE) -> None:
    calls: list[tuple[int, int]] = []
    tiny_vae.decode(torch.randn(1, 16, 3, 2, 2), on_progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    calls.clear()
    tiny_vae.encode(
        torch.zeros(1, 3, 5, 32, 48), tile=TileConfig(4, 1), on_progress=lambda d, t: calls.append((d, t))
    )
    assert calls[-1] == (2 * 2, 2 * 2)  # 2 latent frames x 2 tiles (h 4 fits, w 6 -> 2 tiles)
    with pytest.raises(ValueError, match="divisible by 8"):
        tiny_vae.encode(torch.zeros(1, 3, 1, 30, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        tiny_vae.encode(torch.zeros(3, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 16, F, h, w\)"):
        tiny_vae.decode(torch.zeros(1, 4, 1, 4, 4))


def test_bfloat16_runs_close_to_float32(tiny_vae: WanVAE) -> None:
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    ref = tiny_vae.encode(video)
    half = WanVAE(VideoVAE(tiny_vae.cfg)).to(dtype=torch.bfloat16)
    half.model.load_state_dict(tiny_vae.model.state_dict())
    latent = half.encode(video)
    assert latent.dtype == torch.float32
    _, rel_l2 = errors(latent, ref)
    assert rel_l2 < 0.05  # bf16 has 8 mantissa bits; 20 layers deep
    assert half.decode(latent).dtype == torch.float32


# ----------------------------------------------------------------------------------------------
# Tiling
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "overlap"), [(8, 0), (8, 4), (12, 5), (16, 8)])
def test_tile_blending_is_a_partition_of_unity(size: int, overlap: int) -> None:
    """For a pointwise op the blended tiles equal the untiled result (weights sum to one)."""
    x = torch.randn(1, 4, 3, 24, 40)

    def fn(t: torch.Tensor) -> torch.Tensor:
        return 2 * t.repeat_interleave(8, -1).repeat_interleave(8, -2)

    tiled = _tiled(fn, x, (24, 40), 1, 8, TileConfig(size, overlap))
    torch.testing.assert_close(tiled, fn(x), rtol=1e-6, atol=1e-6)


def test_one_tile_is_the_untiled_decode(tiny_vae: WanVAE) -> None:
    latent = torch.randn(1, 16, 2, 4, 6)
    assert torch.equal(tiny_vae.decode(latent, tile=TileConfig(8, 2)), tiny_vae.decode(latent))


def test_tiled_decode_is_close_to_untiled(tiny_vae: WanVAE) -> None:
    """Tiles differ from the untiled decode only within the decoder's receptive field of a seam.

    Tolerance: away from the seams the result is the untiled one (1e-5); near a seam the tile
    sees zero padding instead of its neighbour, so it is approximate. With random weights the
    decoder amplifies that (rel_l2 ~0.1-0.4 here, worse for less overlap); trained weights are far
    smoother. So we check exactness away from seams and that more overlap means less error.
    """
    latent = torch.randn(1, 16, 2, 4, 48)
    full = tiny_vae.decode(latent)
    # width 48 with tiles of 32, overlap 8: spans [0, 32) and [16, 48); the height fits one tile
    tiled = tiny_vae.decode(latent, tile=TileConfig(32, 8))
    # latent columns < 12 are >= 20 from tile 0's right edge (receptive field ~14) and outside
    # tile 1; likewise the last 12 columns for tile 1
    torch.testing.assert_close(tiled[..., : 12 * 8], full[..., : 12 * 8], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tiled[..., -12 * 8 :], full[..., -12 * 8 :], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(tiled, full, atol=1e-3)  # the seam is approximate
    seam_errors = []
    for overlap in (0, 4, 8):
        _, rel_l2 = errors(tiny_vae.decode(latent[:, :, :1], tile=TileConfig(16, overlap)), full[:, :, :1])
        seam_errors.append(rel_l2)
    assert seam_errors[0] > seam_errors[1] > seam_errors[2]
    assert seam_errors[2] < 0.3, seam_errors


def test_tiled_encode_is_close_to_untiled(tiny_vae: WanVAE) -> None:
    video = torch.rand(1, 3, 5, 32, 384) * 2 - 1  # latent 4 x 48
    full = tiny_vae.encode(video)
    tiled = tiny_vae.encode(video, tile=TileConfig(32, 8))
    assert tiled.shape == full.shape
    torch.testing.assert_close(tiled[..., :12], full[..., :12], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tiled[..., -12:], full[..., -12:], rtol=1e-5, atol=1e-5)
    _, rel_l2 = errors(tiled, full)
    assert rel_l2 < 0.3


def test_tile_config_validation() -> None:
    with pytest.raises(ValueError, match="overlap"):
        TileConfig(8, 5)


# ----------------------------------------------------------------------------------------------
# Loader
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return VideoVAE(VAEConfig.tiny()).state_dict()


def test_pth_and_safetensors_load_the_same(tmp_path: Path, tiny_state: dict[str, torch.Tensor]) -> None:
    torch.save(tiny_state, tmp_path / "Wan2.1_VAE.pth")
    save_file(tiny_state, str(tmp_path / "vae.safetensors"))
    a = load_vae(tmp_path / "Wan2.1_VAE.pth")
    b = load_vae(tmp_path / "vae.safetensors", dtype=torch.bfloat16)
    assert a.cfg == VAEConfig.tiny()
    assert b.dtype == torch.bfloat16 and a.dtype == torch.float32
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, tiny_state[k])
    assert not any(p.is_meta for p in a.model.parameters())


def _error(path: Path) -> str:
    with pytest.raises(CheckpointError) as exc:
        load_vae(path)
    message = str(exc.value)
    assert "\n" not in message and str(path) in message
    return message


def test_missing_and_unexpected_and_misshaped_keys(
    tmp_path: Path, tiny_state: dict[str, torch.Tensor]
) -> None:
    state = dict(tiny_state)
    del state["decoder.head.2.bias"]
    state["decoder.extra.weight"] = torch.zeros(1)
    state["encoder.middle.1.proj.weight"] = torch.zeros(3, 3, 1, 1)
    save_file(state, str(tmp_path / "bad.safetensors"))
    message = _error(tmp_path / "bad.safetensors")
    assert "1 missing keys (e.g. 'decoder.head.2.bias')" in message
    assert "1 unexpected keys (e.g. 'decoder.extra.weight')" in message
    assert (
        "1 shape mismatches (e.g. 'encoder.middle.1.proj.weight': file [3, 3, 1, 1], model [16, 16, 1, 1])" in message
    )


def test_unreadable_files(tmp_path: Path, tiny_state: dict[str, torch.Tensor]) -> None:
    assert "not found" in _error(tmp_path / "absent.pth")
    torch.save(tiny_state, tmp_path / "full.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "full.pth").read_bytes()[:5000])
    assert "truncated" in _error(tmp_path / "cut.pth")
    (tmp_path / "junk.safetensors").write_text("not weights")
    assert "cannot read" in _error(tmp_path / "junk.safetensors")
    torch.save({"model": tiny_state, "step": 3}, tmp_path / "nested.pth")
    assert "not a state dict" in _error(tmp_path / "nested.pth")


def test_other_models_are_named(tmp_path: Path) -> None:
    save_file({"encoder.down_blocks.0.weight": torch.zeros(1)}, str(tmp_path / "diffusers.safetensors"))
    assert "diffusers" in _error(tmp_path / "diffusers.safetensors")
    save_file({"blocks.0.modulation": torch.zeros(1)}, str(tmp_path / "dit.safetensors"))
    assert "not a Wan2.1 VAE" in _error(tmp_path / "dit.safetensors")


def test_bfloat16_decoding_copy_is_close_to_the_official_and_leaves_the_encoder(
    vae_fixture: tuple[WanVAE, dict, dict],
) -> None:
    """Fast mode's decode (`vae_decode_dtype`): a bfloat16 copy of the decoding half only."""
    from scail.animate.build import resolve_vae_decode_dtype

    vae, _, outputs = vae_fixture
    latent = outputs["latent_mean"][None]
    encoder_before = {k: v.clone() for k, v in vae.model.state_dict().items()}
    try:
        vae.set_decode_dtype(torch.bfloat16)
        assert vae.decode_dtype == torch.bfloat16 and vae.dtype == torch.float32
        assert not hasattr(vae.decoding, "encoder")  # the decoding half alone
        decoded = vae.decode(latent)[0]
        streamed = torch.cat(list(vae.decode_stream(latent)), dim=2)[0]
        assert decoded.dtype == torch.float32 and torch.equal(decoded, streamed)
        max_abs, rel_l2 = errors(decoded, outputs["decoded"])
        # bfloat16, not float32: 3.5 % here (random fixture weights), ~41 dB PSNR on a [-1, 1] video
        assert REL_L2 < rel_l2 < 0.06 and max_abs < 0.3, (max_abs, rel_l2)
    finally:
        vae.set_decode_dtype(torch.float32)
    assert vae.decoding is vae.model
    assert all(torch.equal(v, encoder_before[k]) for k, v in vae.model.state_dict().items())
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_vae_decode_dtype("auto", True, cuda) == torch.bfloat16
    assert resolve_vae_decode_dtype("auto", True, cpu) == resolve_vae_decode_dtype("auto", False, cuda) == torch.float32
    assert resolve_vae_decode_dtype("bfloat16", False, cpu) == torch.bfloat16

"""The weights folder: layout resolution, verify (memory-mapped key/shape checks), the real-weights factory, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_weights import tiny_architectures, write_encoders
from typer.testing import CliRunner

from scail.animate import weights
from scail.animate.weights import Architectures, verify
from scail.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[2]


def _tiny_arch() -> Architectures:
    from scail.animate.dit import DiTConfig

    return tiny_architectures(DiTConfig.tiny())


@pytest.fixture()
def tiny_weights(tmp_path: Path) -> Path:
    """A SCAIL-Preview folder in the official layout, holding tiny models (SAT DiT, .pth files)."""
    from scail.animate.dit import DiT
    from scail.animate.dit_loader import wan_to_sat

    arch = _tiny_arch()
    root = tmp_path / "SCAIL-Preview"
    (root / "model" / "1").mkdir(parents=True)
    (root / "model" / "latest").write_text("1\n")
    torch.manual_seed(0)
    dit = DiT(arch.dit).init_weights(torch.Generator().manual_seed(0))
    torch.save({"module": wan_to_sat(dit.state_dict())}, root / "model" / "1" / weights.SAT_FILE)
    clip = write_encoders(root, arch)
    clip["log_scale"] = torch.tensor(4.6)
    torch.save(clip, root / weights.CLIP_FILES[0])
    return root


def test_resolve_finds_the_official_layout(tiny_weights: Path) -> None:
    paths = weights.resolve(tiny_weights)
    assert paths.dit == tiny_weights / "model" / "1" / "mp_rank_00_model_states.pt"
    assert paths.tokenizer == tiny_weights / "umt5-xxl"
    assert paths.clip.name.endswith("-onlyvisual.pth")


def test_missing_weights_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as err:
        weights.resolve(tmp_path / "nowhere")
    assert str(err.value) == (
        f"{tmp_path / 'nowhere'}: SCAIL weights folder not found; run `scail weights download --dir {tmp_path / 'nowhere'}`"
    )
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "Wan2.1_VAE.pth").write_bytes(b"x")
    with pytest.raises(CheckpointError) as err:
        weights.resolve(tmp_path / "w")
    msg = str(err.value)
    assert "missing dit" in msg and "t5" in msg and "clip" in msg and "vae (" not in msg
    assert msg.endswith(f"run `scail weights download --dir {tmp_path / 'w'}`") and "\n" not in msg


def test_verify_accepts_matching_files(tiny_weights: Path) -> None:
    rows = verify(tiny_weights, _tiny_arch())
    assert [r.component for r in rows] == ["dit", "vae", "t5", "tokenizer", "clip"]
    assert all(r.ok for r in rows), [r.detail for r in rows if not r.ok]
    assert all(r.size_bytes > 0 for r in rows)


def test_verify_reports_wrong_truncated_and_missing_files(tiny_weights: Path) -> None:
    rows = {r.component: r for r in verify(tiny_weights)}  # checked against the released 14B sizes
    assert not rows["dit"].ok and "shape" in rows["dit"].detail
    assert not rows["t5"].ok and rows["tokenizer"].ok
    vae = tiny_weights / weights.VAE_FILE
    vae.write_bytes(vae.read_bytes()[:200])  # truncated download
    (tiny_weights / weights.CLIP_FILES[0]).unlink()
    rows = {r.component: r for r in verify(tiny_weights, _tiny_arch())}
    assert not rows["vae"].ok and "download it again" in rows["vae"].detail
    assert not rows["clip"].ok and rows["clip"].path is None and "missing" in rows["clip"].detail
    assert rows["dit"].ok and rows["t5"].ok


def test_real_weights_factory_builds_a_pipeline(tiny_weights: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The SCAIL-Preview factory on a folder in the official layout; block offload gives the same video.
    The weight files were prefetched whole (DiT via model/latest, VAE, umT5, CLIP) while it loaded."""
    import logging

    from scail.animate.build import build_scail_preview

    g = torch.Generator().manual_seed(0)
    ref, pose = torch.rand(3, 32, 32, generator=g) * 2 - 1, torch.rand(3, 5, 16, 16, generator=g) * 2 - 1
    outs = []
    for offload in ("none", "blocks"):
        with caplog.at_level(logging.DEBUG, logger="scail.animate.prefetch"):
            pipe = build_scail_preview(tiny_weights, "cpu", torch.float32, offload=offload, architectures=_tiny_arch())
        assert "GB of 4 weight files" in caplog.text
        assert (pipe.block_offload is not None) == (offload == "blocks")
        outs.append(pipe.generate(ref, pose, prompt="a person dancing", solver="euler", steps=2))
        pipe.close()
    assert outs[0].frames.shape == (5, 32, 32, 3)
    assert torch.equal(outs[0].latent, outs[1].latent)


def test_cli_verify_table_and_json(tiny_weights: Path, tmp_path: Path) -> None:
    from scail.animate.weights_cli import weights_app

    runner = CliRunner()
    result = runner.invoke(weights_app, ["verify", "--dir", str(tiny_weights), "--json"])
    assert result.exit_code == 1  # tiny files are not the 14B model
    payload = json.loads(result.stdout)
    assert payload["ok"] is False
    assert [f["component"] for f in payload["files"]] == ["dit", "vae", "t5", "tokenizer", "clip"]
    assert payload["files"][3]["ok"] is True  # tokenizer
    result = runner.invoke(weights_app, ["verify", "--dir", str(tmp_path / "empty")])
    assert result.exit_code == 1
    assert "missing" in result.stdout and "FAIL" in result.stdout
    assert f"scail weights download --dir {tmp_path / 'empty'}" in result.stderr


def test_download_offline_is_one_clean_line(tmp_path: Path) -> None:
    code = (
        "from pathlib import Path\n"
        "from scail.animate.weights import download\n"
        "from scail.errors import ScailError\n"
        "try:\n"
        f"    download(Path({str(tmp_path / 'w')!r}))\n"
        "except ScailError as exc:\n"
        "    print('ERR', exc)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERR cannot download zai-org/SCAIL-Preview"), out
    assert "offline" in lines[0] and "scail weights verify --dir" in lines[0]


def test_download_progress_forwards_bytes_written() -> None:
    got: list[tuple[int, int | None]] = []
    bar_class = weights._progress_class(lambda done, total: got.append((done, total)))
    files = bar_class(total=3, desc="Fetching 3 files")  # file counter: not bytes, not forwarded
    files.update(1)
    written = bar_class(total=100, initial=0, unit="B", unit_scale=True, desc="Reconstructing (incomplete total...)")
    written.update(40)
    written.update(60)
    network = bar_class(total=0, unit="B", desc="Downloading bytes")
    network.update(70)
    assert got == [(40, 100), (100, 100)]


def test_verify_names_the_dit_format(tiny_weights: Path, tmp_path: Path) -> None:
    """`scail weights verify` recognises each DiT format and says which one it found (--dit FILE)."""
    from safetensors.torch import save_file

    from scail.animate.dit import DiT
    from scail.animate.weights_cli import weights_app

    arch = _tiny_arch()
    rows = {r.component: r for r in verify(tiny_weights, arch)}
    assert rows["dit"].detail.startswith("format float32;")
    state = DiT(arch.dit).init_weights(torch.Generator().manual_seed(0)).state_dict()
    fp8: dict[str, torch.Tensor] = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for k, v in state.items():
        if k.startswith("blocks.") and k.endswith((".q.weight", ".ffn.0.weight")):
            scale = v.abs().max() / 448
            fp8[f"model.diffusion_model.{k}"] = (v / scale).to(torch.float8_e4m3fn)
            fp8[f"model.diffusion_model.{k.removesuffix('.weight')}.scale_weight"] = scale.reshape(1)
        else:
            fp8[f"model.diffusion_model.{k}"] = v.bfloat16()
    kj = tmp_path / "Wan21-SCAIL_fp8_e4m3fn_scaled_KJ.safetensors"
    save_file(fp8, str(kj))
    rows = {r.component: r for r in verify(tiny_weights, arch, dit_file=kj)}
    assert rows["dit"].ok and rows["dit"].path == kj
    assert rows["dit"].detail.startswith("format fp8_e4m3fn_scaled (6 quantized weights, float8_e4m3fn; other "
                                         "tensors bfloat16)")
    result = CliRunner().invoke(weights_app, ["verify", "--dir", str(tiny_weights), "--dit", str(kj), "--json"])
    dit_row = json.loads(result.stdout)["files"][0]  # checked against the released 14B sizes: too small
    assert dit_row["path"] == str(kj) and not dit_row["ok"] and "shape mismatches" in dit_row["detail"]

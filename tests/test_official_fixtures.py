"""The repository's copy of the official parity fixtures: small, complete for its cases, and faithful."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from official_fixtures import ARCHIVE, SHARED_FIXTURES, overlay, sha256, unpack

LIMIT_BYTES = 25 * 1024 * 1024


def test_archive_is_small_enough() -> None:
    assert ARCHIVE.is_file(), f"{ARCHIVE} is missing: a fresh clone could not run the parity tests"
    assert ARCHIVE.stat().st_size <= LIMIT_BYTES


def test_every_family_has_a_case(tmp_path: Path) -> None:
    """Each fixture family the parity tests read has at least one case in the repository's copy."""
    root = unpack(ARCHIVE, tmp_path / "u")
    for rel in ("scail/dit/weights_wan.safetensors", "scail/dit/sat/model/1/mp_rank_00_model_states.pt",
                "scail/pipeline/sampler_unipc.safetensors", "scail/vae/weights.safetensors",
                "scail/t5/weights.safetensors", "scail/clip/weights.safetensors",
                "scail/sampler/schedules.safetensors", "scail-dit/case_21frames/mp_rank_00_model_states.pt",
                "scail-render/case_two_people/inputs.json", "scail-align/case_portrait/outputs.json",
                "scail2/dit/weights_wan.safetensors", "scail2/dit/sat/model/1/fsdp2_rank_0000_checkpoint.pt",
                "scail2/masks/expected.safetensors", "scail2/rope/rope_tables.npz"):
        assert (root / rel).is_file(), rel


def test_repository_copy_equals_the_official_outputs(tmp_path: Path) -> None:
    """Byte for byte the files the official code wrote (checked where ../shared/fixtures is present)."""
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"{SHARED_FIXTURES} is absent: nothing to compare the repository's copy with")
    root = unpack(ARCHIVE, tmp_path / "u")
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(files) > 100
    for path in files:
        rel = path.relative_to(root)
        assert sha256(path) == sha256(SHARED_FIXTURES / rel), rel


def test_overlay_prefers_the_first_copy_and_fills_gaps(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    (first / "x").mkdir(parents=True)
    (second / "x").mkdir(parents=True)
    (first / "x" / "same.txt").write_text("repo")
    (second / "x" / "same.txt").write_text("shared")
    (second / "x" / "only_shared.txt").write_text("shared")
    root = overlay(first, second, tmp_path / "o")
    assert (root / "x" / "same.txt").read_text() == "repo"
    assert (root / "x" / "only_shared.txt").read_text() == "shared"
    assert overlay(first, None, tmp_path / "p").joinpath("x", "same.txt").read_text() == "repo"


def test_unpack_refuses_names_outside_the_tree(tmp_path: Path) -> None:
    """A damaged or hostile archive cannot write outside its folder (tarfile's data filter)."""
    bad = tmp_path / "bad.tar.xz"
    with tarfile.open(bad, "w:xz") as tar:
        data = b"owned"
        info = tarfile.TarInfo("../escaped.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(tarfile.FilterError):
        unpack(bad, tmp_path / "dest")
    assert not (tmp_path / "escaped.txt").exists()

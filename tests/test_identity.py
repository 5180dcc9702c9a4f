"""Fingerprints see every input that changes the output: file identities of checkpoints and LoRAs,
the pose backend `auto` resolves to. Through the real `scail` command where a run is involved."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scail.cli import app
from scail.config import Settings
from scail.demo import write_demo_example
from scail.identity import CACHE_NAME, file_identity

runner = CliRunner()
FAST = ["-p", "tiny-random", "--set", "animate.steps=1", "--set", "animate.max_frames=5"]


def test_identity_follows_content_not_mtime_or_location(tmp_path: Path) -> None:
    rng = random.Random(0)
    big = tmp_path / "dit.safetensors"
    data = bytearray(rng.randbytes(5 << 20))
    big.write_bytes(data)
    first = file_identity(big)
    copy = tmp_path / "elsewhere" / "dit.safetensors"
    copy.parent.mkdir()
    shutil.copyfile(big, copy)  # new mtime, new inode, same bytes
    assert file_identity(copy) == first
    for where in (10, len(data) - 10):  # the header and the tail (a torch zip's CRC directory)
        changed = bytearray(data)
        changed[where] ^= 0xFF
        big.write_bytes(changed)
        assert file_identity(big) != first, where
    big.write_bytes(data + b"x")
    assert file_identity(big) != first
    cache = json.loads((Settings.from_env().cache_dir / CACHE_NAME).read_text())
    assert str(copy.absolute()) in cache["files"]  # a warm call is one stat


def test_missing_file_is_one_line_naming_it(tmp_path: Path) -> None:
    from scail.errors import InputError

    with pytest.raises(InputError, match=r"nope\.safetensors: cannot read the file"):
        file_identity(tmp_path / "nope.safetensors")


def test_a_changed_lora_file_makes_the_sample_stale(tmp_path: Path) -> None:
    """Same path, same strength, other bytes: the old sample must not count as fresh."""
    from scail.animate.dit import DiTConfig
    from scail.animate.lora import write_random_lora

    demo = write_demo_example(tmp_path / "dance")
    lora = tmp_path / "style.safetensors"
    write_random_lora(lora, DiTConfig.tiny(), rank=2, seed=1)
    args = [*FAST, "--lora", f"{lora}:0.5"]
    result = runner.invoke(app, ["run", str(demo), *args, "--json"])
    assert result.exit_code == 0, result.output
    sidecar = json.loads(next((demo / "samples").glob("dance_42_*.json")).read_text())
    assert set(sidecar["weights"]) == {"lora0"}  # the sample says which LoRA made it

    def animate_status() -> str:
        res = runner.invoke(app, ["status", str(demo), *args, "--json"])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)["examples"][0]["stages"]["animate"]["status"]

    assert animate_status() == "fresh"
    os.utime(lora, (1, 1))  # touched or copied: same bytes, still fresh
    assert animate_status() == "fresh"
    moved = tmp_path / "loras" / "renamed.safetensors"
    moved.parent.mkdir()
    shutil.copy2(lora, moved)  # the same LoRA under another path: still fresh
    args[-1] = f"{moved}:0.5"
    assert animate_status() == "fresh"
    args[-1] = f"{moved}:0.6"  # another strength: stale
    assert animate_status() == "stale"
    args[-1] = f"{lora}:0.5"
    write_random_lora(lora, DiTConfig.tiny(), rank=2, seed=2)  # retrained in place
    assert animate_status() == "stale"


def test_pose_fingerprint_records_the_backend_auto_resolves_to(tmp_path: Path) -> None:
    """`auto` with the nlf weights present is nlf: the manifest says so, not "auto"."""
    from scail.pose.backends import nlf_weights

    demo = write_demo_example(tmp_path / "dance")
    weights = Settings.from_env().weights_dir
    for f in nlf_weights.FILES:  # present (not valid): auto picks nlf without asking the network
        path = nlf_weights.pose_weights_dir(weights) / f.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"0")
    result = runner.invoke(app, ["pose", str(demo), "-p", "tiny-random", "--pose-backend", "auto",
                                 "--set", "pose.in_process=true", "--force", "pose", "--json"])
    manifest = json.loads((demo / ".scail" / "pose.json").read_text())
    assert manifest["params"]["backend"] == "nlf", result.output

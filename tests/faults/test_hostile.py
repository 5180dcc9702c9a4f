"""Hostile files are refused without effect.

- A pickle payload (an object whose unpickling would create a marker file) inside every weights
  format the loaders read: refused with one line naming the file; the marker never appears.
  Every loader reaches the disk through scail/animate/checkpoint.py (`torch.load(weights_only=
  True)`), and the pose/segment `.npz` readers use `np.load(allow_pickle=False)`; the grep test
  below keeps it that way.
- A YAML python tag in a pipeline file and in an example's scail.yaml: refused, nothing run.
- Names with `../` and absolute paths in the output ledger and in a manifest edited by hand:
  `scail run` and `scail clean` never read, delete or write anything outside the example.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from fault_injection import (
    REPO,
    check_example,
    cli_env,
    fast_preset,
    manifests,
    record,
    scail,
    summary,
    write_example,
)

from scail.errors import ScailError

pytestmark = pytest.mark.faults


class Payload:
    """Unpickling this opens (creates) `marker`: what an attacker's code would do, harmlessly."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


def _state() -> dict[str, torch.Tensor]:
    return {"blocks.0.weight": torch.zeros(2, 2)}


def _zip(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def _legacy(obj: object, path: Path) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    return path


def _raw(obj: object, path: Path) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=2))  # torch.load's own protocol: no warning about it
    return path


def _dit(path: Path) -> object:
    from scail.animate.dit_loader import load_dit

    return load_dit(path)


def _dit_describe(path: Path) -> object:
    from scail.animate.dit_files import describe_dit_file

    return describe_dit_file(path)


def _vae(path: Path) -> object:
    from scail.animate.vae import load_vae

    return load_vae(path)


def _t5(path: Path) -> object:
    from scail.animate.t5 import read_t5_state

    return read_t5_state(path)


def _clip(path: Path) -> object:
    from scail.animate.clip import read_clip_state

    return read_clip_state(path)


def _lora(path: Path) -> object:
    from scail.animate.lora import read_lora

    return read_lora(path, {"blocks.0.weight": (2, 2)})


def _tensors(path: Path) -> object:
    from scail.animate.checkpoint import read_tensors

    return read_tensors(path)


# (format, file name, writer, how the payload is wrapped, the loader that reads that format)
FORMATS: list[tuple[str, str, Callable[[object, Path], Path], Callable[[object], object], Callable[[Path], object]]] = [
    ("SAT DiT .pt ['module']", "mp_rank_00_model_states.pt", _zip, lambda p: {"module": {**_state(), "x": p}}, _dit),
    ("SCAIL-2 fsdp2 .pt", "fsdp2_rank_0000_checkpoint.pt", _zip, lambda p: {"module": _state(), "rng": p},
     _dit_describe),
    ("wan DiT .pth", "dit.pth", _zip, lambda p: {**_state(), "x": p}, _dit),
    ("VAE .pth", "Wan2.1_VAE.pth", _zip, lambda p: {"state_dict": p}, _vae),
    ("umT5 .pth", "models_t5_umt5-xxl-enc-bf16.pth", _zip, lambda p: [p], _t5),
    ("CLIP .pth", "models_clip.pth", _zip, lambda p: {"visual": p}, _clip),
    ("LoRA .pt", "lora.pt", _zip, lambda p: {"lora_down": p}, _lora),
    ("legacy torch .bin", "pytorch_model.bin", _legacy, lambda p: {**_state(), "x": p}, _tensors),
    ("plain pickle .pt", "plain.pt", _raw, lambda p: {"x": p}, _tensors),
]


@pytest.mark.parametrize(("fmt", "name", "write", "wrap", "load"), FORMATS, ids=[f[0] for f in FORMATS])
def test_pickle_payload_in_every_weights_format_is_refused(tmp_path: Path, fmt: str, name: str, write: Callable,
                                                            wrap: Callable, load: Callable) -> None:
    marker = tmp_path / "PWNED"
    path = write(wrap(Payload(marker)), tmp_path / name)
    assert not marker.exists()
    with pytest.raises(ScailError) as exc:
        load(path)
    msg = str(exc.value)
    record("pickle payload", fmt, f"refused: {msg[len(str(path)) + 2:][:45]}...")
    assert not marker.exists(), f"{fmt}: the payload ran"
    assert "\n" not in msg and str(path) in msg, msg
    assert "not loaded for safety" in msg, f"{fmt}: refused, but not said why: {msg}"


def test_no_loader_can_unpickle() -> None:
    """Every torch.load passes weights_only=True, every np.load allow_pickle=False, no pickle.load."""
    bad = []
    for path in (REPO / "scail").rglob("*.py"):
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"torch\.load\(", code) and "weights_only=True" not in code:
                bad.append(f"{path}:{no}")
            if re.search(r"np\.load\(", code) and "allow_pickle=False" not in code:
                bad.append(f"{path}:{no}")
            if re.search(r"pickle\.loads?\(|yaml\.(load|unsafe_load|full_load)\(", code):
                bad.append(f"{path}:{no}")
    record("source scan", "scail/**/*.py", f"{len(bad)} unsafe load call(s)")
    assert not bad, bad


def test_pickled_object_arrays_in_npz_files_are_refused(tmp_path: Path) -> None:
    from scail.animate.pipeline2 import SegmentStore
    from scail.demo import dance, make_pose
    from scail.pose.schema import load_pose, save_pose

    marker = tmp_path / "PWNED"
    good = tmp_path / "good.npz"
    save_pose(make_pose([dance(5)]), good)
    arrays = dict(np.load(good))
    arrays["body3d"] = np.array([Payload(marker)], dtype=object)
    evil = tmp_path / "pose.npz"
    np.savez(evil, **arrays)  # type: ignore[arg-type]
    with pytest.raises(ScailError) as exc:
        load_pose(evil)
    assert "\n" not in str(exc.value) and not marker.exists()
    record("pickle payload", "pose.npz (object array)", "refused: unreadable pose data")
    store = SegmentStore(tmp_path / "segments", "key")
    store.folder.mkdir()
    np.savez(store.folder / "segment_000.npz", key=np.array("key"), frames=np.array([Payload(marker)], dtype=object),
             anchor=np.zeros(0))
    assert store.load(0) is None and not marker.exists()
    record("pickle payload", "SCAIL-2 segment .npz", "ignored (not reused)")


# ----------------------------------------------------------------------------------------------
# Through the real CLI
# ----------------------------------------------------------------------------------------------

EVIL_TAG = "!!python/object/apply:os.system"


def test_pickle_payloads_through_the_cli(tmp_path: Path) -> None:
    """`scail run --lora` and `scail weights verify` on a weights folder where every file is a payload."""
    marker = tmp_path / "PWNED"
    root = write_example(tmp_path / "examples" / "dancer")
    env = cli_env(tmp_path / "cache")
    lora = _zip({"lora_down": Payload(marker)}, tmp_path / "lora.pt")
    proc = scail(env, "run", root, "-p", fast_preset(tmp_path, frames=1), "--lora", lora, "--json")
    assert proc.returncode != 0 and not marker.exists(), proc.stderr[-2000:]
    text = proc.stderr.strip().splitlines()[-1] if proc.returncode == 1 else summary(proc)["dancer"]["reason"]
    assert str(lora) in text and "\n" not in text, (proc.stdout[-2000:], proc.stderr[-2000:])
    record("pickle payload via the CLI", "scail run --lora lora.pt", f"exit {proc.returncode}, refused")
    weights = tmp_path / "weights"
    names = ["model/1/mp_rank_00_model_states.pt", "Wan2.1_VAE.pth", "umt5-xxl/models_t5_umt5-xxl-enc-bf16.pth",
             "models_clip_open-clip-xlm-roberta-large-vit-huge-14-onlyvisual.pth"]
    for name in names:
        (weights / name).parent.mkdir(parents=True, exist_ok=True)
        _zip({"module": {**_state(), "x": Payload(marker)}}, weights / name)
    proc = scail(env, "weights", "verify", "--dir", weights, "--json")
    assert proc.returncode != 0 and not marker.exists(), proc.stdout[-2000:]
    out = proc.stdout
    refused = [name for name in names if Path(name).name in out]
    assert len(refused) == len(names) and out.count("not loaded for safety") >= len(names), out[-3000:]
    record("pickle payload via the CLI", "scail weights verify (DiT, VAE, umT5, CLIP)",
           f"exit {proc.returncode}, {len(refused)} files refused")


def test_yaml_python_tags_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    root = write_example(tmp_path / "examples" / "dancer")
    env = cli_env(tmp_path / "cache")
    evil = tmp_path / "evil.yaml"
    evil.write_text(fast_preset(tmp_path).read_text() + f"x: {EVIL_TAG} ['touch {marker}']\n", encoding="utf-8")
    proc = scail(env, "run", root, "-p", evil)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(err) == 1 and str(evil) in err[0], proc.stderr
    assert not marker.exists() and not manifests(root)
    record("YAML python tag", "pipeline file", f"exit 1: {err[0].partition(f'{evil}: ')[2][:45]}")
    # per example: that example fails with one line naming its file, the batch goes on
    good = write_example(tmp_path / "examples" / "good")
    (root / "scail.yaml").write_text(f"seed: {EVIL_TAG} ['touch {marker}']\n", encoding="utf-8")
    proc = scail(env, "render", root.parent, "-p", fast_preset(tmp_path), "--json")
    assert proc.returncode == 2 and not marker.exists() and not manifests(root), proc.stderr[-2000:]
    entries = summary(proc)
    assert entries["good"]["ok"] and manifests(good)["render"]["status"] == "done"
    reason = entries["dancer"]["reason"]
    assert str(root / "scail.yaml") in reason and "\n" not in reason, reason
    record("YAML python tag", "example scail.yaml", "exit 2: that example refused, the other rendered")


def test_names_leading_outside_the_example_are_never_followed(tmp_path: Path) -> None:
    root = write_example(tmp_path / "examples" / "dancer")
    preset = fast_preset(tmp_path)
    env = cli_env(tmp_path / "cache")
    proc = scail(env, "render", root, "-p", preset)
    assert proc.returncode == 0, proc.stderr[-2000:]
    victim = tmp_path / "victim.mp4"  # a file of the user's, outside the example
    shutil.copy(root / "rendered.mp4", victim)
    from scail.cache import sha256_file

    digest = sha256_file(victim)
    manifest_file = root / ".scail" / "render.json"
    ledger_file = root / ".scail" / "outputs.json"
    good_manifest, good_ledger = manifest_file.read_text(), ledger_file.read_text()
    doc = json.loads(good_manifest)
    keys = {"relative ../ path": "../../victim.mp4", "absolute path": str(victim)}
    doc["outputs"] = {**doc["outputs"], **dict.fromkeys(keys.values(), digest)}
    manifest_file.write_text(json.dumps(doc))
    ledger = json.loads(good_ledger)
    for key in keys.values():
        ledger["files"][key] = {"stage": "render", "sha256": digest, "fingerprint": doc["fingerprint"],
                                "written": "2026-01-01T00:00:00+00:00"}
    ledger_file.write_text(json.dumps(ledger))
    proc = scail(env, "render", root, "-p", preset, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    hashed = json.loads((root / ".scail" / "hashes.json").read_text())["files"]
    proc = scail(env, "clean", root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    check = check_example(root)
    assert not check.problems, check.problems
    assert not (root / "rendered.mp4").exists()  # clean did remove what scail wrote inside
    for how, key in keys.items():
        assert key not in hashed and str(victim) not in hashed, f"scail read {key}"
        assert victim.is_file() and sha256_file(victim) == digest, f"{how}: the file outside was changed"
        record("manifest + ledger name a file outside", how, "never read, written or deleted", check)

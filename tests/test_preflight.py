"""Pre-flight checks and prompt files through the real `scail` command (real stages, tiny-random).

A global problem (device, weights, pose env, disk) is one `error:` line and exit 1 before any
example starts; a prompt.txt that is not UTF-8 fails its example before pose runs; a prompt longer
than the text encoder's 512 tokens is a warning that says how much was cut.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scail.batch import make_jobs
from scail.cli import app
from scail.config import STAGES, load_pipeline
from scail.demo import write_demo_example
from scail.errors import ScailError
from scail.example import Example
from scail.preflight import check_batch, truncated

runner = CliRunner()
FAST = ["-p", "tiny-random", "--set", "animate.steps=1", "--set", "animate.max_frames=5"]


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def _nothing_ran(root: Path) -> None:
    for ex in sorted(p for p in root.iterdir() if p.is_dir()):
        assert not (ex / "rendered.mp4").exists() and not (ex / ".scail" / "render.json").exists(), ex
        assert not (ex / "samples").exists(), ex


@pytest.fixture
def three(tmp_path: Path) -> Path:
    for name in ("a", "b", "c"):
        write_demo_example(tmp_path / "batch" / name, inputs_only=False)
    return tmp_path / "batch"


def test_device_cuda_without_cuda_is_one_error_before_any_stage(three: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = runner.invoke(app, ["run", str(three), *FAST, "--device", "cuda"])
    assert result.exit_code == 1, result.output
    (line,) = _error_lines(result.output)
    assert "render.device (--device) 'cuda': CUDA is not available here; use --device cpu" in line
    _nothing_ran(three)


def test_missing_weights_are_one_error_not_one_per_example(three: Path, tmp_path: Path) -> None:
    empty = tmp_path / "no-weights"
    empty.mkdir()
    args = ["run", str(three), *FAST, "--set", "animate.model=scail-preview-14b", "--weights-dir", str(empty)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    (line,) = _error_lines(result.output)
    assert str(empty) in line and "scail weights download" in line
    _nothing_ran(three)


def test_weights_are_not_needed_when_animate_has_no_work(tmp_path: Path) -> None:
    root = write_demo_example(tmp_path / "one" / "dance").parent
    empty = tmp_path / "no-weights"
    empty.mkdir()
    result = runner.invoke(app, ["run", str(root), *FAST, "--set", "animate.model=scail-preview-14b",
                                 "--weights-dir", str(empty), "--until", "render", "--json"])
    assert result.exit_code == 0, result.output
    assert [s["outcome"] for s in json.loads(result.stdout)["examples"][0]["stages"]] == ["user-provided", "ran"]


def test_truncated_checkpoints_are_found_from_their_ends(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    pt = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(64, 64)}, pt)
    assert zipfile.is_zipfile(pt) and truncated(pt) == ""
    cut = tmp_path / "cut.pt"
    cut.write_bytes(pt.read_bytes()[: pt.stat().st_size // 2])
    assert "truncated" in truncated(cut)
    st = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(64, 64)}, str(st))
    assert truncated(st) == ""
    cut_st = tmp_path / "cut.safetensors"
    cut_st.write_bytes(st.read_bytes()[:-100])
    assert "truncated" in truncated(cut_st)


def test_too_little_disk_is_one_error_counting_only_examples_with_work(three: Path) -> None:
    config = load_pipeline("tiny-random", {"pose.in_process": True})
    jobs = make_jobs([Example(p) for p in sorted(three.iterdir())], config, STAGES)
    with pytest.raises(ScailError, match=r"10 MiB free, this run writes up to about 192 MiB \(3 example"):
        check_batch(jobs, three, disk_free=lambda p: 10 << 20)
    check_batch(jobs, three, disk_free=lambda p: 1 << 40)  # plenty: no error


def test_bad_prompt_file_fails_its_example_before_pose_and_bom_and_long_prompts_work(tmp_path: Path) -> None:
    root = tmp_path / "batch"
    bad = write_demo_example(root / "bad")
    good = write_demo_example(root / "good")
    (bad / "prompt.txt").write_bytes("a caf\u00e9 dancer".encode("latin-1"))
    long_prompt = "a dancer spins " * 50  # 750 characters: the character-level tiny tokenizer cuts it
    (good / "prompt.txt").write_bytes(b"\xef\xbb\xbf" + long_prompt.encode("utf-8"))

    result = runner.invoke(app, ["run", str(root), *FAST, "--json"])
    assert result.exit_code == 2, result.output
    bad_doc, good_doc = json.loads(result.stdout)["examples"]
    assert bad_doc["reason"] == (f"animate: {bad / 'prompt.txt'}: not UTF-8 text (byte 0xe9 at offset 5); "
                                 "save it as UTF-8 and rerun")
    assert not (bad / "rendered.mp4").exists()  # nothing ran for it: not even render
    assert good_doc["ok"]
    (sidecar,) = (good / "samples").glob("good_42_*.json")
    assert json.loads(sidecar.read_text(encoding="utf-8"))["prompt"] == long_prompt.strip()  # no BOM
    from scail.animate.tokenizer import UMT5Tokenizer

    total, cut = UMT5Tokenizer.tiny().overflow(long_prompt)
    assert cut == total - 511 > 0
    flat = " ".join(result.output.split())
    assert f"good: the prompt is {total} tokens; the text encoder reads 512 (with </s>), so the last {cut}" in flat


def test_pose_env_that_cannot_be_built_for_lack_of_space_is_one_error(three: Path) -> None:
    for ex in three.iterdir():  # pose has work: the demo's hand-made pose data is gone
        for name in ("pose.npz", "ref_pose.npz"):
            (ex / ".scail" / name).unlink()
    config = load_pipeline("tiny-random")
    jobs = make_jobs([Example(p) for p in sorted(three.iterdir())], config, STAGES)
    with pytest.raises(ScailError, match=r"pose env .*: 100 MiB free in .*, building it needs about 2\.0 GiB"):
        check_batch(jobs, three, disk_free=lambda p: 100 << 20)
    # `scail render` / `scail animate` do not run pose: its env is not checked.
    render_only = make_jobs([Example(p) for p in sorted(three.iterdir())], config, ("render", "animate"))
    check_batch(render_only, three, disk_free=lambda p: 100 << 30)

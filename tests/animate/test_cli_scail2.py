"""`scail run` with the tiny-random SCAIL-2 preset through the real CLI, in every mode."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from scail2_cases import make_example
from typer.testing import CliRunner

from scail.cli import app
from scail.pose.schema import PoseData, save_pose
from scail.video import probe

runner = CliRunner()


def scail2_example(root: Path, frames: int = 9, **kw: bool | int) -> Path:
    """An example folder with masks, plus user-provided pose data and skeleton render (the pose and
    render stages keep them, so no pose env is needed)."""
    ex = make_example(root, frames, **kw)  # type: ignore[arg-type]
    ex.state_dir.mkdir(exist_ok=True)
    save_pose(PoseData.empty(frames, 1, (64, 96)), ex.pose_data)
    driving = ex.root / ("driving.mp4" if (ex.root / "driving.mp4").is_file() else "rendered_v2.mp4")
    shutil.copy(driving, ex.root / "rendered.mp4")
    return ex.root


def run(path: Path, *args: str) -> dict:
    result = runner.invoke(app, ["run", str(path), "-p", "tiny-random-scail-2", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    ("kw", "args", "mode", "extra"),
    [
        ({}, [], "end-to-end", 0),
        ({}, ["--set", "animate.scail2_mode=pose"], "pose", 0),
        ({"replace": True}, [], "replacement", 0),
        ({"extra": 2}, [], "end-to-end", 2),
    ],
    ids=["end-to-end", "pose", "replacement", "multi-reference"],
)
def test_scail_run_each_mode(tmp_path: Path, kw: dict, args: list[str], mode: str, extra: int) -> None:
    path = scail2_example(tmp_path / "ex", **kw)
    doc = run(path, *args)
    stages = {s["stage"]: s["outcome"] for s in doc["examples"][0]["stages"]}
    assert stages["render"] == "user-provided" and stages["animate"] == "ran"
    out = path / "samples" / "ex_latest.mp4"
    info = probe(out)
    assert info.num_frames == 9 and (info.height, info.width) == (128, 224)  # the tiny model's 1/4 size
    manifest = json.loads((path / ".scail" / "animate.json").read_text())
    notes = json.dumps(manifest)
    assert f'"scail2_mode": "{mode}"' in notes and f'"extra_references": {extra}' in notes
    sidecar = json.loads(next((path / "samples").glob("ex_42_*.json")).read_text())
    assert sidecar["scail2_mode"] == mode and sidecar["frames"] == 9 and sidecar["model"].startswith("tiny-random-scail-2")
    assert run(path, *args)["examples"][0]["stages"][2]["outcome"] == "fresh"  # cached


def test_long_video_runs_in_segments(tmp_path: Path) -> None:
    path = scail2_example(tmp_path / "ex", frames=13)
    run(path, "--set", "animate.window_frames=9", "--set", "animate.window_overlap=4")  # overlap: Preview only
    assert probe(path / "samples" / "ex_latest.mp4").num_frames == 13  # segments (0, 9), (4, 13): the tail kept
    notes = json.loads((path / ".scail" / "animate.json").read_text())
    assert '"segments": [[0, 9], [4, 13]]' in json.dumps(notes)
    assert not (path / ".scail" / "scail2-segments").exists()  # the kept segments go once the sample is written


def test_missing_masks_without_a_backend_is_one_clear_error(tmp_path: Path) -> None:
    path = scail2_example(tmp_path / "ex")
    (path / "rendered_mask_v2.mp4").unlink()
    result = runner.invoke(app, ["run", str(path), "-p", "tiny-random-scail-2", "--set", "animate.masks=none"])
    assert result.exit_code == 2
    assert "needs rendered_mask_v2.mp4" in result.output and "black background" in result.output



def test_sam_masks_without_weights_are_one_clear_error(tmp_path: Path) -> None:
    """`animate.masks: sam` (the optional SAM backend) names its weights option before any work starts:
    unset, or a file that is not there."""
    path = scail2_example(tmp_path / "ex")
    (path / "rendered_mask_v2.mp4").unlink()
    result = runner.invoke(app, ["run", str(path), "-p", "tiny-random-scail-2", "--set", "animate.masks=sam"])
    assert result.exit_code != 0 and "masks: sam needs animate.mask_sam_weights" in result.output
    missing = tmp_path / "sam2.1_b.pt"
    result = runner.invoke(app, ["run", str(path), "-p", "tiny-random-scail-2", "--set", "animate.masks=sam",
                                 "--set", f"animate.mask_sam_weights={missing}"])  # fmt: skip
    manifest = json.loads((path / ".scail" / "animate.json").read_text())  # the example fails, not the batch
    assert result.exit_code != 0 and manifest["status"] == "failed"
    assert manifest["error"].startswith(f"animate.mask_sam_weights {missing}: file not found")

def test_sequence_parallel_runs_scail2(tmp_path: Path) -> None:
    """`scail run --gpus 2` with a SCAIL-2 preset runs on 2 processes (the video equals the 1-process
    one: `test_pipeline2.test_two_processes_give_the_one_process_video`)."""
    path = scail2_example(tmp_path / "ex")
    run(path, "--gpus", "2", "--device", "cpu", "--steps", "2")
    notes = json.loads((path / ".scail" / "animate.json").read_text())["notes"]
    assert notes["gpus"] == 2 and notes["frames"] == 9
    assert probe(path / "samples" / "ex_latest.mp4").num_frames == 9

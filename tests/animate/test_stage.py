"""The animate stage with the tiny-random model on a synthetic example folder (offline, CPU)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scail.animate.stage import AnimateStage
from scail.config import AnimateConfig
from scail.errors import InputError
from scail.example import Example
from scail.stage import ProgressEvent, StageContext
from scail.video import probe, read_frames, write_video


def _make_example(root: Path, frames: int = 11, fps: float = 12.0, ref_hw: tuple[int, int] = (60, 100)) -> Example:
    """rendered.mp4 (a moving bar, 64x128) + ref.png; every frame is animated (padded to 4k+1 inside)."""
    root.mkdir(parents=True)
    video = []
    for i in range(frames):
        f = np.zeros((64, 128, 3), np.uint8)
        f[20:44, 8 * i : 8 * i + 16] = (255, 128, 0)
        video.append(f)
    write_video(root / "rendered.mp4", video, fps=fps)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (*ref_hw, 3), dtype=np.uint8)).save(root / "ref.png")
    return Example(root)


def _config(**kw: object) -> AnimateConfig:
    base = {"model": "tiny-random", "solver": "euler", "steps": 2, "size_hw": (64, 128), "device": "cpu", "seed": 7}
    return AnimateConfig(**{**base, **kw})


def test_stage_writes_a_playable_sample_and_reuses_models(tmp_path: Path) -> None:
    ex1 = _make_example(tmp_path / "ex1")
    ex2 = _make_example(tmp_path / "ex2", frames=6, fps=16.0)
    (ex2.root / "prompt.txt").write_text("a person dancing\n")
    stage = AnimateStage(_config())
    sample, sidecar = stage.outputs(ex1)
    assert re.fullmatch(r"ex1_7_[0-9a-f]{8}\.mp4", sample.name) and sidecar == sample.with_suffix(".json")
    assert stage.inputs(ex1) == [ex1.rendered, ex1.root / "ref.png"]
    assert stage.inputs(ex2)[-1] == ex2.prompt_file  # the prompt enters the fingerprint

    events: list[ProgressEvent] = []
    ctx = StageContext(example=ex1, stage="animate", on_event=events.append)
    stage.run(ex1, ctx)
    out = stage.outputs(ex1)[0]
    info = probe(out)
    assert info.num_frames == 11 and abs(info.fps - 12.0) < 1e-6 and (info.height, info.width) == (64, 128)
    assert read_frames(out).shape == (11, 64, 128, 3)  # 11 frames: 1 + 4 + 4 + 2 (padded to 4 inside)
    steps = [(e.done, e.total, e.unit) for e in events if e.unit == "steps"]
    assert steps == [(1, 2, "steps"), (2, 2, "steps")]
    # the decode bar shows (labelled) before the first frame is decoded: no silence after the last step
    assert [(e.done, e.total) for e in events if e.unit == "frames"] == [(0, 11), (1, 11), (5, 11), (9, 11), (11, 11)]
    assert {e.desc for e in events if e.unit == "frames"} == {"VAE decode + writing video"}
    # every phase without a count is named, in order
    phases = [e.desc for e in events if e.unit == "phase"]
    assert phases == ["loading weights (DiT, VAE, umT5, CLIP)", "reading the reference and the pose video",
                      "VAE encode (pose video, reference)", "encoding text (umT5)", "encoding the reference (CLIP)"]
    assert events.index(next(e for e in events if e.unit == "phase" and e.desc.startswith("encoding the ref"))) < \
        events.index(next(e for e in events if e.unit == "steps"))
    assert "noise" in ctx.notes["model"]
    assert ctx.notes["frames"] == 11 and ctx.notes["pose_frames_in_file"] == 11 and ctx.notes["prompt"] == ""
    assert ctx.notes["windows"] == 1
    assert ctx.notes["attention"] == "sdpa"  # which kernels ran, for the user reading the manifest
    assert not (ex1.state_dir / "animate-resume.safetensors").exists()  # removed once the sample is written
    assert ctx.notes["cfg_branches"] == 1  # prompt "" == negative prompt ""
    json.dumps(ctx.notes)  # manifest-safe

    events2: list[ProgressEvent] = []
    ctx2 = StageContext(example=ex2, stage="animate", on_event=events2.append)
    stage.run(ex2, ctx2)
    assert not any(e.desc.startswith("loading weights") for e in events2)  # they are loaded already
    assert stage.builds == 1  # the second example reuses the loaded models
    assert probe(stage.outputs(ex2)[0]).num_frames == 6 and ctx2.notes["prompt"] == "a person dancing"
    assert ctx2.notes["cfg_branches"] == 2
    stage.close()
    assert stage._pipeline is None


def test_fingerprint_params_cover_settings_and_override(tmp_path: Path) -> None:
    ex = _make_example(tmp_path / "ex")
    (ex.root / "prompt.txt").write_text("from file")
    a = AnimateStage(_config())
    b = AnimateStage(_config(), prompt_override="  from cli ")
    c = AnimateStage(_config(weights_dir=tmp_path, offload="none", compile="on", checkpoint_every_s=0))
    d = AnimateStage(_config(seed=8))
    assert ex.prompt_file not in b.inputs(ex)  # the override replaces prompt.txt
    assert b.params().prompt_override == "from cli"
    assert a.params() == c.params()  # where weights live and memory handling do not change the video
    assert a.params() != d.params() and d.outputs(ex)[0].name.startswith("ex_8_")
    assert a.params() is a.params()  # one object per stage (the engine caches its JSON)
    assert a.params() != AnimateStage(_config(vae_tiling="on")).params()  # tiles change the pixels


def test_engine_runs_then_skips_fresh_sample(tmp_path: Path) -> None:
    from scail.engine import Outcome, run_stage

    ex = _make_example(tmp_path / "ex", frames=6)
    stage = AnimateStage(_config(steps=1, size_hw=None))  # tiny-random default: 1/4 of 512x896
    first = run_stage(stage, ex)
    assert first.outcome == Outcome.RAN, first.reason
    info = probe(stage.outputs(ex)[0])
    assert (info.height, info.width, info.num_frames) == (128, 224, 6)
    assert run_stage(stage, ex).outcome == Outcome.FRESH
    (ex.root / "prompt.txt").write_text("new prompt")
    assert run_stage(stage, ex).outcome == Outcome.RAN
    manifest = json.loads((ex.state_dir / "animate.json").read_text())
    assert manifest["notes"]["prompt"] == "new prompt"
    assert stage.builds == 1


def test_missing_pose_video_is_a_clear_input_error(tmp_path: Path) -> None:
    root = tmp_path / "ex"
    root.mkdir()
    Image.new("RGB", (32, 32)).save(root / "ref.jpg")
    with pytest.raises(InputError, match=r"no rendered_aligned\.mp4 or rendered\.mp4"):
        AnimateStage(_config()).inputs(Example(root))


@pytest.mark.parametrize("ref_hw,size", [((60, 100), (512, 896)), ((100, 60), (896, 512)), ((80, 80), (896, 512))])
def test_reference_orientation_picks_the_output_size(tmp_path: Path, ref_hw: tuple[int, int], size: tuple[int, int]) -> None:
    from scail.animate.preprocess import load_inputs

    ex = _make_example(tmp_path / "ex", frames=6, ref_hw=ref_hw)
    inputs = load_inputs(ex.reference(), ex.rendered)
    assert inputs.size_hw == size
    assert tuple(inputs.pose_video().shape) == (3, 6, size[0] // 2, size[1] // 2)
    assert inputs.fps == pytest.approx(12.0)


def test_max_frames_is_an_opt_in_cut(tmp_path: Path) -> None:
    """animate.max_frames keeps exactly the first N frames (not rounded to 4k+1)."""
    ex = _make_example(tmp_path / "ex", frames=11)
    stage = AnimateStage(_config(steps=1, max_frames=7))
    stage.run(ex, StageContext(example=ex, stage="animate"))
    assert probe(stage.outputs(ex)[0]).num_frames == 7


def test_window_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="window_frames 80: must be 4k"):
        _config(window_frames=80)
    with pytest.raises(ValueError, match="window_overlap 6: must be a multiple of 4"):
        _config(window_overlap=6)
    with pytest.raises(ValueError, match="at most window_frames - 5 = 4"):
        _config(window_frames=9, window_overlap=8)


def test_windowed_progress_counts_windows_x_steps_with_an_eta(tmp_path: Path) -> None:
    """A video longer than a window: the progress is window steps (windows x steps) and the display gives an ETA."""
    import io

    from rich.console import Console

    from scail.progress import ProgressDisplay

    ex = _make_example(tmp_path / "ex", frames=11)  # 4 latent frames; windows of 3 sharing 1: (0, 3), (1, 4)
    stage = AnimateStage(_config(steps=2, window_frames=9, window_overlap=4))
    events: list[ProgressEvent] = []
    stage.run(ex, StageContext(example=ex, stage="animate", on_event=events.append))
    stage.close()
    windowed = [(e.done, e.total, e.desc) for e in events if e.unit == "window steps"]
    assert windowed == [(k, 4, "denoising 2 windows x 2 steps") for k in range(1, 5)]
    assert probe(stage.outputs(ex)[0]).num_frames == 11

    buf = io.StringIO()
    now = [0.0]
    display = ProgressDisplay(Console(file=buf, width=120, force_terminal=False, color_system=None),
                              get_time=lambda: now[0])
    with display:
        display.batch_started(1)
        display.example_started("ex")
        display.stage_started("ex", "animate")
        for e in events:
            if e.unit == "window steps":
                display.on_event(e)
                now[0] += 3.0
    lines = buf.getvalue().splitlines()
    assert "ex animate: denoising 2 windows x 2 steps 2/4 window steps (50%), eta 3.0 s" in lines, lines

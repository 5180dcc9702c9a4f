"""`scail plan` / `scail run --dry-run`: frames, windows and estimates of a real example folder.

The examples are real files (an H.264 driving video, a PNG reference) and the command is the real
CLI; the estimates come from the shipped GPU table, so these tests also pin the table's numbers to
the measurements they cite (benchmarks/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from scail.cli import app
from scail.gpu_speed import load_table

runner = CliRunner()

SECONDS, PHONE_FPS = 12, 24.0


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCAIL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SCAIL_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.delenv("SCAIL_GPU_TABLE", raising=False)


def _example(root: Path, seconds: float = SECONDS, fps: float = PHONE_FPS, landscape: bool = True) -> Path:
    """A phone-like clip: driving.mp4 of `seconds` at `fps` (small frames: cheap), ref.png, prompt.txt."""
    from PIL import Image

    from scail.video import write_video

    root.mkdir(parents=True)
    hw = (36, 64) if landscape else (64, 36)
    write_video(root / "driving.mp4", (np.full((*hw, 3), 8 * (i % 30), np.uint8) for i in range(int(seconds * fps))),
                fps=fps)
    Image.new("RGB", hw[::-1], (200, 120, 60)).save(root / "ref.png")
    (root / "prompt.txt").write_text("a person dancing\n", encoding="utf-8")
    return root


def _plan_json(*args: str) -> dict:
    result = runner.invoke(app, ["plan", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_12s_video_default_and_fast_per_step_time_is_the_measured_h200_number(tmp_path: Path) -> None:
    root = _example(tmp_path / "phone")
    row = load_table().find("NVIDIA H200")
    assert row is not None
    bf16, fast = row.dit_s_per_step["bf16"], row.dit_s_per_step["fast"]
    notes = (Path(__file__).resolve().parents[1] / "benchmarks" / "README.md").read_text(encoding="utf-8")
    assert f"{bf16:.2f} s/step" in notes and f"{fast:.2f} s/step" in notes  # the table cites the measurements
    for pipeline, measured in (("scail-preview-512p", bf16), ("scail-preview-fast", fast)):
        doc = _plan_json(str(root), "--gpu", "H200", "--pipeline", pipeline)
        ex = doc["examples"][0]
        assert ex["run"] == ["pose", "render", "animate"]
        # 12 s resampled to 16 fps: 192 frames -> 49 latent frames -> windows (0, 21), (17, 38), (28, 49)
        assert ex["frames"] == 192 and ex["frames_from"] == "driving.mp4 at 16 fps"
        work, est = ex["animate"], ex["estimate"]
        assert work["windows"] == [21, 21, 21] and work["size_hw"] == [512, 896] and work["steps"] == 50
        assert est["tokens"] == 48_832
        assert est["s_per_window_step"] == pytest.approx(measured, abs=1e-3)  # the default size: the table
        assert est["s_per_step"] == pytest.approx(3 * measured, abs=1e-3)
        assert est["stage_s"]["denoise"] == pytest.approx(50 * 3 * measured, abs=0.01)
        assert ex["fits"] is True and doc["totals"]["to_run"] == 1
    text = runner.invoke(app, ["plan", str(root), "--gpu", "H200", "--pipeline", "scail-preview-fast"]).stdout
    assert f"{fast:.2f} s per window step" in text and "3x81" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_calibration_reproduces_the_measured_peaks_and_scales_by_flops() -> None:
    """At the reference shape the model returns the table's measured step times and peaks; elsewhere
    it scales by FLOPs: CFG off halves a step, fast mode's unconditional branch every 2nd step costs
    3/4 (7.62 -> 5.72 s/step predicted; benchmarks/README.md S2-7 measured 5.72), a shorter clip less."""
    from scail.estimate import AnimateWork, estimate, reference_flops

    table = load_table()
    row = table.find("H200")
    assert row is not None
    dit, mem = row.dit_s_per_step, table.memory
    base = AnimateWork(model="scail-preview-14b", size_hw=(512, 896), frames=81, windows=(21,), steps=50, cfg=True)
    assert reference_flops() == pytest.approx(6.310e15, rel=1e-3)  # benchmarks/README.md: 6.310 PFLOP
    cases = ((base, mem.resident, dit["bf16"]), (AnimateWork(**{**base.__dict__, "offload": "blocks"}), mem.offload,
             dit["offload"]), (AnimateWork(**{**base.__dict__, "fast": True}), mem.fast, dit["fast"]))
    for work, peak, step in cases:
        est = estimate(work, row, mem, flash_attn=True, fp8_attention="flash_attn_3")
        assert est.peak_gib == pytest.approx(peak, abs=0.01) and est.s_per_step == pytest.approx(step, abs=1e-3)
    sdpa = estimate(base, row, mem, flash_attn=False)
    assert sdpa.s_per_step == pytest.approx(dit["bf16_sdpa"], abs=1e-3) and sdpa.dit_mode == "bf16_sdpa"
    reuse = estimate(AnimateWork(**{**base.__dict__, "fast": True, "uncond_every": 2}), row, mem, True, "flash_attn_3")
    assert reuse.s_per_step == pytest.approx(0.75 * dit["fast"], abs=1e-3)
    no_cfg = estimate(AnimateWork(**{**base.__dict__, "cfg": False}), row, mem, True)
    assert no_cfg.s_per_step == pytest.approx(dit["bf16"] / 2, abs=1e-3)
    h100 = table.find("H100 80GB HBM3")
    assert h100 is not None
    fast_cudnn = estimate(AnimateWork(**{**base.__dict__, "fast": True}), h100, mem, True, "cudnn")
    assert fast_cudnn.dit_mode == "fast_cudnn" and fast_cudnn.s_per_step == pytest.approx(8.68, abs=1e-3)
    no_fp8 = estimate(AnimateWork(**{**base.__dict__, "fast": True}), h100, mem, True, None)
    assert no_fp8.dit_mode == "fast_sdpa" and no_fp8.s_per_step == pytest.approx(9.96, abs=1e-3)
    short = estimate(AnimateWork(**{**base.__dict__, "frames": 41, "windows": (11,)}), row, mem, True)
    # attention is quadratic in the tokens: 11 of 21 latent frames cost less than 11/21 of the step
    assert short.s_per_step is not None and short.s_per_step < dit["bf16"] * 11 / 21
    assert short.peak_gib < mem.resident


def test_parameter_count_is_the_modules() -> None:
    import torch

    from scail.animate.dit import DiT, DiTConfig, is_fp32_param
    from scail.animate.dit2 import SCAIL2Config, SCAIL2DiT
    from scail.estimate import param_count

    for cfg, build in ((DiTConfig.tiny(), DiT), (SCAIL2Config.tiny(), SCAIL2DiT)):
        with torch.device("meta"):
            params = dict(build(cfg).named_parameters())
        n = param_count(cfg)
        assert n.total == sum(p.numel() for p in params.values())
        assert n.fp32 == sum(p.numel() for k, p in params.items() if is_fp32_param(k))
        assert n.block_linear == sum(p.numel() for k, p in params.items() if k.startswith("blocks.") and p.dim() == 2)
        assert n.per_block == sum(p.numel() for k, p in params.items() if k.startswith("blocks.0."))
    # the released models' counts, as their config docstrings state them
    assert param_count(DiTConfig.scail_14b()).total == 16_394_965_824
    assert param_count(SCAIL2Config.scail_14b()).total == 16_395_544_384


def test_frames_come_from_user_pose_data_and_fresh_stages_are_not_planned(tmp_path: Path) -> None:
    from scail.pose.schema import PoseData, save_pose

    root = _example(tmp_path / "ex", seconds=2)
    save_pose(PoseData.empty(100, 1, (512, 896)), root / ".scail" / "pose.npz")  # user-provided
    (root / "scail.yaml").write_text("seed: 3\n", encoding="utf-8")
    doc = _plan_json(str(root), "--gpu", "H200")
    ex = doc["examples"][0]
    assert ex["stages"][0]["status"] == "user-provided"
    assert ex["run"] == ["render", "animate"] and ex["frames"] == 100 and ex["frames_from"] == ".scail/pose.npz"
    assert ex["animate"]["windows"] == [21, 21]  # 26 latent frames: (0, 21), (5, 26)
    # a window of 41 frames, overlap 8: 26 latent frames in (0, 11), (9, 20), (15, 26)
    doc = _plan_json(str(root), "--gpu", "H200", "--set", "animate.window_frames=41", "--set",
                     "animate.window_overlap=8")
    assert doc["examples"][0]["animate"]["windows"] == [11, 11, 11]
    doc = _plan_json(str(root), "--gpu", "H200", "--until", "render")
    assert doc["examples"][0]["run"] == ["render"] and doc["examples"][0]["estimate"] is None
    assert not (root / ".scail" / "render.json").exists() and not (root / "rendered.mp4").exists()


def test_an_example_that_cannot_fit_is_refused_with_the_setting_that_fits(tmp_path: Path) -> None:
    root = _example(tmp_path / "big")
    args = ["plan", str(root), "--gpu", "H100", "--set", "animate.dtype=float32"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "DOES NOT FIT" in result.stdout
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: big: animate needs about") and "H100 has 79.6 GiB" in error
    assert "--set animate.offload=blocks" in error and "animate.window_frames=" in error
    fixed = runner.invoke(app, [*args, "--set", "animate.offload=blocks"])  # the named fix fits
    assert fixed.exit_code == 0, fixed.output
    dry = runner.invoke(app, ["run", *args[1:], "--dry-run"])  # the same code
    assert dry.exit_code == 1 and dry.stdout == result.stdout
    assert not (root / ".scail" / "pose.json").exists()  # nothing ran


def test_the_run_preflight_refuses_before_any_work_what_cannot_fit(tmp_path: Path) -> None:
    """`scail run`'s check (preflight.check_memory) on an H100 of the table: the same estimate."""
    from scail.batch import make_jobs
    from scail.config import STAGES, load_pipeline
    from scail.errors import ScailError
    from scail.example import discover
    from scail.gpu_speed import named_gpu
    from scail.plan import fits_any_example
    from scail.preflight import check_memory

    root = _example(tmp_path / "big")  # 12 s: 81-frame windows
    table = load_table()
    h100 = named_gpu("H100", table)
    # the default settings fit any clip on an H100: scail run plans no example for the check
    assert fits_any_example(load_pipeline(None).animate, table, h100)
    assert not fits_any_example(load_pipeline(None, {"animate.dtype": "float32"}).animate, table, h100)
    for offload, refused in (("encoders", True), ("blocks", False)):
        config = load_pipeline(None, {"animate.dtype": "float32", "animate.offload": offload})
        jobs = make_jobs(discover(root), config, STAGES)
        if refused:
            with pytest.raises(ScailError, match=r"big: animate needs about .* --set animate.offload=blocks"):
                check_memory(jobs, config.name, gpu=h100)
        else:
            check_memory(jobs, config.name, gpu=h100)
    # a short clip fits where the largest window would not: the bound defers to the example's plan
    short = _example(tmp_path / "short", seconds=1)
    config = load_pipeline(None, {"animate.dtype": "float32"})
    check_memory(make_jobs(discover(short), config, STAGES), config.name, gpu=h100)
    config = load_pipeline(None, {"animate.dtype": "float32", "animate.device": "cpu"})
    check_memory(make_jobs(discover(root), config, STAGES), config.name, gpu=h100)  # CPU runs: not checked
    assert not (root / ".scail" / "pose.json").exists()


def test_unknown_gpu_gives_flop_totals_only_and_a_user_table_adds_one(tmp_path: Path) -> None:
    root = _example(tmp_path / "ex", seconds=3)
    doc = _plan_json(str(root), "--set", "animate.device=cpu")
    est = doc["examples"][0]["estimate"]
    assert doc["gpu"]["name"] == "cpu" and doc["gpu"]["table_row"] is None
    assert est["s_per_step"] is None and est["total_s"] is None and est["pflop_total"] > 0
    text = runner.invoke(app, ["plan", str(root), "--set", "animate.device=cpu"]).stdout
    assert "no measured speed for cpu" in text
    table = tmp_path / "gpus.yaml"
    table.write_text("gpus:\n  L40S:\n    match: [L40S]\n    memory_gib: 44.4\n    tflops:\n      bf16: 300\n",
                     encoding="utf-8")
    doc = _plan_json(str(root), "--gpu", "L40S", "--gpu-table", str(table))
    est = doc["examples"][0]["estimate"]
    assert doc["gpu"]["table_row"] == "L40S" and est["stage_s"]["t5"] is None  # not measured: not invented
    # 49 frames: one window of 13 latent frames; s = FLOPs / 300 TFLOP/s
    assert est["s_per_window_step"] == pytest.approx(est["pflop_per_step"] * 1e15 / 300e12, rel=1e-3)
    result = runner.invoke(app, ["plan", str(root), "--gpu", "Z9000"])
    assert result.exit_code == 1 and "--gpu Z9000: no such GPU in the table" in result.stderr
    table.write_text("gpus:\n  X:\n    dit_s_per_step: {bf16: -1}\n", encoding="utf-8")
    result = runner.invoke(app, ["plan", str(root), "--gpu-table", str(table)])
    assert result.exit_code == 1 and "gpus.X.dit_s_per_step.bf16: expected a positive number" in result.stderr


def test_scail2_plans_segments_of_the_raw_driving_video(tmp_path: Path) -> None:
    root = _example(tmp_path / "ex")  # 288 frames at 24 fps: end-to-end reads every one
    ex = _plan_json(str(root), "--gpu", "H200", "--pipeline", "scail-2")["examples"][0]
    assert ex["frames"] == 288 and ex["frames_from"].startswith("driving.mp4 (end-to-end")
    # segments (0, 81), (76, 157), (152, 233), (207, 288): each the trained 21 latent frames
    assert ex["animate"]["windows"] == [21, 21, 21, 21] and ex["animate"]["decoded_frames"] == 324
    bf16 = load_table().find("H200").dit_s_per_step["bf16"]  # type: ignore[union-attr]
    assert ex["estimate"]["s_per_window_step"] == pytest.approx(bf16, rel=1e-3)  # + the mask conv's FLOPs


def test_a_bad_example_is_one_line_and_the_batch_plan_goes_on(tmp_path: Path) -> None:
    _example(tmp_path / "batch" / "good", seconds=1)
    bad = tmp_path / "batch" / "bad"
    bad.mkdir(parents=True)
    (bad / "driving.mp4").write_bytes(b"not a video")
    (bad / "ref.png").write_bytes(b"not an image")
    doc = _plan_json(str(tmp_path / "batch"), "--gpu", "H200")
    by_name = {e["name"]: e for e in doc["examples"]}
    assert by_name["bad"]["error"] and "\n" not in by_name["bad"]["error"]
    assert by_name["good"]["frames"] == 16 and by_name["good"]["estimate"]["total_s"] > 0

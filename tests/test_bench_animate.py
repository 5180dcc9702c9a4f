"""benchmarks/bench_animate.py at tiny size on the CPU: the product's batch runner, a distilled preset
with a random LoRA and fast mode, two clips through one loaded pipeline, every column of the split."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import bench_animate as bench
from scail.video import probe


def test_two_clips_of_a_distilled_fast_preset_report_the_split(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rows.jsonl"
    argv = ["--size", "tiny", "--device", "cpu", "--shapes", "32x64x5", "--modes", "distill-4-fast:2",
            "--workdir", str(tmp_path / "work"), "--json-out", str(out)]
    assert bench.main(argv) == 0
    first, second = (json.loads(line) for line in out.read_text().splitlines())
    for row in (first, second):
        assert row["status"] == "done" and row["mode"] == "distill-4-fast" and row["steps"] == 4
        for key in ("s_per_step", "text_encoder_s", "clip_s", "vae_encode_s", "denoise_s", "vae_decode_s",
                    "write_s", "clip_wall_s", "total_s"):
            assert row[key] > 0, key
        assert row["denoise_s"] < row["clip_wall_s"]
    # the first clip loads the models (and counts from the process launch); the second reuses them
    assert first["load_s"] > 0 and first["total_s"] == pytest.approx(first["load_s"] + first["clip_wall_s"])
    assert first["launch_to_mp4_s"] >= first["total_s"]
    assert math.isnan(second["load_s"]) and second["total_s"] == second["clip_wall_s"]
    # the product wrote each clip's MP4 with the pose video's frame count
    for clip in ("32x64x5-clip01", "32x64x5-clip02"):
        (mp4,) = (tmp_path / "work" / "distill-4-fast" / clip / "samples").glob("*_42_*.mp4")
        assert probe(mp4).num_frames == 5
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| distill-4-fast |")]
    assert [line.split("|")[3].strip() for line in table] == ["1", "2"]


def test_bad_mode_and_cold_without_files_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, words in ((["--modes", "exact,turbo"], "unknown turbo"), (["--modes", "exact:0"], "CLIPS must be"),
                        (["--cold"], "--cold loads files")):
        with pytest.raises(SystemExit) as err:
            bench.parse_args(argv)
        assert err.value.code == 2
        assert words in capsys.readouterr().err


def test_a_mode_that_cannot_load_is_a_failed_row_and_the_next_mode_still_runs(tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rows.jsonl"
    argv = ["--size", "tiny", "--device", "cpu", "--shapes", "32x64x5", "--modes", "exact,distill-6",
            "--weights-dir", str(tmp_path / "no-weights"), "--workdir", str(tmp_path / "work"), "--json-out", str(out)]
    assert bench.main(argv) == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["mode"], r["status"]) for r in rows] == [("exact", "failed"), ("distill-6", "failed")]
    assert all("no-weights" in r["error"] and "scail weights download" in r["error"] for r in rows)
    assert "exact clip 0: failed" in capsys.readouterr().err

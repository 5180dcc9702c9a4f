"""benchmarks/bench_render_long.py runs the real `scail render` at a tiny length (its 10-minute rows: benchmarks/README.md)."""

from __future__ import annotations

import pytest


def test_bench_render_long_renders_every_frame_and_reports_child_memory(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import bench_render_long as bench

    assert bench.main(["--minutes", "0.01"]) == 0  # 10 frames
    (row,) = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    frames, rss, rendered, post_rss = int(row[1]), float(row[4]), int(row[5]), float(row[7])
    assert frames == rendered == 10  # scail render wrote every pose frame
    assert rss > 50 and post_rss > 20  # the children's own peaks (MiB), read from the kernel

"""RenderStage writes rendered.mp4 (+ rendered_aligned.mp4) through the stage contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scail.config import RenderConfig
from scail.demo import dancer_pose
from scail.errors import InputError
from scail.example import Example
from scail.pose.schema import save_pose
from scail.render import render_pose
from scail.render.stage import RenderStage
from scail.stage import ProgressEvent, StageContext

SIZE = (256, 448)


def _example(tmp_path: Path, with_ref: bool) -> Example:
    ex = Example(tmp_path / "001")
    drv = dancer_pose(5, SIZE, 1, fps=16.0)
    save_pose(drv, ex.pose_data)
    if with_ref:
        ref = dancer_pose(1, SIZE, 1)
        ref.body2d[..., 0] += 0.08                          # the reference stands right of the dancer
        ref.body3d[..., 0] += 300.0
        save_pose(ref, ex.ref_pose_data)
    return ex


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def test_stage_writes_both_videos(tmp_path: Path) -> None:
    from scail.video import probe, read_frames

    ex = _example(tmp_path, with_ref=True)
    stage = RenderStage(RenderConfig())
    assert stage.inputs(ex) == [ex.pose_data, ex.ref_pose_data]
    assert stage.outputs(ex) == [ex.rendered, ex.rendered_aligned]
    events: list[ProgressEvent] = []
    ctx = StageContext(ex, "render", on_event=events.append)
    stage.run(ex, ctx)
    stage.close()
    for path in stage.outputs(ex):
        info = probe(path)
        assert (info.num_frames, info.height, info.width) == (5, *SIZE)
        assert info.fps == pytest.approx(16.0)
    plain = read_frames(ex.rendered)
    assert _psnr(plain, render_pose(ex.pose_data, overlay=True)) > 30
    aligned = read_frames(ex.rendered_aligned)
    assert _psnr(aligned, render_pose(ex.pose_data, overlay=True, reference=ex.ref_pose_data)) > 30
    assert _psnr(aligned, plain) < 25                          # the alignment moved the skeleton
    al = ctx.notes["alignment"]
    assert al["branch"] == "feet" and al["p"] > 10
    assert ctx.notes["render_frames"] == 5
    done = [e.done for e in events if e.desc == "rendered.mp4"]
    assert done[-1] == 5 and events[-1].desc == "rendered_aligned.mp4"
    assert not list(ex.root.glob(".*tmp*"))


def test_stage_without_reference_or_align(tmp_path: Path) -> None:
    ex = _example(tmp_path, with_ref=False)
    stage = RenderStage(RenderConfig(overlay=False))
    assert stage.outputs(ex) == [ex.rendered]
    stage.run(ex, StageContext(ex, "render"))
    assert ex.rendered.is_file() and not ex.rendered_aligned.exists()
    ex2 = _example(tmp_path / "b", with_ref=True)
    assert RenderStage(RenderConfig(align=False)).outputs(ex2) == [ex2.rendered]


def test_stage_missing_pose_data(tmp_path: Path) -> None:
    ex = Example(tmp_path / "empty")
    with pytest.raises(InputError, match=r"pose data not found; run 'scail pose'"):
        RenderStage(RenderConfig()).inputs(ex)


def test_render_config_rejects_inverted_bounds() -> None:
    with pytest.raises(ValueError, match="align_scale"):
        RenderConfig(align_scale=(1.4, 0.7))

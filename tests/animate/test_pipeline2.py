"""SCAIL-2 pipeline: segment plan, long-video continuation with the clean anchor, modes, on a tiny model."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import torch

from scail.animate.dit2 import SCAIL2Config, SCAIL2DiT
from scail.animate.inputs2 import Scail2Inputs
from scail.animate.pipeline2 import ANCHOR_FRAMES, SCAIL2Pipeline, plan_segments
from scail.animate.preprocess2 import compress_mask


def test_plan_segments_covers_every_frame() -> None:
    assert plan_segments(1) == [(0, 1)]
    assert plan_segments(80) == [(0, 77)]  # one segment: its 4k+1 leading frames
    assert plan_segments(81) == [(0, 81)]
    assert plan_segments(157) == [(0, 81), (76, 157)]  # official stride 76
    assert plan_segments(159) == [(0, 81), (76, 157), (78, 159)]  # the tail kept: last one moved back
    for total in range(82, 400, 7):
        segs = plan_segments(total)
        assert segs[0][0] == 0 and segs[-1][1] == total
        assert all(e - s == 81 for s, e in segs)
        for (s0, e0), (s1, _) in itertools.pairwise(segs):
            assert s0 < s1 and s1 + ANCHOR_FRAMES <= e0  # the anchor was generated before
    with pytest.raises(ValueError, match="4k\\+1"):
        plan_segments(100, length=80)


def tiny_pipeline() -> SCAIL2Pipeline:
    from scail.animate.build import build_tiny_random

    base = build_tiny_random()
    gen = torch.Generator().manual_seed(7)
    base.dit = SCAIL2DiT(SCAIL2Config.tiny()).init_weights(gen).eval().requires_grad_(False)
    return SCAIL2Pipeline(base)


def synthetic_inputs(frames: int, mode: str = "end-to-end", extra: int = 0) -> Scail2Inputs:
    gen = torch.Generator().manual_seed(3)
    h, w = 64, 96
    mask = torch.full((3, frames, h // 2, w // 2), -1.0)
    mask[2, :, :, : w // 4] = 1.0  # a blue identity on the left half
    ref_mask = torch.ones(3, 1, h, w)
    ref_mask[:2, :, :, : w // 2] = -1.0
    return Scail2Inputs(
        mode=mode,  # type: ignore[arg-type]
        ref_image=torch.rand(3, h, w, generator=gen) * 2 - 1,
        ref_mask=compress_mask(ref_mask),
        driving=torch.rand(3, frames, h // 2, w // 2, generator=gen) * 2 - 1,
        driving_mask=mask,
        fps=16.0,
        source_frames=frames,
        extra_refs=[torch.rand(3, h, w, generator=gen) * 2 - 1 for _ in range(extra)],
        extra_ref_masks=[compress_mask(ref_mask) for _ in range(extra)],
    )


def test_long_video_segments_with_clean_anchor() -> None:
    pipe = tiny_pipeline()
    calls: list[dict[str, Any]] = []
    hook = pipe.dit.register_forward_pre_hook(lambda m, a, kw: calls.append(kw), with_kwargs=True)
    progress: list[tuple[int, int | None]] = []
    try:
        result = pipe.generate(synthetic_inputs(19), "a dancer", steps=2, guide_scale=3.0, seed=5,
                               on_progress=lambda d, t: progress.append((d, t)), segment_frames=9)  # fmt: skip
    finally:
        hook.remove()
    assert result.segments == [(0, 9), (4, 13), (8, 17), (10, 19)]
    assert result.frames.shape == (19, 64, 96, 3) and result.frames.dtype == np.uint8
    assert result.used_cfg
    assert progress[-1] == (8, 8) and len(progress) == 8
    # 2 steps per segment; later segments hold the 2-latent anchor (history mask) at every DiT call
    assert [c.get("history_frames", 0) for c in calls] == [0, 0, 2, 2, 2, 2, 2, 2]
    assert all(c["driving_mask"].shape == (1, 3, 28, 4, 6) for c in calls)
    # same seed, same video
    again = pipe.generate(synthetic_inputs(19), "a dancer", steps=2, guide_scale=3.0, seed=5, segment_frames=9)
    assert np.array_equal(again.frames, result.frames)


def test_modes_and_extra_references_change_the_video() -> None:
    pipe = tiny_pipeline()
    kw: dict[str, Any] = {"steps": 1, "guide_scale": 1.0, "seed": 1}
    anim = pipe.generate(synthetic_inputs(5), **kw).frames
    replace = pipe.generate(synthetic_inputs(5, mode="replacement"), **kw).frames
    multi = pipe.generate(synthetic_inputs(5, extra=2), **kw).frames
    assert anim.shape == replace.shape == multi.shape == (5, 64, 96, 3)
    assert not np.array_equal(anim, replace) and not np.array_equal(anim, multi)


def test_needs_a_scail2_dit() -> None:
    from scail.animate.build import build_tiny_random

    with pytest.raises(TypeError, match="SCAIL2DiT"):
        SCAIL2Pipeline(build_tiny_random())


def test_fast_mode_step_cache_takes_the_scail2_inputs() -> None:
    """Fast mode's step cache wraps the SCAIL-2 DiT too; with threshold 0 it never skips, so the
    video equals the plain run."""
    from scail.animate.fast import StepCache

    pipe = tiny_pipeline()
    plain = pipe.generate(synthetic_inputs(5), steps=2, guide_scale=2.0, seed=1).frames
    pipe.base.step_cache = StepCache(pipe.dit, threshold=0.0)
    cached = pipe.generate(synthetic_inputs(5), steps=2, guide_scale=2.0, seed=1).frames
    assert pipe.base.step_cache.computed == 2
    assert np.array_equal(plain, cached)


class Stop(Exception):
    pass


def test_interrupted_long_video_resumes_from_the_saved_segments(tmp_path) -> None:
    """Killed during segment 3: a rerun reuses segments 1-2 (no DiT call for them) and gives the
    video of an uninterrupted run; another key (other settings) reuses nothing."""
    from scail.animate.pipeline2 import SegmentStore

    pipe = tiny_pipeline()
    kw: dict[str, Any] = {"steps": 2, "guide_scale": 1.0, "seed": 3, "segment_frames": 9}
    whole = pipe.generate(synthetic_inputs(17), **kw).frames  # segments (0, 9), (4, 13), (8, 17)
    store = SegmentStore(tmp_path / "segs", "key-a")

    def stop_in_segment_3(done: int, total: int | None) -> None:
        if done == 5:
            raise Stop

    with pytest.raises(Stop):
        pipe.generate(synthetic_inputs(17), on_progress=stop_in_segment_3, store=store, **kw)
    assert sorted(p.name for p in store.folder.iterdir()) == ["segment_000.npz", "segment_001.npz"]
    calls: list[int] = []
    hook = pipe.dit.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        resumed = pipe.generate(synthetic_inputs(17), store=store, **kw).frames
    finally:
        hook.remove()
    assert len(calls) == 2  # only the last segment's 2 steps
    assert np.array_equal(resumed, whole)
    assert SegmentStore(tmp_path / "segs", "key-b").load(0) is None
    store.discard()
    assert not store.folder.exists()


@pytest.mark.parametrize("fast", [False, True], ids=["exact", "fast"])
def test_two_processes_give_the_one_process_video(fast: bool) -> None:
    """Sequence parallel over 2 gloo processes (`animate.parallel.gpus=2`): each segment is sent to
    the other rank as a `SegmentJob` (masks, extra reference, the clean-history anchor rank 0 encoded)
    and the video is the 1-process one, also in fast mode (FP8, the step cache whose skip decision rank
    0 takes for both, reused guidance). Equal up to one uint8 step: each rank's matrix products see
    other row counts (float32 reassociation; `test_parallel` bounds the DiT's error at 1e-5)."""
    from scail.animate.build import build_pipeline
    from scail.config import AnimateConfig, ParallelConfig

    kw: dict[str, Any] = {"prompt": "a dancer", "steps": 3, "guide_scale": 3.0, "seed": 5, "segment_frames": 9}
    opts: dict[str, Any] = {"model": "tiny-random-scail-2", "device": "cpu", "fast": fast, "fast_uncond_every": 2}
    inputs = synthetic_inputs(13, extra=1)
    expected = SCAIL2Pipeline(build_pipeline(AnimateConfig(**opts))).generate(inputs, **kw)
    base = build_pipeline(AnimateConfig(**opts, parallel=ParallelConfig(gpus=2)))
    assert base.parallel is not None
    try:
        got = SCAIL2Pipeline(base).generate(inputs, **kw)
    finally:
        base.close()
    assert got.segments == expected.segments == [(0, 9), (4, 13)] and got.used_cfg
    diff = np.abs(got.frames.astype(np.int16) - expected.frames.astype(np.int16))
    assert diff.max() <= 1, f"{diff.max()} in frames {sorted(set(np.nonzero(diff > 1)[0].tolist()))}"

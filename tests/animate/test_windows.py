"""Long videos: temporal windows, exact output length, bit-exact resume (tiny-random, CPU)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from scail.animate.pipeline import AnimatePipeline
from scail.animate.resume import Checkpointer, save_checkpoint
from scail.animate.sampler import GuidanceReuse, SamplerState, make_schedule, sample, velocity_fn
from scail.animate.windows import (
    WindowConfig,
    WindowedDenoiser,
    blend_weights,
    latent_count,
    pixel_boundaries,
    plan_windows,
    seam_ratio,
)

SMALL = WindowConfig(frames=9, overlap=4)
"""3 latent frames per window, 1 shared: windows start every 2 latent frames (tiny and quick)."""


@pytest.fixture(scope="module")
def pipe() -> Iterator[AnimatePipeline]:
    from scail.animate.build import build_tiny_random

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is fastest on a busy 2-core machine
    yield build_tiny_random()
    torch.set_num_threads(threads)


def _inputs(frames: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(3, 32, 64, generator=g) * 2 - 1
    pose = torch.rand(3, frames, 16, 32, generator=g) * 2 - 1
    return ref, pose


# ----------------------------------------------------------------------------------------------
# The plan and the weights
# ----------------------------------------------------------------------------------------------


def test_plan_covers_the_latent_with_windows_inside_the_rope_range() -> None:
    assert plan_windows(21, 21, 4) == [(0, 21)]
    assert plan_windows(5, 21, 4) == [(0, 5)]
    assert plan_windows(49, 21, 4) == [(0, 21), (17, 38), (28, 49)]  # 192 frames; last aligned to the end
    assert plan_windows(11, 3, 1) == [(0, 3), (2, 5), (4, 7), (6, 9), (8, 11)]
    for f in range(1, 60):
        spans = plan_windows(f, 21, 4)
        assert spans[0][0] == 0 and spans[-1][1] == f
        assert all(e - s <= 21 for s, e in spans)
        assert all(b[0] < a[1] for a, b in itertools.pairwise(spans))  # neighbours overlap
    assert [latent_count(n) for n in (1, 2, 5, 6, 81, 82, 192)] == [1, 2, 2, 3, 21, 22, 49]
    with pytest.raises(ValueError, match=r"window must be 1\.\.21"):
        plan_windows(30, 22, 4)


@pytest.mark.parametrize("blend", ["linear", "cosine", "triangular"])
@pytest.mark.parametrize("f,window,overlap", [(49, 21, 4), (11, 3, 1), (30, 21, 10), (23, 21, 0), (40, 9, 7), (8, 21, 4)])
def test_blend_weights_sum_to_one_at_every_latent_frame(blend: str, f: int, window: int, overlap: int) -> None:
    spans = plan_windows(f, window, overlap)
    weights = blend_weights(spans, blend)  # type: ignore[arg-type]
    total = torch.zeros(f)
    for (s, e), w in zip(spans, weights, strict=True):
        assert w.shape == (e - s,) and bool((w > 0).all())
        total[s:e] += w
    torch.testing.assert_close(total, torch.ones(f), rtol=0, atol=1e-6)
    if blend != "triangular" and len(spans) > 1:  # frames no neighbour shares belong to one window alone
        assert weights[0][0] == 1 and weights[-1][-1] == 1


# ----------------------------------------------------------------------------------------------
# The windowed sample
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver,scale", [("euler", 4.0), ("unipc", 1.0)])
def test_one_window_equals_the_unwindowed_sample(pipe: AnimatePipeline, solver: str, scale: float) -> None:
    """A video within one window goes exactly the pre-window way: one DiT call per step on the whole latent."""
    ref, pose = _inputs(9)
    out = pipe.generate(ref, pose, prompt="a dancer", solver=solver, steps=3, shift=3.0, guide_scale=scale, seed=5)  # type: ignore[arg-type]

    from scail.animate.dit import pad_context

    pose_latent = pipe.vae.encode(pose[None]).permute(0, 2, 1, 3, 4)
    ref_latent = pipe.vae.encode(ref[None, :, None]).permute(0, 2, 1, 3, 4)
    use_cfg = scale != 1.0
    texts = ["", "a dancer"] if use_cfg else ["a dancer"]
    context = torch.cat([pad_context(c[None], pipe.dit.config.text_len) for c in pipe.encode_text(texts)])
    guidance = GuidanceReuse(scale) if use_cfg else None
    denoise = velocity_fn(pipe.dit, context, ref_latent, pose_latent, pipe.encode_image(ref), guidance)
    noise = torch.randn(16, 3, 4, 8, generator=torch.Generator().manual_seed(5))
    latent = sample(denoise, noise, make_schedule(solver, 3, 3.0))  # type: ignore[arg-type]
    assert torch.equal(out.latent, latent)
    assert torch.equal(out.video, pipe.vae.decode(latent[None])[0])
    assert out.timings_s["windows"] == 1


@pytest.mark.parametrize(
    "frames,windows",
    [(9, 1), (7, 1), (13, 2), (15, 2), (41, 5), (38, 5)],  # 4k+1 and not, for 1, 2 and 5 windows
)
def test_output_has_exactly_the_input_length(pipe: AnimatePipeline, frames: int, windows: int) -> None:
    ref, pose = _inputs(frames)
    progress: list[tuple[int, int | None]] = []
    out = pipe.generate(ref, pose, prompt="a dancer", steps=1, guide_scale=1.0, seed=1, windows=SMALL,
                        on_progress=lambda d, t: progress.append((d, t)))
    assert out.frames.shape == (frames, 32, 64, 3) and out.video.shape[1] == frames
    assert out.timings_s["windows"] == windows
    assert progress == [(k, windows) for k in range(1, windows + 1)]  # windows x steps
    assert out.frames.std() > 0


def test_windowed_stream_matches_the_whole_decode(pipe: AnimatePipeline) -> None:
    """decode_frames (what the stage writes, latent frame by latent frame) equals generate's frames."""
    ref, pose = _inputs(14)
    out = pipe.generate(ref, pose, steps=1, guide_scale=1.0, seed=2, windows=SMALL)
    streamed = torch.cat(list(pipe.decode_frames(out.latent, 14)))
    assert torch.equal(streamed, torch.from_numpy(out.frames))


def test_windows_blend_and_never_leave_a_frame_to_chance(pipe: AnimatePipeline) -> None:
    """Every window runs the DiT on at most `window` latent frames; frames in two windows get both."""
    ref, pose = _inputs(13)  # F = 4 -> windows (0, 3), (1, 4)
    lengths: list[int] = []
    real = pipe.dit.forward

    def spy(x: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
        lengths.append(int(x.shape[1]))
        return real(x, *args)

    pipe.dit.forward = spy  # type: ignore[method-assign]
    try:
        pipe.generate(ref, pose, steps=2, guide_scale=1.0, seed=2, windows=SMALL)
    finally:
        del pipe.dit.forward
    assert lengths == [3, 3, 3, 3]  # 2 windows x 2 steps, each 3 latent frames


# ----------------------------------------------------------------------------------------------
# Colour tie and the seam metric (the mechanism; its value on the real model is benchmarked)
# ----------------------------------------------------------------------------------------------


def _biased_windows(color: str) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """A denoiser whose window k predicts x0 = 0.1 * k + small noise: colour drift by construction."""
    spans = plan_windows(11, 3, 1)
    weights = blend_weights(spans, "linear")
    sigmas = torch.tensor([0.5, 0.0])
    g = torch.Generator().manual_seed(0)
    target = torch.randn(16, 11, 2, 2, generator=g) * 0.01

    def window_fn(k: int):  # type: ignore[no-untyped-def]
        s, e = spans[k]
        return lambda x, t: (x - (target[:, s:e] + 0.1 * k)) / 0.5  # v = (x - x0) / sigma

    ref = torch.zeros(16, 1, 2, 2)
    den = WindowedDenoiser(spans, weights, window_fn, sigmas, color, ref_latent=ref)  # type: ignore[arg-type]
    x = torch.zeros(16, 11, 2, 2)
    v = den(x, torch.zeros(1))
    return x - 0.5 * v, spans  # the blended data prediction


def test_colour_tie_removes_a_per_window_drift() -> None:
    drifting, _spans = _biased_windows("off")
    first, _ = _biased_windows("first")
    reference, _ = _biased_windows("reference")
    means = lambda x0: x0.mean(dim=(0, 2, 3))  # noqa: E731 - per-frame mean over channels and pixels
    assert (means(drifting)[-1] - means(drifting)[0]).item() > 0.35  # window 4 sits 0.4 above window 0
    assert abs((means(first)[-1] - means(first)[0]).item()) < 0.02
    assert means(reference).abs().max().item() < 0.02  # the reference latent is all zeros


def test_seam_ratio_sees_a_jump_at_a_window_boundary() -> None:
    video = torch.zeros(17, 3, 4, 4)
    video[9:] += 1.0  # a jump into frame 9: the seam of latent frame 3
    spans = [(0, 3), (3, 5)]
    assert pixel_boundaries(spans) == [9]
    seam, inside = seam_ratio(video, pixel_boundaries(spans))
    assert seam == pytest.approx(1.0) and inside == 0.0


# ----------------------------------------------------------------------------------------------
# Resume
# ----------------------------------------------------------------------------------------------


class _Kill(Exception):
    """Stands for a kill: the run stops right after the given unit of work."""


def _run(pipe: AnimatePipeline, path: Path, key: str = "k", kill_at: int | None = None,
         every_s: float | None = 0, seen: list[int] | None = None) -> torch.Tensor:
    ref, pose = _inputs(13, seed=3)  # F = 4 -> 2 windows

    def on_progress(done: int, total: int | None) -> None:
        if seen is not None:
            seen.append(done)
        if kill_at is not None and done == kill_at:
            raise _Kill

    cond = pipe.prepare(ref, pose, "a dancer", "", 4.0)
    return pipe.sample(cond, solver="unipc", steps=3, shift=3.0, guide_scale=4.0, seed=9, windows=SMALL,
                       on_progress=on_progress, checkpoint=Checkpointer(path, key, every_s))


@pytest.mark.parametrize("kill_at,where", [(3, "between windows"), (4, "between steps")])
def test_interrupted_and_resumed_equals_uninterrupted(pipe: AnimatePipeline, tmp_path: Path, kill_at: int,
                                                      where: str) -> None:
    """unipc (history and corrector), CFG, 2 windows x 3 steps: killed after window 1 of step 2
    (between windows) or after step 2 (between steps), then rerun."""
    whole = _run(pipe, tmp_path / "whole.safetensors")
    path = tmp_path / "ckpt.safetensors"
    with pytest.raises(_Kill):
        _run(pipe, path, kill_at=kill_at)
    assert path.is_file(), where
    seen: list[int] = []
    resumed = _run(pipe, path, seen=seen)
    assert seen == list(range(1, 6 - kill_at + 1))  # it continued (the window steps left), it did not start over
    assert torch.equal(resumed, whole), where


def test_ctrl_c_saves_the_last_finished_window(pipe: AnimatePipeline, tmp_path: Path) -> None:
    """With no timed checkpoint at all, Ctrl-C still saves the state, and the rerun is exact."""
    whole = _run(pipe, tmp_path / "whole.safetensors", every_s=None)
    path = tmp_path / "ckpt.safetensors"

    def interrupt(done: int, total: int | None) -> None:
        if done == 2:
            raise KeyboardInterrupt

    ref, pose = _inputs(13, seed=3)
    cond = pipe.prepare(ref, pose, "a dancer", "", 4.0)
    with pytest.raises(KeyboardInterrupt):
        pipe.sample(cond, solver="unipc", steps=3, shift=3.0, guide_scale=4.0, seed=9, windows=SMALL,
                    on_progress=interrupt, checkpoint=Checkpointer(path, "k", None))
    seen: list[int] = []
    assert torch.equal(_run(pipe, path, every_s=None, seen=seen), whole)
    assert len(seen) == 4  # 6 window steps, 2 done before Ctrl-C


def test_checkpoint_from_other_settings_is_discarded(pipe: AnimatePipeline, tmp_path: Path) -> None:
    whole = _run(pipe, tmp_path / "whole.safetensors")
    path = tmp_path / "ckpt.safetensors"
    bogus = SamplerState(2, torch.full((16, 4, 4, 8), 7.0), (torch.zeros(16, 4, 4, 8),), torch.zeros(16, 4, 4, 8))
    save_checkpoint(path, "other settings", bogus, None)
    seen: list[int] = []
    assert torch.equal(_run(pipe, path, key="k", seen=seen), whole)  # not used: started over
    assert len(seen) == 6
    save_checkpoint(path, "k", SamplerState(2, torch.zeros(16, 5, 4, 8)), None)  # right key, wrong latent
    seen.clear()
    assert torch.equal(_run(pipe, path, key="k", seen=seen), whole) and len(seen) == 6
    path.write_bytes(b"not a safetensors file")
    seen.clear()
    assert torch.equal(_run(pipe, path, key="k", seen=seen), whole) and len(seen) == 6


def test_checkpoints_follow_the_clock(tmp_path: Path) -> None:
    now = [0.0]
    ck = Checkpointer(tmp_path / "c.safetensors", "k", 300.0, clock=lambda: now[0])
    ck.on_step(SamplerState(0, torch.zeros(2)))
    ck.tick()
    assert ck.saves == 0
    now[0] = 301.0
    ck.tick()
    assert ck.saves == 1 and (tmp_path / "c.safetensors").is_file()
    now[0] = 400.0
    ck.tick()
    assert ck.saves == 1
    ck.discard()
    assert not (tmp_path / "c.safetensors").exists()


# ----------------------------------------------------------------------------------------------
# The long-video benchmark runs at tiny size (its GPU rows: GPU-REQUESTS / benchmarks/README.md)
# ----------------------------------------------------------------------------------------------


def test_bench_long_runs_the_product_pipeline_at_tiny_size(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import bench_long as bench

    assert bench.main(["--preset", "tiny", "--device", "cpu", "--size", "64x128", "--frames", "9,14",
                       "--window-frames", "9", "--window-overlap", "4", "--guide-scale", "1"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line[:1] == " "]
    assert [(int(r[0]), int(r[1])) for r in rows] == [(9, 1), (14, 2)]  # frames out == frames in, windows
    assert all(float(r[4]) > 0 for r in rows)  # s/frame


def test_bench_long_drift_is_the_colour_step_between_the_first_and_last_window() -> None:
    """The drift column: a video brightening by 10 per window reads 10 x (windows - 1); one window reads 0."""
    from benchmarks.bench_long import window_drift

    spans = [(0, 3), (3, 5), (5, 11)]  # pixel frames 0-8, 9-16, 17-40 (overlaps left out: one colour each)
    colour = torch.zeros(41, 3)
    for k, (s, e) in enumerate(spans):
        colour[max(0, 4 * s - 3): 4 * (e - 1) + 1] = 10.0 * k
    assert window_drift(colour, spans) == pytest.approx(10.0 * (len(spans) - 1))
    assert window_drift(colour, [(0, 11)]) == 0.0


@pytest.mark.parametrize("solver", ["dpm++", "unipc"])
def test_windows_with_fast_mode_and_every_solver(solver: str) -> None:
    """Fast mode over windows: FP8 linears and reused guidance (one guidance state per window); the step
    cache, whose residuals would grow memory with the number of windows, is off."""
    from scail.animate import attention
    from scail.animate.build import build_tiny_random
    from scail.animate.fast import apply_fast_mode

    pipe = apply_fast_mode(build_tiny_random(), cache_threshold=0.5, uncond_every=2)
    try:
        ref, pose = _inputs(15)
        out = pipe.generate(ref, pose, prompt="a dancer", solver=solver, steps=4, shift=3.0, guide_scale=4.0,  # type: ignore[arg-type]
                            seed=1, windows=SMALL)
    finally:
        attention.set_fp8(False)
    assert out.frames.shape[0] == 15 and out.timings_s["windows"] == 2
    assert out.timings_s["uncond_reused_steps"] == 2 * 2  # steps 1 and 3 of each window reuse the guidance
    assert "cache_skipped_steps" not in out.timings_s and torch.isfinite(out.latent).all()


def test_windows_with_block_offload_and_a_run_time_lora(tmp_path: Path) -> None:
    """Windows wrap the DiT call, so block offload and LoRAs work inside them: a windowed sample with a
    run-time LoRA on a block-streamed DiT equals the one with the LoRA merged into a resident DiT."""
    from scail.animate.build import build_tiny_random
    from scail.animate.dit import DiTConfig
    from scail.animate.lora import LoraSpec, apply_loras, write_random_lora
    from scail.animate.offload import offload_dit_blocks

    spec = LoraSpec(write_random_lora(tmp_path / "style.safetensors", DiTConfig.tiny(), rank=4, seed=1), 0.8)
    ref, pose = _inputs(15)

    def sample(pipe: AnimatePipeline) -> torch.Tensor:
        return pipe.generate(ref, pose, prompt="a dancer", solver="unipc", steps=2, shift=3.0, guide_scale=4.0,
                             seed=3, windows=SMALL).latent

    plain = build_tiny_random()
    merged = build_tiny_random()
    apply_loras(merged.dit, [spec], merge=True)
    streamed = build_tiny_random()
    apply_loras(streamed.dit, [spec], merge=False)
    offload = offload_dit_blocks(streamed.dit, "cpu")
    want, got, base = sample(merged), sample(streamed), sample(plain)
    assert offload.copies > 0  # the blocks did stream
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
    assert rel(got, want) < 1e-4  # merged in float32 vs added at run time: rounding only
    assert rel(base, want) > 1e-3  # and the LoRA does change the video


def test_scail_clean_removes_a_leftover_checkpoint(tmp_path: Path) -> None:
    from scail.animate.resume import CHECKPOINT_NAME
    from scail.engine import clean_example
    from scail.example import Example

    ex = Example(tmp_path / "ex")
    save_checkpoint(ex.state_dir / CHECKPOINT_NAME, "k", SamplerState(1, torch.zeros(2)), None)
    assert ex.state_dir / CHECKPOINT_NAME in clean_example(ex, ["animate"])
    assert not (ex.state_dir / CHECKPOINT_NAME).exists()

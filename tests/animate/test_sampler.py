"""Sampler parity with the official wan-branch schedulers (fixtures/scail/sampler) and the SAT Euler spec."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from scail.animate.sampler import guided, make_schedule, sample


@pytest.fixture(scope="module")
def sampler_dir(fixture_path: Callable[..., Path]) -> Path:
    """fixtures/scail/sampler (the official schedules and toy trajectories)."""
    return fixture_path("scail", "sampler")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    d = (a.double() - b.double()).abs().max().item()
    return d / max(b.double().abs().max().item(), 1e-12)


@pytest.mark.parametrize("solver", ["unipc", "dpmpp"])
@pytest.mark.parametrize("steps,shift", [(40, 3), (40, 5), (50, 5), (20, 3), (3, 3), (10, 1)])
def test_schedule_matches_official(sampler_dir: Path, solver: str, steps: int, shift: float) -> None:
    from safetensors.torch import load_file

    ref = load_file(str(sampler_dir / "schedules.safetensors"))
    key = f"{solver}_steps{steps}_shift{shift}"
    sched = make_schedule("unipc" if solver == "unipc" else "dpm++", steps, float(shift))
    assert sched.timesteps.dtype == torch.int64
    assert torch.equal(sched.timesteps, ref[f"{key}/timesteps"])  # integers fed to the DiT: exact
    assert sched.sigmas.dtype == torch.float32
    assert torch.equal(sched.sigmas, ref[f"{key}/sigmas"])


def test_schedule_json_agrees_with_safetensors(sampler_dir: Path) -> None:
    meta = json.loads((sampler_dir / "schedules.json").read_text())
    assert meta["unipc_steps40_shift3"]["timesteps"][:3] == [999.0, 991.0, 982.0]
    s = make_schedule("unipc", 40, 3.0)
    assert s.timesteps[:3].tolist() == [999, 991, 982]


def _toy(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The fixture's toy model with CFG 5: v_cond = 0.1x + t/1000, v_uncond = -0.2x + 0.5t/1000."""
    tf = t.to(torch.float32) / 1000
    return guided(0.1 * x + tf, -0.2 * x + 0.5 * tf, 5.0)


@pytest.mark.parametrize("solver", ["unipc", "dpmpp"])
@pytest.mark.parametrize("steps", [3, 40])
def test_trajectory_matches_official(sampler_dir: Path, solver: str, steps: int) -> None:
    from safetensors.torch import load_file

    ref = load_file(str(sampler_dir / "trajectories.safetensors"))
    pre = f"traj_{solver}_steps{steps}_shift3/"
    seen: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    step = [0]

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v = _toy(x, t)
        seen[step[0]] = (t.clone(), v.clone(), x.clone())
        step[0] += 1
        return v

    progress: list[tuple[int, int | None]] = []
    sched = make_schedule("unipc" if solver == "unipc" else "dpm++", steps, 3.0)
    out = sample(denoise, ref[pre + "x_init"], sched, on_progress=lambda d, n: progress.append((d, n)))
    assert progress == [(i + 1, steps) for i in range(steps)]
    stored = sorted({int(k[len(pre) + 4 : len(pre) + 6]) for k in ref if k.startswith(pre + "step")})
    for i in stored:
        t, v, _ = seen[i]
        assert torch.equal(t, ref[f"{pre}step{i:02d}_t"])
        assert _rel(v, ref[f"{pre}step{i:02d}_noise_pred"]) <= 1e-5
        x_after = seen[i + 1][2] if i + 1 < steps else out
        assert _rel(x_after, ref[f"{pre}step{i:02d}_x_after"]) <= 1e-5, f"step {i}"
    assert _rel(out, ref[pre + "x_final"]) <= 1e-5


def test_euler_schedule_is_the_sat_one() -> None:
    s = make_schedule("euler", 50, 5.0)
    # scail-model.md §6.1: sigma = [1.0, 0.995935, 0.991736, ..., 0.172414, 0.092593, 0.0]
    np.testing.assert_allclose(s.sigmas[:3].numpy(), [1.0, 0.995935, 0.991736], atol=1e-6)
    np.testing.assert_allclose(s.sigmas[-3:].numpy(), [0.172414, 0.092593, 0.0], atol=1e-6)
    # the same as Wan's shift map applied to a linear 1 -> 0 grid (max diff 6e-8)
    lin = np.linspace(1, 0, 51)
    np.testing.assert_allclose(s.sigmas.numpy(), 5 * lin / (1 + 4 * lin), atol=1e-7)
    assert s.timesteps.dtype == torch.float32
    assert torch.equal(s.timesteps, s.sigmas[:-1] * 1000)


def test_euler_update_rule() -> None:
    """x <- x + (sigma_next - sigma) * v: with v = noise - x0 exact, one run lands on x0."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(16, 2, 4, 6, generator=g)
    noise = torch.randn(16, 2, 4, 6, generator=g)
    ts: list[float] = []

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ts.append(float(t[0]))
        return noise - x0

    sched = make_schedule("euler", 50, 5.0)
    out = sample(denoise, noise, sched)
    assert len(ts) == 50 and ts[0] == 1000.0
    assert torch.allclose(out, x0, atol=1e-5)


@pytest.mark.parametrize("solver", ["euler", "unipc", "dpm++"])
def test_exact_velocity_recovers_data(solver: str) -> None:
    """On the straight path with the true velocity every solver lands on x0 (checks the signs and sigmas)."""
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 5, generator=g)
    noise = torch.randn(3, 5, generator=g)
    sched = make_schedule(solver, 12, 3.0)  # type: ignore[arg-type]
    s0 = float(sched.sigmas[0])
    start = (1 - s0) * x0 + s0 * noise
    out = sample(lambda x, t: noise - x0, start, sched)
    assert torch.allclose(out, x0, atol=1e-4)


def test_unknown_solver_rejected() -> None:
    with pytest.raises(ValueError, match="unknown solver"):
        make_schedule("heun", 10, 3.0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# The step-distilled recipes' schedules, against the numbers their own code produces
# --------------------------------------------------------------------------------------------------


def test_lightx2v_4_step_schedule_is_the_published_one() -> None:
    """LightX2V's I2V step-distill config (ModelTC/LightX2V configs/distill/wan21/
    wan_i2v_distill_lora_4step_cfg.json: denoising_step_list [1000, 750, 500, 250], sample_shift 5,
    enable_cfg false) through its WanStepDistillScheduler.set_denoising_timesteps
    (lightx2v/models/schedulers/wan/step_distill/scheduler.py): sigmas 1, 15/16, 5/6, 5/8, then 0;
    the DiT sees 1000, 937.5, 833.33, 625 (float32)."""
    from scail.animate.sampler import make_schedule

    s = make_schedule("euler", 4, 5.0, "lightx2v", [1000, 750, 500, 250])
    assert s.sigmas.dtype == torch.float32 and s.timesteps.dtype == torch.float32
    assert s.sigmas.tolist() == [1.0, 0.9375, 0.8333333134651184, 0.625, 0.0]
    assert s.timesteps.tolist() == [1000.0, 937.5, 833.3333129882812, 625.0]


def test_comfyui_simple_6_step_schedule_is_the_published_one() -> None:
    """ComfyUI's SCAIL template (euler / simple, ModelSamplingSD3 shift 5, 6 steps, CFG 1): the `simple`
    scheduler (comfy/samplers.py simple_scheduler) picks entries 999, 833, 666, 499, 333, 166 of the
    float32 table shift(t/1000), t = 1..1000 (comfy/model_sampling.py ModelSamplingDiscreteFlow), i.e.
    t = 1000, 834, 667, 500, 334, 167 -- not the linear grid 1000, 833.3, ... of `euler`."""
    from scail.animate.sampler import euler_schedule, make_schedule

    s = make_schedule("euler", 6, 5.0, "comfyui-simple")
    t = np.array([1000, 834, 667, 500, 334, 167], dtype=np.float32) / np.float32(1000)
    expected = (np.float32(5) * t / (np.float32(1) + np.float32(4) * t)).astype(np.float32)
    assert s.sigmas.tolist() == [*expected.tolist(), 0.0]
    assert s.sigmas[:3].tolist() == [1.0, 0.9617158770561218, 0.9092148542404175]
    assert torch.equal(s.timesteps, s.sigmas[:-1] * 1000)
    assert not torch.allclose(s.sigmas, euler_schedule(6, 5.0).sigmas, atol=1e-4)  # a different grid


def test_distill_schedules_need_euler_and_a_valid_list() -> None:
    from scail.animate.sampler import make_schedule

    with pytest.raises(ValueError, match="sampled with euler"):
        make_schedule("unipc", 4, 5.0, "lightx2v", [1000, 750, 500, 250])
    with pytest.raises(ValueError, match="decreasing timesteps"):
        make_schedule("euler", 4, 5.0, "lightx2v", [250, 500])

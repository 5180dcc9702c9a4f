"""Flow-matching samplers: the official SAT Euler sampler and the wan branch's UniPC / DPM++ solvers.

All three integrate the same ODE. The network predicts the velocity `v = noise - x0` of the straight
path `x_sigma = (1 - sigma) * x0 + sigma * noise`, and sigma runs from ~1 down to exactly 0.

* `euler` (SAT branch, scail-model.md §6): sigmas from the shift map applied to a linear 1 -> 0 grid,
  `x <- x + (sigma_next - sigma) * v`, the DiT sees `sigma * 1000` as float32.
* `unipc` (wan branch default): multistep UniPC, order 2, B(h) = expm1(h) ("bh2"), data prediction,
  predictor-corrector, first order on the last step. Starts at sigma_max = 0.999 (shifted).
* `dpm++` (wan branch): multistep DPM-Solver++ (2M, midpoint), first order on the first and last step.
  Starts at sigma = 1.

The wan solvers feed the DiT *integer* timesteps (`int(sigma * 1000)`, truncated) while stepping
with the float32 sigmas, exactly as the official schedulers do. Every per-step coefficient is
computed up front on the CPU in float32 (the official arithmetic), so the step loop only does tensor
arithmetic on the sample's device: no host synchronisation per step.

The math is written from the UniPC paper (Zhao et al. 2023, B(h) variant) and DPM-Solver++
(Lu et al. 2022) in the lambda = log(alpha / sigma) parameterisation, with alpha = 1 - sigma.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

if TYPE_CHECKING:
    from scail.stage import ProgressFn

Solver = Literal["euler", "unipc", "dpm++"]
SOLVERS: tuple[Solver, ...] = ("euler", "unipc", "dpm++")
NUM_TRAIN_TIMESTEPS = 1000

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""denoise(x, t) -> velocity. x: the sample (any shape); t: (1,) timestep tensor for the DiT."""


# ----------------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """The noise levels of one sampling run.

    Attributes:
        sigmas: (S+1,) float32 CPU, decreasing, last = 0. The solver steps with these.
        timesteps: (S,) CPU, what the DiT receives at each step: float32 `sigma*1000` (euler) or
            int64 `int(sigma*1000)` (unipc, dpm++).
    """

    solver: Solver
    sigmas: torch.Tensor
    timesteps: torch.Tensor

    @property
    def steps(self) -> int:
        return int(self.timesteps.shape[0])


def _shift(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """The flow shift map sigma -> shift*sigma / (1 + (shift-1)*sigma), in float64."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def euler_schedule(steps: int, shift: float) -> Schedule:
    """SAT `make_flow_timesteps(0, steps, shift, mode='normal')` (scail-model.md §6.1)."""
    u = np.arange(steps + 1, dtype=np.float64) / steps
    s = u / (shift + u - shift * u)  # official: s_i = u_i / (shift + u_i - shift*u_i)
    sigmas = torch.from_numpy(1.0 - s).to(torch.float32)
    return Schedule("euler", sigmas, sigmas[:-1] * NUM_TRAIN_TIMESTEPS)  # c_noise = sigma * 1000


def _wan_schedule(solver: Solver, base: np.ndarray, shift: float) -> Schedule:
    sigmas = _shift(base, shift)  # float64, as the official set_timesteps
    timesteps = torch.from_numpy(sigmas * NUM_TRAIN_TIMESTEPS).to(torch.int64)  # truncation
    sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)  # final sigma "zero"
    return Schedule(solver, torch.from_numpy(sigmas), timesteps)


def unipc_schedule(steps: int, shift: float) -> Schedule:
    """FlowUniPCMultistepScheduler(shift=1).set_timesteps(steps, shift=shift) of the wan branch."""
    # The training grid is 1 - linspace(1, 1/1000, 1000)[::-1] stored as float32, so its first
    # (largest) value is float32(0.999); the inference grid runs linearly from it to 0.
    sigma_max = float(np.float32(1.0 - 1.0 / NUM_TRAIN_TIMESTEPS))
    base = np.linspace(sigma_max, 0.0, steps + 1)[:-1]
    return _wan_schedule("unipc", base, shift)


def dpmpp_schedule(steps: int, shift: float) -> Schedule:
    """`retrieve_timesteps(FlowDPMSolverMultistepScheduler(shift=1), sigmas=get_sampling_sigmas(steps, shift))`."""
    base = _shift(np.linspace(1.0, 0.0, steps + 1)[:steps], shift)  # get_sampling_sigmas
    return _wan_schedule("dpm++", base, 1.0)  # the scheduler's own shift is 1: a no-op


# ----------------------------------------------------------------------------------------------
# The step-distilled recipes' schedules (Euler over a short, fixed list of noise levels)
# ----------------------------------------------------------------------------------------------

ScheduleName = Literal["default", "comfyui-simple", "lightx2v"]
SCHEDULES: tuple[ScheduleName, ...] = ("default", "comfyui-simple", "lightx2v")


def _shift_f32(t: torch.Tensor, shift: float) -> torch.Tensor:
    """The flow shift map in float32 torch arithmetic, as both ComfyUI and LightX2V compute it."""
    return shift * t / (1 + (shift - 1) * t)


def comfyui_simple_schedule(steps: int, shift: float) -> Schedule:
    """ComfyUI's `simple` scheduler on `ModelSamplingDiscreteFlow(shift)` (its SCAIL templates: euler /
    simple, `ModelSamplingSD3` shift 5, 6 steps, CFG 1).

    ComfyUI tabulates sigma(t) = shift(t / 1000) for t = 1..1000 in float32
    (comfy/model_sampling.py `ModelSamplingDiscreteFlow.set_parameters`), then takes every
    (1000 / steps)-th entry from the top, truncating the index (comfy/samplers.py `simple_scheduler`),
    and appends 0. The model sees sigma * 1000 (`timestep`); the sampler is Euler.
    """
    table = _shift_f32((torch.arange(1, NUM_TRAIN_TIMESTEPS + 1) / NUM_TRAIN_TIMESTEPS) * NUM_TRAIN_TIMESTEPS
                       / NUM_TRAIN_TIMESTEPS, shift)  # float32, ComfyUI's own operation order
    stride = NUM_TRAIN_TIMESTEPS / steps
    picked = [float(table[-(1 + int(x * stride))]) for x in range(steps)]
    sigmas = torch.tensor([*picked, 0.0], dtype=torch.float32)
    return Schedule("euler", sigmas, sigmas[:-1] * NUM_TRAIN_TIMESTEPS)


def lightx2v_schedule(step_list: list[int], shift: float) -> Schedule:
    """LightX2V's step-distill schedule (`WanStepDistillScheduler`, lightx2v/models/schedulers/wan/
    step_distill/scheduler.py; config `denoising_step_list` [1000, 750, 500, 250], `sample_shift` 5 in
    configs/distill/wan21/wan_i2v_distill_lora_4step_cfg.json).

    sigma = shift(linspace(1, 0, 1001)[:-1]) in float32, indexed at 1000 - t for each t of the list;
    the model sees sigma * 1000; each step x0 = x - sigma v, then x = x0 + sigma_next v (Euler), the last
    one to sigma 0.
    """
    if not step_list or any(not 0 < t <= NUM_TRAIN_TIMESTEPS for t in step_list) or sorted(step_list, reverse=True) != step_list:
        raise ValueError(f"denoising_step_list {step_list}: decreasing timesteps in (0, 1000], e.g. [1000, 750, 500, 250]")
    grid = _shift_f32(torch.linspace(1.0, 0.0, NUM_TRAIN_TIMESTEPS + 1)[:-1], shift)
    picked = grid[[NUM_TRAIN_TIMESTEPS - t for t in step_list]]
    sigmas = torch.cat([picked, torch.zeros(1)]).to(torch.float32)
    return Schedule("euler", sigmas, picked * NUM_TRAIN_TIMESTEPS)


def make_schedule(solver: Solver, steps: int, shift: float, schedule: ScheduleName = "default",
                  step_list: list[int] | None = None) -> Schedule:
    """The schedule of `solver` for `steps` steps and flow shift `shift`.

    `schedule` other than "default" picks a step-distilled recipe's noise levels (Euler only):
    "comfyui-simple" (`steps` steps) or "lightx2v" (the timesteps of `step_list`; `steps` is ignored).
    """
    if schedule != "default" and solver != "euler":
        raise ValueError(f"schedule {schedule!r} is sampled with euler, not {solver!r}")
    if schedule == "comfyui-simple":
        return comfyui_simple_schedule(steps, shift)
    if schedule == "lightx2v":
        return lightx2v_schedule(list(step_list or []), shift)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if solver == "euler":
        return euler_schedule(steps, shift)
    if solver == "unipc":
        return unipc_schedule(steps, shift)
    if solver == "dpm++":
        return dpmpp_schedule(steps, shift)
    raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")


# ----------------------------------------------------------------------------------------------
# Per-step coefficients (CPU, float32, computed once)
# ----------------------------------------------------------------------------------------------


class _F32:
    """float32 scalar arithmetic on CPU, the way the official schedulers compute their coefficients."""

    def __init__(self, sigmas: torch.Tensor) -> None:
        self.sigmas = sigmas.to(torch.float32)

    def sigma(self, i: int) -> torch.Tensor:
        return self.sigmas[i]

    def alpha(self, i: int) -> torch.Tensor:
        return 1 - self.sigmas[i]

    def lam(self, i: int) -> torch.Tensor:
        """lambda = log(alpha) - log(sigma); +inf at sigma = 0, -inf at sigma = 1."""
        return torch.log(self.alpha(i)) - torch.log(self.sigma(i))


@dataclass(frozen=True)
class _Update:
    """x_next = a*x + b*m0 + c*(m1 - m0) [+ d*(mt - m0)]; m* are data predictions (x0)."""

    a: float
    b: float
    c: float = 0.0
    d: float = 0.0
    rk: float = 1.0
    """divisor applied to (m1 - m0) before `c` (the official D1 = (m1 - m0) / rk)."""


def _dpmpp_plan(sigmas: torch.Tensor) -> list[_Update]:
    """DPM-Solver++(2M), midpoint, data prediction; first order at the first and last step."""
    f = _F32(sigmas)
    steps = sigmas.shape[0] - 1
    plan = []
    for i in range(steps):
        h = f.lam(i + 1) - f.lam(i)
        a = f.sigma(i + 1) / f.sigma(i)
        big_a = f.alpha(i + 1) * (torch.exp(-h) - 1.0)  # alpha_t * (e^-h - 1)
        if i == 0 or i == steps - 1:
            plan.append(_Update(a=a.item(), b=(-big_a).item()))
        else:
            r0 = (f.lam(i) - f.lam(i - 1)) / h
            # x = a*x - A*D0 - 0.5*A*D1, D0 = m0, D1 = (m0 - m1)/r0 = -(m1 - m0)/r0
            plan.append(_Update(a=a.item(), b=(-big_a).item(), c=(0.5 * big_a).item(), rk=r0.item()))
    return plan


def _unipc_b(hh: torch.Tensor, order: int) -> list[torch.Tensor]:
    """The UniPC right-hand side b_k = k! * phi_k(hh) / B(h) for k = 1..order, with B(h) = expm1(hh)."""
    b_h = torch.expm1(hh)  # bh2: B(h) = h*phi_1(h) = e^hh - 1
    h_phi_k = b_h / hh - 1
    b = []
    factorial = 1
    for k in range(1, order + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return b


def _unipc_predictor(f: _F32, i: int, order: int) -> _Update:
    """UniP-bh2 from sigma_i to sigma_{i+1}; m0 = x0 prediction at i, m1 = at i-1."""
    h = f.lam(i + 1) - f.lam(i)
    hh = -h
    b_h = torch.expm1(hh)  # bh2: B(h) = e^hh - 1 (= h*phi_1)
    a = f.sigma(i + 1) / f.sigma(i)
    b = -(f.alpha(i + 1) * b_h)
    if order == 1:
        return _Update(a=a.item(), b=b.item())
    rk = (f.lam(i - 1) - f.lam(i)) / h
    # x -= alpha_t * B(h) * rho_p * D1, rho_p = 0.5 for order 2 (the simplified UniP-2)
    return _Update(a=a.item(), b=b.item(), c=(-(f.alpha(i + 1) * b_h) * 0.5).item(), rk=rk.item())


def _unipc_corrector(f: _F32, i: int, order: int) -> _Update:
    """UniC-bh2 correcting the sample at sigma_i, given x at i-1 (corrected), m0 at i-1, mt at i, m1 at i-2."""
    h = f.lam(i) - f.lam(i - 1)
    hh = -h
    b_h = torch.expm1(hh)
    a = f.sigma(i) / f.sigma(i - 1)
    ab = f.alpha(i) * b_h
    b = -ab
    if order == 1:
        return _Update(a=a.item(), b=b.item(), d=(-(ab * 0.5)).item())
    rk = (f.lam(i - 2) - f.lam(i - 1)) / h
    bk = _unipc_b(hh, order)
    rks = torch.stack([rk, torch.ones_like(rk)])
    r = torch.stack([rks**0, rks**1])  # (2, 2) Vandermonde
    rhos = torch.linalg.solve(r, torch.stack(bk))  # float32, as the official solve
    return _Update(a=a.item(), b=b.item(), c=(-ab * rhos[0]).item(), d=(-ab * rhos[1]).item(), rk=rk.item())


def _unipc_plan(sigmas: torch.Tensor) -> tuple[list[_Update | None], list[_Update]]:
    """(correctors, predictors) per step; correctors[0] is None (nothing to correct yet)."""
    f = _F32(sigmas)
    steps = sigmas.shape[0] - 1
    orders = [min(2, steps - i, i + 1) for i in range(steps)]  # warm-up and lower_order_final
    predictors = [_unipc_predictor(f, i, orders[i]) for i in range(steps)]
    correctors: list[_Update | None] = [None] + [_unipc_corrector(f, i, orders[i - 1]) for i in range(1, steps)]
    return correctors, predictors


# ----------------------------------------------------------------------------------------------
# The sampling loop
# ----------------------------------------------------------------------------------------------


def _apply(u: _Update, x: torch.Tensor, m0: torch.Tensor, m1: torch.Tensor | None = None,
           mt: torch.Tensor | None = None) -> torch.Tensor:
    out = u.a * x + u.b * m0
    if u.c != 0.0 and m1 is not None:
        out = out + u.c * ((m1 - m0) / u.rk)
    if u.d != 0.0 and mt is not None:
        out = out + u.d * (mt - m0)
    return out


@dataclass(frozen=True)
class SamplerState:
    """Where a sampling run stands between two steps: exactly what continuing it needs.

    The solvers draw no random numbers after the initial noise (which `x` replaces), so there is
    no generator state to keep. Replaced as a whole after every step, never mutated.

    Attributes:
        step: steps done (0: `x` is the initial noise).
        x: the sample before step `step`.
        history: data predictions of the last steps, newest last (dpm++: 1, unipc: up to 2).
        last_x: unipc: the sample the next corrector starts from.
    """

    step: int
    x: torch.Tensor
    history: tuple[torch.Tensor, ...] = ()
    last_x: torch.Tensor | None = None


StepFn = Callable[[SamplerState], None]
"""on_step(state) after every step (and once with the starting state): e.g. to checkpoint."""


def sample(
    denoise: Denoiser,
    noise: torch.Tensor,
    schedule: Schedule,
    on_progress: ProgressFn | None = None,
    state: SamplerState | None = None,
    on_step: StepFn | None = None,
) -> torch.Tensor:
    """Integrate from `noise` (sigma = schedule.sigmas[0]) to a clean sample (sigma = 0).

    Args:
        denoise: `denoise(x, t) -> v`, the (guided) velocity; x has the shape of `noise`,
            t is a (1,) tensor on x's device (float32 for euler, int64 for unipc / dpm++).
        noise: the initial sample, any shape, float32 on any device (not rescaled).
        schedule: from `make_schedule`.
        on_progress: called as (done, total) after each step.
        state: continue this saved state instead of starting from `noise` (a resumed run gives
            bit for bit the sample of an uninterrupted one).
        on_step: called with the new state after each step, and with the starting state.

    Returns:
        The sample at sigma = 0, float32, same shape and device as `noise`.
    """
    state = state or SamplerState(0, noise.float())
    if on_step is not None:
        on_step(state)
    x = state.x
    timesteps = schedule.timesteps.to(x.device)  # one transfer; the loop slices on-device
    steps = schedule.steps
    if schedule.solver == "euler":
        dts = (schedule.sigmas[1:] - schedule.sigmas[:-1]).tolist()  # float32 differences
        for i in range(state.step, steps):
            v = denoise(x, timesteps[i : i + 1]).float()
            x = x + dts[i] * v
            _done(SamplerState(i + 1, x), on_step, on_progress, steps)
        return x

    sig = schedule.sigmas.tolist()
    if schedule.solver == "dpm++":
        plan = _dpmpp_plan(schedule.sigmas)
        prev: torch.Tensor | None = state.history[-1] if state.history else None
        for i in range(state.step, steps):
            v = denoise(x, timesteps[i : i + 1]).float()
            m = x - sig[i] * v  # data prediction x0
            x = _apply(plan[i], x, m, prev)
            prev = m
            _done(SamplerState(i + 1, x, (m,)), on_step, on_progress, steps)
        return x

    correctors, predictors = _unipc_plan(schedule.sigmas)
    history = list(state.history)  # data predictions of the last two steps, newest last
    last_x = state.last_x
    for i in range(state.step, steps):
        v = denoise(x, timesteps[i : i + 1]).float()
        m = x - sig[i] * v  # from the *uncorrected* sample, as the official scheduler
        corr = correctors[i]
        if corr is not None and last_x is not None:
            x = _apply(corr, last_x, history[-1], history[-2] if len(history) > 1 else None, m)
        history = [*history[-1:], m]
        last_x = x
        x = _apply(predictors[i], x, m, history[-2] if len(history) > 1 else None)
        _done(SamplerState(i + 1, x, tuple(history), last_x), on_step, on_progress, steps)
    return x


def _done(state: SamplerState, on_step: StepFn | None, on_progress: ProgressFn | None, steps: int) -> None:
    if on_step is not None:
        on_step(state)
    if on_progress is not None:
        on_progress(state.step, steps)


def guided(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: v_uncond + scale * (v_cond - v_uncond) (official order)."""
    return v_uncond + scale * (v_cond - v_uncond)


# ----------------------------------------------------------------------------------------------
# Classifier-free guidance around the DiT: the sampler's `denoise`
# ----------------------------------------------------------------------------------------------


class GuidanceReuse:
    """Classifier-free guidance that runs the unconditional branch only every `every`-th step.

    CFG is v = v_u + s (v_c - v_u) = v_c + (s - 1) d with d = v_c - v_u. The difference d changes
    slowly from step to step (FasterCache's observation on video DiTs), so in between it is reused
    from the last step that computed both branches, and only the conditional row runs: with the
    CFG rows in turn through the blocks, such a step costs half. `every` = 1 is plain CFG (exact).

    Call `velocity(run)` once per sampler step, where `run(pair)` returns the velocities of
    [uncond, cond] (pair) or of [cond] alone as (B, ...).
    """

    def __init__(self, scale: float, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"guidance reuse interval must be >= 1, got {every}")
        self.scale, self.every = scale, every
        self.reset()

    def reset(self) -> None:
        self.step = 0
        self.reused = 0
        self._delta: torch.Tensor | None = None

    def velocity(self, run: Callable[[bool], torch.Tensor]) -> torch.Tensor:
        step = self.step
        self.step += 1
        if self.every > 1 and self._delta is not None and step % self.every:
            self.reused += 1
            return run(False)[0] + (self.scale - 1.0) * self._delta
        v = run(True)
        if self.every > 1:
            self._delta = v[1] - v[0]
        return guided(v[1], v[0], self.scale)


def velocity_fn(
    net: Callable[..., torch.Tensor],
    context: torch.Tensor,
    ref_latent: torch.Tensor,
    pose_latent: torch.Tensor,
    clip_features: torch.Tensor,
    guidance: GuidanceReuse | None,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The sampler's `denoise(x, t)` around a DiT (or a `StepCache`): the (guided) velocity.

    x is the wan-layout latent (16, F, h, w). With `guidance`, `context` is [uncond, cond] and the
    DiT sees the CFG pair as batch 2 (or the cond row alone on steps that reuse the guidance);
    without, `context` is the one prompt.
    """

    def run(x: torch.Tensor, t: torch.Tensor, pair: bool) -> torch.Tensor:  # -> (B, 16, F, h, w) f32
        xin = x.permute(1, 0, 2, 3)[None]  # (1, F, 16, h, w)
        xin = xin.expand(2, -1, -1, -1, -1) if pair else xin
        ctx = context if pair else context[-1:]
        return net(xin, t, ctx, ref_latent, pose_latent, clip_features).permute(0, 2, 1, 3, 4)

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if guidance is None:
            return run(x, t, False)[0]
        return guidance.velocity(lambda pair: run(x, t, pair))

    return denoise

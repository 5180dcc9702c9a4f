"""Temporal windows: animate a pose video of any length with a DiT trained on 21 latent frames.

The DiT's RoPE tables stop at 21 latent frames (81 pixel frames, scail-model.md §4.5), and the
official code fails past them. Here the latent sequence (16, F, h, w) is covered by overlapping
windows of at most 21 latent frames:

    latent frames  0 ......................................................... F-1
    window 0       [=============)
    window 1                 [=============)
    window 2 (last, aligned to the end)    [=============)

At every sampler step each window is denoised on its own: its slice of the noisy latent and of the
pose latent, RoPE positions 1..n (inside the trained range, as for a short clip) and its own copy of
the reference tokens (position 0). The windows' velocities are blended where they overlap with
weights that sum to one at every latent frame, and the sampler takes one step on the blended
velocity of the whole latent. This is the official `RFSamplerLong` idea (unused there, §7) and
ComfyUI's / kijai's context windows: the windows are denoised *jointly*, so neighbours agree on
their shared frames at every noise level instead of being stitched after the fact.

Because windows wrap the velocity function (`WindowedDenoiser` is a `sampler.Denoiser`), the DiT
call inside is unchanged and every sampler (euler, unipc, dpm++), CFG, fast mode and block offload
work as for a short clip. One window covering the whole latent is exactly the unwindowed sample.

Blend profiles (`AnimateConfig.window_blend`), before normalisation to a sum of one per frame:
* `linear`: 1 inside, linear ramps across the frames shared with a neighbour (the VAE's tile blend);
* `cosine`: the same support with raised-cosine ramps;
* `triangular`: the official `RFSamplerLong` profile, highest at the window's centre, decaying to
  its ends over the whole window (frames far from any neighbour are still blended).

Colour drift (`AnimateConfig.window_color`): each window's data prediction x0 = x - sigma v can be
tied, per latent channel, to a reference before blending: `first` matches its mean and std on the
frames it shares with the previous window to that window's (tied) prediction, so every window is
tied to the first one through the chain of overlaps; `reference` matches its mean and std over the
window to the reference image's latent. Off by default (see the config field for why).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from scail.animate.sampler import Denoiser

Blend = Literal["linear", "cosine", "triangular"]
ColorTie = Literal["off", "first", "reference"]
MAX_WINDOW_LATENTS = 21
"""The DiT's RoPE tables cover latent frames 1..21 (81 pixel frames)."""
TEMPORAL_STRIDE = 4
"""Pixel frames per latent frame after the first (the Wan VAE's temporal compression)."""


def latent_count(frames: int) -> int:
    """Latent frames that cover `frames` pixel frames: 1 + ceil((frames - 1) / 4)."""
    if frames < 1:
        raise ValueError(f"need at least one frame, got {frames}")
    return 1 + -(-(frames - 1) // TEMPORAL_STRIDE)


def pixel_count(latents: int) -> int:
    """Pixel frames decoded from `latents` latent frames: 1 + 4 (latents - 1)."""
    return 1 + TEMPORAL_STRIDE * (latents - 1)


def plan_windows(num_latents: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) latent spans of the windows covering `num_latents` frames.

    Windows of `window` frames start every `window - overlap` frames; the last one is aligned to the
    end (it may overlap its neighbour by more than `overlap`), so no window is padded with made-up
    frames. A video of at most `window` latent frames is one window.
    """
    if not 1 <= window <= MAX_WINDOW_LATENTS:
        raise ValueError(f"window must be 1..{MAX_WINDOW_LATENTS} latent frames, got {window}")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be 0..{window - 1} latent frames, got {overlap}")
    if num_latents <= window:
        return [(0, num_latents)]
    stride = window - overlap
    starts = [*range(0, num_latents - window, stride), num_latents - window]
    return [(s, s + window) for s in starts]


@dataclass(frozen=True)
class WindowConfig:
    """Window settings in pixel frames (`AnimateConfig.window_*`)."""

    frames: int = 81
    """Window length, 4k + 1 <= 81."""
    overlap: int = 16
    """Frames shared by neighbours, a multiple of 4."""
    blend: Blend = "linear"
    color: ColorTie = "off"

    def plan(self, num_latents: int) -> list[tuple[int, int]]:
        """The windows' latent spans for a latent of `num_latents` frames."""
        return plan_windows(num_latents, latent_count(self.frames), self.overlap // TEMPORAL_STRIDE)


def _ramp(length: int, cosine: bool) -> torch.Tensor:
    """Weights rising across `length` shared frames: (j + 1) / (length + 1), j = 0..length-1.

    Two neighbours' ramps over the same frames sum to exactly one before normalisation.
    """
    r = (torch.arange(length, dtype=torch.float64) + 1) / (length + 1)
    return 0.5 - 0.5 * torch.cos(math.pi * r) if cosine else r


def blend_weights(spans: Sequence[tuple[int, int]], profile: Blend) -> list[torch.Tensor]:
    """Per-window weights (n_k,) float32 on the CPU; at every latent frame they sum to one.

    `linear` / `cosine` ramp across the frames a window shares with each neighbour; `triangular`
    weighs frame j of an n-frame window min(j + 1, n - j).
    """
    num = max(e for _, e in spans)
    raw: list[torch.Tensor] = []
    for k, (s, e) in enumerate(spans):
        n = e - s
        if profile == "triangular":
            j = torch.arange(n, dtype=torch.float64)
            w = torch.minimum(j + 1, n - j)
        elif profile in ("linear", "cosine"):
            w = torch.ones(n, dtype=torch.float64)
            if k > 0:
                shared = max(0, spans[k - 1][1] - s)
                w[:shared] = torch.minimum(w[:shared], _ramp(shared, profile == "cosine"))
            if k < len(spans) - 1:
                shared = max(0, e - spans[k + 1][0])
                w[n - shared :] = torch.minimum(w[n - shared :], _ramp(shared, profile == "cosine").flip(0))
        else:
            raise ValueError(f"unknown window blend {profile!r}; choose linear, cosine or triangular")
        raw.append(w)
    total = torch.zeros(num, dtype=torch.float64)
    for (s, e), w in zip(spans, raw, strict=True):
        total[s:e] += w
    if bool((total <= 0).any()):
        raise ValueError(f"windows {list(spans)} leave latent frames uncovered")
    return [(w / total[s:e]).float() for (s, e), w in zip(spans, raw, strict=True)]


def boundaries(spans: Sequence[tuple[int, int]]) -> list[int]:
    """Latent frames b where a window starts or ends inside the video (a seam between b-1 and b)."""
    num = max(e for _, e in spans)
    edges = {s for s, _ in spans} | {e for _, e in spans}
    return sorted(b for b in edges if 0 < b < num)


def pixel_boundaries(spans: Sequence[tuple[int, int]]) -> list[int]:
    """The seams of `boundaries` in pixel frames: latent frame b starts at pixel frame 4b - 3."""
    return [TEMPORAL_STRIDE * (b - 1) + 1 for b in boundaries(spans)]


def seam_ratio(frames: torch.Tensor, seams: Sequence[int]) -> tuple[float, float]:
    """(mean |frame t - frame t-1| at the seams, the same elsewhere) of frames (T, ...).

    A visible jump at the window boundaries shows as a first number well above the second.
    """
    x = frames.double()
    diff = (x[1:] - x[:-1]).abs().flatten(1).mean(dim=1)  # (T-1,): diff[t-1] is the change into frame t
    at = [t - 1 for t in seams if 0 < t < frames.shape[0]]
    inside = [i for i in range(diff.shape[0]) if i not in set(at)]
    seam = diff[at].mean().item() if at else float("nan")
    rest = diff[inside].mean().item() if inside else float("nan")
    return seam, rest


# ----------------------------------------------------------------------------------------------
# The windowed velocity
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Partial:
    """The part of one sampler step already computed: windows [0, done) blended into `acc`.

    Replaced as a whole after each window (never mutated), so an interrupt leaves a consistent one.
    `prev_x0` is the tied data prediction of window done-1 on the frames it shares with window
    done (colour tie `first` only).
    """

    step: int
    done: int
    acc: torch.Tensor
    prev_x0: torch.Tensor | None = None


WindowFn = Callable[[int], Denoiser]
"""window_fn(k) -> the denoiser of window k: velocity of its latent slice (16, n_k, h, w)."""


class WindowedDenoiser:
    """The blended velocity of the whole latent over temporal windows: a `sampler.Denoiser`.

    Args:
        spans: the windows' [start, end) latent frames (`plan_windows`).
        weights: their blend weights (`blend_weights`), moved to the latent's device here.
        window_fn: builds the denoiser of window k once (each window keeps its own CFG/step-cache state).
        sigmas: the schedule's sigmas (the colour tie converts velocities to data predictions).
        color: colour tie, see the module docstring.
        ref_latent: (16, 1, h, w) the reference's latent (colour tie `reference`).
        on_window: called as (step, windows done) after each window, e.g. to report progress or
            checkpoint (it may raise to interrupt; `partial` is then consistent).
        start_step: the sampler step of the first call (a resumed run).
        partial: a partially computed step to continue (a resumed run).
    """

    def __init__(
        self,
        spans: Sequence[tuple[int, int]],
        weights: Sequence[torch.Tensor],
        window_fn: WindowFn,
        sigmas: torch.Tensor,
        color: ColorTie = "off",
        ref_latent: torch.Tensor | None = None,
        on_window: Callable[[int, int], None] | None = None,
        start_step: int = 0,
        partial: Partial | None = None,
    ) -> None:
        if color == "reference" and ref_latent is None:
            raise ValueError("colour tie 'reference' needs ref_latent")
        self.spans = list(spans)
        self.weights = list(weights)
        self.denoisers = [window_fn(k) for k in range(len(self.spans))]
        self.sigmas = sigmas.tolist()
        self.color = color
        self.ref_latent = ref_latent
        self.on_window = on_window
        self.step = start_step
        self.partial = partial

    @property
    def num_windows(self) -> int:
        return len(self.spans)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: (16, F, h, w) -> blended velocity (16, F, h, w) float32."""
        step = self.step
        part = self.partial if self.partial is not None and self.partial.step == step else None
        if part is None:
            part = Partial(step, 0, torch.zeros_like(x, dtype=torch.float32))
            self.partial = part
        for k in range(part.done, self.num_windows):
            s, e = self.spans[k]
            v = self.denoisers[k](x[:, s:e], t).float()  # (16, n, h, w)
            prev_x0 = None
            if self.color != "off":
                v, prev_x0 = self._tie(x[:, s:e], v, k, part.prev_x0, step)
            if self.num_windows == 1:
                acc = v  # exactly the unwindowed velocity
            else:
                acc = part.acc.clone()
                acc[:, s:e] += self.weights[k].to(v.device).view(1, -1, 1, 1) * v
            part = Partial(step, k + 1, acc, prev_x0)
            self.partial = part
            if self.on_window is not None:
                self.on_window(step, k + 1)
        self.step += 1
        return part.acc

    def _tie(
        self, x: torch.Tensor, v: torch.Tensor, k: int, prev_x0: torch.Tensor | None, step: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Colour tie of window k: match its data prediction's per-channel mean/std to the target."""
        sigma = self.sigmas[step]
        x0 = x.float() - sigma * v  # (16, n, h, w) data prediction
        s, e = self.spans[k]
        if self.color == "reference":
            assert self.ref_latent is not None
            x0 = _match(x0, x0, self.ref_latent.to(x0.device).float())
        elif prev_x0 is not None and k > 0:
            shared = self.spans[k - 1][1] - s  # frames shared with window k-1
            if shared > 0:
                x0 = _match(x0, x0[:, :shared], prev_x0)
        nxt = self.spans[k + 1][0] if k + 1 < self.num_windows else e
        keep = x0[:, nxt - s :].clone() if nxt < e else None  # what window k+1 will be tied to
        return (x.float() - x0) / sigma, keep


def _match(x: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """x with the per-channel mean and std of `source` (a part of x) moved to those of `target`.

    Tensors (C, ...); the std ratio is clamped to [0.5, 2] so a near-constant region cannot blow up.
    """
    dims = tuple(range(1, source.ndim))
    mu_s, sd_s = source.mean(dim=dims, keepdim=True), source.std(dim=dims, keepdim=True)
    mu_t, sd_t = target.mean(dim=dims, keepdim=True), target.std(dim=dims, keepdim=True)
    ratio = (sd_t / sd_s.clamp(min=1e-6)).clamp(0.5, 2.0)
    return (x - mu_s) * ratio + mu_t

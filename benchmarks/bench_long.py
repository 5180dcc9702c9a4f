"""Long videos through the product's AnimatePipeline: cost per output frame, peak memory and seams.

Builds the `AnimatePipeline` that `scail run` builds (`build.build_pipeline` with random weights
at the chosen width: bf16, rows in turn, compiled blocks on CUDA, umT5 and CLIP waiting on the CPU)
and animates a synthetic pose video (a bar sweeping across the frame) of
each requested length the way the animate stage does: `prepare` (pose streamed in VAE chunks),
`sample` over temporal windows, and `decode_frames` streamed into the real H.264 writer. Per length
it prints one row:

    frames  windows  sample_s  decode_s  s/frame  prep_gib  peak_gib  rss_gib  seam  inside  latent_seam  latent_inside  drift

* s/frame: (encode + sampling + decode + write) / output frames; linear cost keeps it flat with length;
* prep_gib: peak GPU memory while encoding (umT5 and CLIP visit the GPU); peak_gib: peak GPU memory
  while sampling, decoding and writing (torch.cuda.max_memory_allocated); rss_gib: host peak;
* seam / inside: mean |frame t - frame t-1| of the decoded uint8 video at the windows' boundaries /
  everywhere else (pixel and latent); a visible seam shows as seam well above inside;
* drift: mean |RGB mean of the last window's frames - RGB mean of the first window's| (uint8 units),
  the colour drift `animate.window_color` is meant to hold down (0 for one window).

`--color off,first,reference` compares the colour ties on the same inputs (the default `off` was
chosen by these columns: benchmarks/README.md).

    PYTHONPATH=. python benchmarks/bench_long.py --preset 14b --frames 81,161,321 --steps 1
    PYTHONPATH=. python benchmarks/bench_long.py --preset tiny --device cpu --size 64x128 --frames 9,17

With random weights the video is noise-like, so the seam numbers compare blends and colour ties
with each other, not with the real model's look.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

    from scail.animate.pipeline import AnimatePipeline

GIB = 2**30


def _random_weights(model: nn.Module, device: torch.device, dtype: torch.dtype, seed: int,
                    keep_fp32: frozenset[str] = frozenset()) -> nn.Module:
    """`model` (built on meta) given random weights made on `device` (`random_weights.random_state`)."""
    from scail.animate.random_weights import random_state

    model.load_state_dict(random_state(model, device, dtype, seed, keep_fp32.__contains__), strict=True, assign=True)
    return model.eval().requires_grad_(False)


def random_pipeline(preset: str, device: torch.device, seed: int = 0, compile_dit: bool | None = None) -> AnimatePipeline:
    """The pipeline `scail run` builds (`build.build_pipeline` of the default settings on `device`) with
    random networks (`random_weights.RandomWeights`): `14b` (released sizes) or `tiny`."""
    from scail.animate.build import build_pipeline
    from scail.animate.random_weights import RandomWeights
    from scail.config import AnimateConfig

    arch = None
    if preset != "14b":
        from scail.animate.clip import CLIPConfig
        from scail.animate.dit import DiTConfig
        from scail.animate.t5 import T5Config
        from scail.animate.vae import VAEConfig
        from scail.animate.weights import Architectures

        arch = Architectures(DiTConfig.tiny(), VAEConfig.tiny(), T5Config.tiny(), CLIPConfig.tiny())
    compile_mode = "auto" if compile_dit is None else "on" if compile_dit else "off"
    config = AnimateConfig(device=str(device), compile=compile_mode)
    return build_pipeline(config, weights=RandomWeights(seed, arch))


def sweeping_bar(frames: int, size_hw: tuple[int, int]) -> torch.Tensor:
    """(3, T, H/2, W/2) float32 in [-1, 1]: a bright bar crossing the frame once per 64 frames."""
    import torch

    h, w = size_hw[0] // 2, size_hw[1] // 2
    x = torch.arange(w, dtype=torch.float32)
    t = torch.arange(frames, dtype=torch.float32)
    centre = (t % 64) / 64 * w  # (T,)
    bar = ((x[None] - centre[:, None]).abs() < w / 16).float()  # (T, W)
    video = bar[None, :, None, :].expand(3, frames, h, w).clone() * 2 - 1
    video[1] *= 0.5  # a colour, not grey
    return video


@dataclass
class Row:
    frames: int
    windows: int
    sample_s: float
    decode_s: float
    s_per_frame: float
    prep_gib: float
    peak_gib: float
    rss_gib: float
    seam: float
    inside: float
    latent_seam: float
    latent_inside: float
    drift: float

    HEADER = ("frames  windows  sample_s  decode_s  s/frame  prep_gib  peak_gib  rss_gib     seam   inside  "
              "latent_seam  latent_inside   drift")

    def line(self) -> str:
        return (f"{self.frames:6d}  {self.windows:7d}  {self.sample_s:8.1f}  {self.decode_s:8.1f}  "
                f"{self.s_per_frame:7.3f}  {self.prep_gib:8.2f}  {self.peak_gib:8.2f}  {self.rss_gib:7.2f}  {self.seam:7.3f}  "
                f"{self.inside:7.3f}  {self.latent_seam:11.4f}  {self.latent_inside:13.4f}  {self.drift:6.3f}")


def run_length(pipe: AnimatePipeline, frames: int, size_hw: tuple[int, int], steps: int, guide_scale: float,
               windows: object, out_dir: Path) -> Row:
    """One sample of `frames` frames, as the animate stage runs it; the decode streams into an MP4."""
    import numpy as np
    import torch

    from scail.animate.windows import WindowConfig, boundaries, pixel_boundaries, seam_ratio
    from scail.cache import peak_rss_mb
    from scail.video import VideoWriter

    assert isinstance(windows, WindowConfig)
    dev = pipe.device
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(dev)
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(3, *size_hw, generator=g) * 2 - 1
    t0 = time.perf_counter()
    cond = pipe.prepare(ref, sweeping_bar(frames, size_hw), "a person dancing", "", guide_scale)
    prep_peak = 0.0
    if cuda:  # the encoders' visit (umT5 moves to the GPU to encode) is reported apart from sampling
        torch.cuda.synchronize()
        prep_peak = torch.cuda.max_memory_allocated(dev) / GIB
        torch.cuda.reset_peak_memory_stats(dev)
    latent = pipe.sample(cond, solver="euler", steps=steps, shift=5.0, guide_scale=guide_scale, seed=42,
                         windows=windows)
    if cuda:
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    spans = windows.plan(cond.num_latents)
    seams = set(pixel_boundaries(spans))
    at, rest, prev, n = [], [], None, 0
    colour = []  # per-frame mean RGB
    with VideoWriter(out_dir / f"long_{frames}.mp4", 16.0) as writer:
        for piece in pipe.decode_frames(latent, cond.num_frames):  # (n, H, W, 3) uint8 on the device
            for frame in piece:
                cur = frame.float()
                colour.append(cur.mean(dim=(0, 1)).cpu())
                if prev is not None:
                    (at if n in seams else rest).append((cur - prev).abs().mean().item())
                prev = cur
                writer.write(frame.cpu().numpy())
                n += 1
    if cuda:
        torch.cuda.synchronize()
    t2 = time.perf_counter()
    lat_seam, lat_inside = seam_ratio(latent.transpose(0, 1), boundaries(spans))
    peak = torch.cuda.max_memory_allocated(dev) / GIB if cuda else 0.0
    drift = window_drift(torch.stack(colour), spans)
    return Row(frames=n, windows=len(spans), sample_s=t1 - t0, decode_s=t2 - t1, s_per_frame=(t2 - t0) / n,
               prep_gib=prep_peak, peak_gib=peak, rss_gib=(peak_rss_mb() or 0.0) / 1024,
               seam=float(np.mean(at)) if at else float("nan"), inside=float(np.mean(rest)) if rest else float("nan"),
               latent_seam=lat_seam, latent_inside=lat_inside, drift=drift)


def window_drift(colour: torch.Tensor, spans: Sequence[tuple[int, int]]) -> float:
    """Mean |mean colour of the last window's pixel frames - the first window's| of colour (T, 3).

    A latent span (s, e) covers pixel frames 4s-3 .. 4(e-1) (latent frame 0 is pixel frame 0)."""
    def frames(span: tuple[int, int]) -> torch.Tensor:
        s, e = span
        return colour[max(0, 4 * s - 3): min(colour.shape[0], 4 * (e - 1) + 1)]

    if len(spans) < 2:
        return 0.0
    return (frames(spans[-1]).mean(0) - frames(spans[0]).mean(0)).abs().mean().item()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=("14b", "tiny"), default="14b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", default="512x896", help="H x W of the output (multiples of 32)")
    p.add_argument("--frames", default="81,161,321", help="comma-separated output lengths")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--guide-scale", type=float, default=4.0, help="CFG scale (1: one branch)")
    p.add_argument("--window-frames", type=int, default=81)
    p.add_argument("--window-overlap", type=int, default=16)
    p.add_argument("--blend", default="linear", help="comma-separated: linear, cosine, triangular")
    p.add_argument("--color", default="off", help="comma-separated: off, first, reference")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto")
    args = p.parse_args(argv)

    import torch

    from scail.animate.windows import WindowConfig

    h, w = (int(v) for v in args.size.lower().split("x"))
    device = torch.device(args.device)
    compile_dit = None if args.compile == "auto" else args.compile == "on"
    t0 = time.perf_counter()
    pipe = random_pipeline(args.preset, device, compile_dit=compile_dit)
    print(f"# {args.preset} random pipeline on {device} built in {time.perf_counter() - t0:.1f}s; "
          f"{h}x{w}, {args.steps} step(s), guide {args.guide_scale}, windows {args.window_frames}/{args.window_overlap}",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for blend in args.blend.split(","):
            for color in args.color.split(","):
                windows = WindowConfig(args.window_frames, args.window_overlap, blend, color)  # type: ignore[arg-type]
                print(f"# blend {blend}, colour tie {color}", flush=True)
                print(Row.HEADER, flush=True)
                for frames in (int(f) for f in args.frames.split(",")):
                    row = run_length(pipe, frames, (h, w), args.steps, args.guide_scale, windows, Path(tmp))
                    print(row.line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

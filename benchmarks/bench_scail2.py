"""SCAIL-2 against SCAIL-Preview through the product's pipelines: s/step and peak memory per mode.

Builds the pipeline `scail run` builds (`bench_long.random_pipeline`: `build.build_pipeline` with random
weights at the released sizes: bf16 DiT with rows in turn and compiled blocks on CUDA, umT5 and CLIP
waiting on the CPU),
with a random full-size SCAIL-2 DiT (`SCAIL2DiT`, 1,307 tensors). The SCAIL-Preview baseline is a
`DiT` sharing the same tensors (without the mask conv), run through `AnimatePipeline.generate`; each
SCAIL-2 mode runs through `SCAIL2Pipeline.generate` on synthetic inputs (a random reference and
driving video, two painted identity masks):

    model    mode          tokens   s/step   peak_gib   total_s

* s/step: the wall time of the last denoising step (the first one of a shape compiles);
* peak_gib: torch.cuda.max_memory_allocated over the whole generate call (encode, sample, decode);
* total_s: the whole generate call (VAE encode, encoders, sampling, decode).

Modes: `end-to-end` (animation; the pose-driven mode is the same DiT call), `replacement` (same
tokens, other RoPE), `multiref` (two extra references: +2 * (H/16)(W/16) tokens). A continuation
segment has the tokens of its mode (the anchor lives in the video latent).

    PYTHONPATH=. python benchmarks/bench_scail2.py --preset 14b --steps 2
    PYTHONPATH=. python benchmarks/bench_scail2.py --preset tiny --device cpu --size 64x96 --frames 9
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from scail.animate.inputs2 import Scail2Inputs

GIB = 2**30
MODES = ("preview", "end-to-end", "replacement", "multiref")


@dataclass
class Row:
    model: str
    mode: str
    tokens: int
    s_per_step: float
    peak_gib: float
    total_s: float

    HEADER = f"{'model':<14}{'mode':<13}{'tokens':>8}{'s/step':>9}{'peak_gib':>10}{'total_s':>9}"

    def line(self) -> str:
        return (f"{self.model:<14}{self.mode:<13}{self.tokens:>8}{self.s_per_step:>9.2f}{self.peak_gib:>10.1f}"
                f"{self.total_s:>9.1f}")


def synthetic_inputs(mode: str, frames: int, size_hw: tuple[int, int], seed: int = 0) -> Scail2Inputs:
    """A random reference and driving video with two identities (blue left, red right) painted as the
    mask stage paints them: driving black background / reference white (replacement: the opposite)."""
    import numpy as np
    import torch

    from scail.animate.identity_masks import PALETTE_RGB, background_for, paint
    from scail.animate.inputs2 import Scail2Inputs
    from scail.animate.preprocess2 import compress_mask

    h, w = size_hw
    replace = mode == "replacement"
    gen = torch.Generator().manual_seed(seed)

    def person_masks(hh: int, ww: int) -> list[np.ndarray]:
        left, right = np.zeros((hh, ww), bool), np.zeros((hh, ww), bool)
        left[hh // 6 : hh - hh // 8, ww // 10 : ww // 2 - ww // 12] = True
        right[hh // 5 : hh - hh // 10, ww // 2 + ww // 12 : ww - ww // 10] = True
        return [left, right]

    def as_video(img: np.ndarray, n: int) -> torch.Tensor:  # (H, W, 3) uint8 -> (3, n, H, W) in [-1, 1]
        x = torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1
        return x[:, None].expand(-1, n, -1, -1).contiguous()

    colours = [PALETTE_RGB[0], PALETTE_RGB[1]]
    drive = paint(person_masks(h // 2, w // 2), colours, background_for("driving", replace))
    ref = paint(person_masks(h, w), colours, background_for("reference", replace))
    ref_mask = compress_mask(as_video(ref, 1))
    extra = 2 if mode == "multiref" else 0
    return Scail2Inputs(
        mode="replacement" if replace else "end-to-end",
        ref_image=torch.rand(3, h, w, generator=gen) * 2 - 1,
        ref_mask=ref_mask,
        driving=torch.rand(3, frames, h // 2, w // 2, generator=gen) * 2 - 1,
        driving_mask=as_video(drive, frames),
        fps=16.0,
        source_frames=frames,
        extra_refs=[torch.rand(3, h, w, generator=gen) * 2 - 1 for _ in range(extra)],
        extra_ref_masks=[ref_mask for _ in range(extra)],
    )


def scail2_dit_and_preview(preset: str, device: torch.device, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A random SCAIL-2 DiT at the preset's size and a SCAIL-Preview DiT sharing its tensors."""
    import torch

    from benchmarks.bench_long import _random_weights
    from scail.animate.dit import DiT, DiTConfig, is_fp32_param
    from scail.animate.dit2 import SCAIL2Config, SCAIL2DiT

    config = SCAIL2Config.scail_14b() if preset == "14b" else SCAIL2Config.tiny()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device("meta"):
        dit2 = SCAIL2DiT(config)
        preview = DiT(DiTConfig.scail_14b() if preset == "14b" else DiTConfig.tiny())
    fp32 = frozenset(n for n, _ in dit2.named_parameters() if is_fp32_param(n))
    _random_weights(dit2, device, dtype, seed, fp32)
    shared = {k: v for k, v in dit2.state_dict().items() if not k.startswith("patch_embedding_mask.")}
    preview.load_state_dict(shared, strict=True, assign=True)
    return dit2, preview.eval().requires_grad_(False)


def tokens(frames: int, size_hw: tuple[int, int], extra: int) -> int:
    f, hp, wp = 1 + (frames - 1) // 4, size_hw[0] // 16, size_hw[1] // 16
    return (extra + 1 + f) * hp * wp + f * (hp // 2) * (wp // 2)


def run(preset: str, device: torch.device, size_hw: tuple[int, int], frames: int, steps: int, modes: Sequence[str],
        compile_dit: bool | None, guide_scale: float = 4.0) -> list[Row]:
    import torch

    from benchmarks.bench_long import random_pipeline
    from scail.animate.pipeline2 import SCAIL2Pipeline

    on_gpu = device.type == "cuda"
    pipe = random_pipeline(preset, device, compile_dit=False)  # its own DiT is replaced below
    pipe.dit = None  # type: ignore[assignment]
    gc.collect()
    if on_gpu:
        torch.cuda.empty_cache()
    dit2, preview = scail2_dit_and_preview(preset, device)
    for dit in (dit2, preview):
        dit.set_rows_in_turn(on_gpu)  # as build_scail_preview
        if compile_dit if compile_dit is not None else on_gpu:
            dit.compile_blocks()
    if on_gpu:
        torch.cuda.empty_cache()
    rows = []
    for mode in modes:
        stamps: list[float] = []

        def progress(done: int, total: int | None, stamps: list[float] = stamps) -> None:
            if on_gpu:
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

        inputs = synthetic_inputs("end-to-end" if mode == "preview" else mode, frames, size_hw)
        if on_gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        if mode == "preview":
            pipe.dit = preview  # type: ignore[assignment]
            pipe.generate(inputs.ref_image, inputs.driving, "a person dancing", steps=steps, guide_scale=guide_scale,
                          on_progress=progress)  # fmt: skip
        else:
            pipe.dit = dit2  # type: ignore[assignment]
            SCAIL2Pipeline(pipe).generate(inputs, "a person dancing", steps=steps, guide_scale=guide_scale,
                                          on_progress=progress)  # fmt: skip
        total = time.perf_counter() - t0
        step = stamps[-1] - stamps[-2] if len(stamps) >= 2 else float("nan")
        peak = torch.cuda.max_memory_allocated(device) / GIB if on_gpu else float("nan")
        rows.append(Row("scail-preview" if mode == "preview" else "scail-2", mode,
                        tokens(frames, size_hw, 2 if mode == "multiref" else 0), step, peak, total))  # fmt: skip
        print(rows[-1].line(), flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=("14b", "tiny"), default="14b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", default="512x896", help="H x W (multiples of 32)")
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--steps", type=int, default=2, help="denoising steps per run (s/step is the last one's)")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated: {', '.join(MODES)}")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--json-out", default="")
    args = p.parse_args(argv)

    import torch

    h, w = (int(v) for v in args.size.lower().split("x"))
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        p.error(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
    device = torch.device(args.device)
    print(f"# {args.preset} random weights on {device}; {h}x{w}x{args.frames}, {args.steps} step(s), CFG pair",
          flush=True)
    print(Row.HEADER, flush=True)
    compile_dit = None if args.compile == "auto" else args.compile == "on"
    rows = run(args.preset, device, (h, w), args.frames, args.steps, modes, compile_dit)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump({"device": str(device), "size_hw": [h, w], "frames": args.frames, "steps": args.steps,
                       "rows": [asdict(r) for r in rows]}, fh, indent=1)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

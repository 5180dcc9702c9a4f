"""Helpers of the scale-out tests (tests/animate/test_parallel.py, tests/test_ray_executor.py): a
4-head tiny DiT and its inputs for the spawned sequence-parallel ranks (they import this module by
name), and tiny-random example folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from scail.animate.dit import DiT, DiTConfig
from scail.animate.dit2 import SCAIL2Config, SCAIL2DiT
from scail.video import write_video

# 4 heads, so sequence parallel runs on 2 and 4 ranks (the tiny preset has 2)
CONFIG = DiTConfig(dim=64, num_heads=4, num_layers=2, ffn_dim=128, freq_dim=32, text_dim=32, clip_dim=32)
# latent 3 frames of 4x4: ref 4 + video 12 + pose 3 = 19 tokens, odd on 2 ranks and on 4 (padding)
FRAMES, H, W = 3, 4, 4
TOKENS = 19


# SCAIL-2: one extra reference (4 tokens) before the 19: 23 tokens, odd on 2 ranks and on 4
TOKENS_SCAIL2 = 23


def tiny_dit(scail2: bool = False) -> DiT:
    dit = SCAIL2DiT(SCAIL2Config.of(CONFIG)) if scail2 else DiT(CONFIG)
    return dit.init_weights(torch.Generator().manual_seed(7)).eval().requires_grad_(False)


def inputs(batch: int = 2, scail2: bool = False) -> dict[str, Any]:
    """A CFG pair: two rows of x and text, the reference, pose and CLIP tokens shared (batch 1).

    scail2: plus SCAIL-2's inputs: identity masks, one extra reference, a 1-latent clean history
    anchor, replacement mode (its RoPE offsets)."""
    g = torch.Generator().manual_seed(11)
    c = CONFIG.latent_channels
    out: dict[str, Any] = {
        "x": torch.randn(batch, FRAMES, c, H, W, generator=g),
        "timesteps": torch.tensor([700.0]),
        "context": torch.randn(batch, 6, CONFIG.text_dim, generator=g),
        "ref_latent": torch.randn(1, 1, c, H, W, generator=g),
        "pose_latent": torch.randn(1, FRAMES, c, H // 2, W // 2, generator=g),
        "clip_features": torch.randn(1, 5, CONFIG.clip_dim, generator=g),
    }
    if scail2:
        m = SCAIL2Config.of(CONFIG).mask_dim
        out |= {
            "ref_mask": torch.rand(1, 1, m, H, W, generator=g),
            "driving_mask": torch.rand(1, FRAMES, m, H // 2, W // 2, generator=g),
            "extra_refs": torch.randn(1, 1, c, H, W, generator=g),
            "extra_ref_masks": torch.rand(1, 1, m, H, W, generator=g),
            "history_frames": 1,
            "replace": True,
        }
    return out


def forward_worker(
    rank: int, world: int, port: int, out_dir: str, cases: list[tuple[int, bool, bool, bool]]
) -> None:
    """One rank: the parallel forward of `tiny_dit` on `inputs` for each (cfg groups, rows in turn,
    compiled blocks, SCAIL-2) case, saved as rank<r>-case<i>.pt (one process group serves every case).

    Compiled cases use the aot_eager backend (no C compiler needed) with errors raised, and fail on
    any graph break: the all-to-all attention must trace as the custom op."""
    import torch._dynamo
    import torch.distributed as dist
    from torch._dynamo.utils import counters

    from scail.animate.launch import exit_rank
    from scail.animate.parallel import install, make_groups

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        for i, (cfg, rows_in_turn, compiled, scail2) in enumerate(cases):
            dit = tiny_dit(scail2).set_rows_in_turn(rows_in_turn)
            if compiled:
                dit.compile_blocks(backend="aot_eager")
                torch._dynamo.config.suppress_errors = False
                counters.clear()
            dit = install(dit, make_groups(world, cfg, rank))
            with torch.no_grad():
                out = dit(**inputs(scail2=scail2))
            if compiled and (counters["graph_break"] or not counters["stats"]["unique_graphs"]):
                raise AssertionError(f"compiled blocks: {dict(counters['graph_break'])}, {dict(counters['stats'])}")
            torch.save(out, Path(out_dir) / f"rank{rank}-case{i}.pt")
        dist.barrier()  # leave together, then skip interpreter finalization (a gloo abort there: exit_rank)
    finally:
        dist.destroy_process_group()
    exit_rank()


TINY_PIPELINE = """\
name: tiny-scale-out
animate: {model: tiny-random, solver: euler, steps: 3, size_hw: [32, 64], device: cpu, seed: 5}
"""
"""A preset file for the tiny-random pipeline at 32x64 (write it beside the examples, pass it as --pipeline)."""


def make_examples(root: Path, count: int = 6, frames: int = 5) -> Path:
    """`count` examples with a hand-made rendered.mp4 (so pose and render are skipped), `frames`
    frames of a moving bar, a random reference; odd ones have a prompt (CFG runs both branches)."""
    rng = np.random.default_rng(0)
    for i in range(count):
        ex = root / f"ex{i}"
        ex.mkdir(parents=True)
        video = []
        for t in range(frames):
            f = np.zeros((64, 128, 3), np.uint8)
            x = (8 * t + 11 * i) % 112
            f[16:48, x : x + 16] = (255, 120 + 10 * i, 0)
            video.append(f)
        write_video(ex / "rendered.mp4", video, fps=16.0)
        Image.fromarray(rng.integers(0, 255, (60, 100, 3), dtype=np.uint8)).save(ex / "ref.png")
        if i % 2:
            (ex / "prompt.txt").write_text(f"a dancer, take {i}\n")
    return root

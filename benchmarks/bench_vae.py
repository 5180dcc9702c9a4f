"""Time and peak memory of the Wan VAE's encodes and decode, as the animate stage runs them.

    .venv/bin/python benchmarks/bench_vae.py                       # small, CPU, real width
    python benchmarks/bench_vae.py --device cuda --size 512x896 --frames 81 --dtype bfloat16

Weights are random (built in code; no checkpoint needed), which does not change the cost. Rows:
the reference image (1 frame), the half-resolution pose video (the official `smpl_downsample`
input), and the decode of the sample's latents, untiled and tiled. Peak memory is
torch.cuda.max_memory_allocated on CUDA (weights included) and the peak process RSS on CPU.
Official reference (issue 6, H200, bf16, 512x896, 81 frames): decode 2.4 s at 8.5 GiB peak,
half-resolution pose encode 0.5 s.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable

import torch

from scail.animate.vae import TileConfig, VAEConfig, WanVAE, build_vae

GIB = 1024**3


class PeakMemory:
    """Peak memory while the block runs: CUDA allocator peak, or sampled process RSS on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak = device, 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            import psutil

            process = psutil.Process()

            def sample() -> None:
                while not self._stop.is_set():
                    self.peak = max(self.peak, process.memory_info().rss)
                    time.sleep(0.005)

            self.peak = process.memory_info().rss
            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()


def measure(
    fn: Callable[[], torch.Tensor], device: torch.device, warmup: int
) -> tuple[torch.Tensor, float, int]:
    for _ in range(warmup):
        fn()
    with PeakMemory(device) as mem:
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    return out, seconds, mem.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="32x64", help="HxW of the video in pixels (multiples of 32)")
    parser.add_argument("--frames", type=int, default=5, help="video frames (1 + 4k)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--config", default="wan21", choices=["wan21", "tiny"])
    parser.add_argument("--tile", default="32:8", help="tile size:overlap in latent pixels for the tiled row")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default: 1 on CUDA)")
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    h, w = (int(v) for v in args.size.lower().split("x"))
    size, overlap = (int(v) for v in args.tile.split(":"))
    tile = TileConfig(size, overlap)
    warmup = args.warmup if args.warmup is not None else int(device.type == "cuda")
    cfg = VAEConfig.wan21() if args.config == "wan21" else VAEConfig.tiny()
    torch.manual_seed(0)

    vae: WanVAE = build_vae(cfg, dtype=dtype, device=device)
    weights_gib = sum(p.numel() * p.element_size() for p in vae.model.parameters()) / GIB
    image = torch.rand(1, 3, 1, h, w, device=device) * 2 - 1
    pose_half = torch.rand(1, 3, args.frames, h // 2, w // 2, device=device) * 2 - 1
    num_latent = 1 + (args.frames - 1) // 4
    latent = torch.randn(1, cfg.z_dim, num_latent, h // 8, w // 8, device=device)

    rows: list[tuple[str, str, str, float, int]] = []

    def row(name: str, fn: Callable[[], torch.Tensor], shape_in: tuple[int, ...]) -> torch.Tensor:
        out, seconds, peak = measure(fn, device, warmup)
        rows.append(
            (name, "x".join(map(str, shape_in[2:])), "x".join(map(str, out.shape[2:])), seconds, peak)
        )
        return out

    row("encode reference image", lambda: vae.encode(image), tuple(image.shape))
    row("encode pose video (half res)", lambda: vae.encode(pose_half), tuple(pose_half.shape))
    full = row("decode", lambda: vae.decode(latent), tuple(latent.shape))
    tiled = row(f"decode tiled {size}:{overlap}", lambda: vae.decode(latent, tile=tile), tuple(latent.shape))
    row(
        f"encode pose tiled {size}:{overlap}",
        lambda: vae.encode(pose_half, tile=tile),
        tuple(pose_half.shape),
    )

    err = (tiled.double() - full.double()).norm() / full.double().norm()
    peak_kind = "peak GPU alloc" if device.type == "cuda" else "peak RSS"
    print(
        f"Wan VAE dim {cfg.dim}, {args.dtype}, {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
        f"video {h}x{w}x{args.frames}, weights {weights_gib:.2f} GiB, random weights"
    )
    print(
        f"| {'operation':<30} | {'in (T/F x H x W)':>16} | {'out':>16} | {'seconds':>8} | {peak_kind + ' GiB':>18} |"
    )
    print(f"|{'-' * 32}|{'-' * 18}|{'-' * 18}|{'-' * 10}|{'-' * 20}|")
    for name, shape_in, shape_out, seconds, peak in rows:
        print(f"| {name:<30} | {shape_in:>16} | {shape_out:>16} | {seconds:>8.2f} | {peak / GIB:>18.2f} |")
    print(f"tiled vs untiled decode, rel_l2 {err:.3g} (random weights exaggerate seams; see TileConfig)")


if __name__ == "__main__":
    main()

"""Time the DiT's self-attention through scail's own seam (`scail.animate.attention.attention`) with
every kernel installed here: cuDNN SDPA, flash-attn 3, flash-attn 4 (the CuTe-DSL wheel), ..., and
fast mode's FP8 attention (backend `fp8`: flash-attn 3's FP8 kernel where built, else cuDNN's through
the `nvidia-cudnn-frontend` wheel; the row names which ran).

    PYTHONPATH=. python benchmarks/bench_attention.py [--tokens 48832] [--heads 40] [--head-dim 128]
        [--batch 2] [--reps 10] [--backends sdpa_cudnn,flash_attn_3,flash_attn_4] [--json-out FILE]

Defaults are SCAIL at 512x896x81 (48,832 tokens, 40 heads of 128, bf16, the CFG pair as batch 2).
Each backend runs once to warm up (flash-attn 4 JIT-compiles its kernel on the first call, reported
as `first call s`), then `--reps` timed calls; TFLOP/s counts QK^T and PV (4 * B * N * L^2 * D). The
output of each backend is compared with the first one's (relative L2 error), so a kernel that is
fast but wrong shows. `scail doctor` says which kernel `auto` picks.

On a CPU (`--device cpu`, small `--tokens`) it runs the SDPA backends, for the test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_BACKENDS = ("sdpa_cudnn", "flash_attn_3", "flash_attn_4", "fp8", "sdpa_flash")


def bench(tokens: int, heads: int, head_dim: int, batch: int, reps: int, backends: Sequence[str],
          device: str, seed: int = 0) -> list[dict[str, Any]]:
    """One row per backend that is installed and applies here: timings, TFLOP/s, error vs the first row."""
    import torch

    from scail.animate import attention

    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    g = torch.Generator(device=dev).manual_seed(seed)
    q, k, v = (torch.randn(batch, tokens, heads, head_dim, generator=g, device=dev, dtype=dtype) for _ in range(3))
    flops = 4.0 * batch * heads * tokens * tokens * head_dim

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    installed = attention.available_backends()
    rows: list[dict[str, Any]] = []
    reference: torch.Tensor | None = None
    before = attention.get_backend()
    try:
        for name in backends:
            label = name
            if name == "fp8":  # fast mode's FP8 self-attention, over the default backend
                kernel = attention.fp8_kernel(dev) if dev.type == "cuda" else "cpu emulation"
                if kernel is None:
                    rows.append({"backend": name, "status": f"no FP8 kernel here ({attention.FP8_KERNEL_HINT})"})
                    continue
                label = f"fp8 ({kernel})"
                attention.set_backend("auto")
                attention.set_fp8(True)
            elif name not in installed:
                rows.append({"backend": name, "status": "not installed"})
                continue
            else:
                attention.set_backend(name)  # type: ignore[arg-type]
                used = attention.resolve_backend(q)
                if used != name:
                    rows.append({"backend": name, "status": f"does not apply here (would run {used})"})
                    continue
            try:
                sync()
                t0 = time.perf_counter()
                out = attention.attention(q, k, v)
                sync()
                first = time.perf_counter() - t0
                t0 = time.perf_counter()
                for _ in range(reps):
                    out = attention.attention(q, k, v)
                sync()
                per_call = (time.perf_counter() - t0) / reps
            except Exception as exc:  # a kernel that fails at this shape/card is a row, not a crash
                rows.append({"backend": label, "status": f"failed: {type(exc).__name__}: {str(exc)[:120]}"})
                continue
            finally:
                attention.set_fp8(False)
            if reference is None:
                reference = out.float()
                err = 0.0
            else:
                err = ((out.float() - reference).norm() / reference.norm()).item()
            rows.append({"backend": label, "status": "ok", "first_call_s": round(first, 3),
                         "ms_per_call": round(per_call * 1e3, 2), "tflops": round(flops / per_call / 1e12, 1),
                         "rel_err_vs_first": float(f"{err:.2e}")})
    finally:
        attention.set_backend(before)  # type: ignore[arg-type]
        attention.set_fp8(False)
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'backend':<18} {'first call s':>12} {'ms/call':>9} {'TFLOP/s':>8} {'rel err':>9}  status"]
    for r in rows:
        if r["status"] == "ok":
            lines.append(f"{r['backend']:<18} {r['first_call_s']:>12.3f} {r['ms_per_call']:>9.2f} {r['tflops']:>8.1f} "
                         f"{r['rel_err_vs_first']:>9.2e}  ok")
        else:
            lines.append(f"{r['backend']:<18} {'-':>12} {'-':>9} {'-':>8} {'-':>9}  {r['status']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=48832, help="sequence length (default: SCAIL 512x896x81)")
    p.add_argument("--heads", type=int, default=40)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--batch", type=int, default=2, help="2: the CFG pair")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--backends", default=",".join(DEFAULT_BACKENDS))
    p.add_argument("--device", default="cuda")
    p.add_argument("--json-out", type=Path, default=None)
    a = p.parse_args(argv)
    rows = bench(a.tokens, a.heads, a.head_dim, a.batch, a.reps, [b for b in a.backends.split(",") if b], a.device)
    import torch

    card = torch.cuda.get_device_name(0) if a.device.startswith("cuda") and torch.cuda.is_available() else "cpu"
    print(f"attention at L={a.tokens}, {a.heads} heads x {a.head_dim}, batch {a.batch}; {card}, torch {torch.__version__}")
    print(format_table(rows))
    if a.json_out is not None:
        a.json_out.write_text(json.dumps({"tokens": a.tokens, "heads": a.heads, "head_dim": a.head_dim,
                                          "batch": a.batch, "card": card, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`scail doctor`: what this machine can run (python, torch, GPUs, codecs, pose env, weights).

Each check is independent and never raises: a broken part is reported, not fatal.
"""

from __future__ import annotations

import logging
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from scail.config import Settings

Level = Literal["ok", "warn", "fail"]


@dataclass
class Check:
    """One line of the doctor's report."""

    name: str
    level: Level
    detail: str


def check_python() -> Check:
    ok = sys.version_info >= (3, 10)
    return Check("python", "ok" if ok else "fail",
                 f"{platform.python_version()} ({sys.executable})" + ("" if ok else "; scail needs >= 3.10"))


def check_torch() -> list[Check]:
    try:
        import torch
    except ImportError as exc:
        return [Check("torch", "fail", f"not importable ({exc}); pip install torch")]
    checks = [Check("torch", "ok", f"{torch.__version__} (CUDA build: {torch.version.cuda or 'none'})")]
    if not torch.cuda.is_available():
        checks.append(Check("gpu", "warn", "no CUDA GPU: pose/render run on CPU, the 14B model needs a GPU"))
        return checks
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        checks.append(Check(f"gpu {i}", "ok", f"{p.name}, {p.total_memory / 2**30:.0f} GiB, "
                                              f"compute {p.major}.{p.minor}"))
    return checks


def check_attention() -> Check:
    """Which attention kernel the DiT will use here, and what would make it faster."""
    import torch

    from scail.animate import attention

    if not torch.cuda.is_available():
        return Check("attention", "ok", "torch SDPA on the CPU")
    probe = torch.empty(1, 1, 1, 128, device="cuda", dtype=torch.bfloat16)
    chosen = attention.resolve_backend(probe)
    if torch.cuda.get_device_capability()[0] != 9:
        return Check("attention", "ok", f"{chosen} (FP8 attention, part of fast mode, needs a Hopper GPU)")
    fp8 = attention.fp8_kernel(probe.device)
    faster = "" if chosen in ("flash_attn_3", "flash_attn_4") else (
        "; flash-attn 4 is ~10 % faster per exact step here: pip install 'scail[fa4]' (a wheel, no build)")
    if fp8 is None:
        return Check("attention", "warn", f"{chosen}; fast mode's FP8 attention has no kernel here: "
                                          f"{attention.FP8_KERNEL_HINT}{faster}")
    return Check("attention", "ok", f"{chosen}; fast mode's FP8 attention: {fp8}{faster}")


def check_encoder() -> Check:
    try:
        import av

        av.codec.Codec("libx264", "w")
    except ImportError as exc:
        return Check("h.264 encode", "fail", f"PyAV not importable ({exc}); pip install av")
    except Exception as exc:  # PyAV raises its own error types for a missing codec
        return Check("h.264 encode", "fail", f"PyAV {av.__version__} has no libx264 encoder ({exc})")
    return Check("h.264 encode", "ok", f"PyAV {av.__version__} with libx264")


def check_decord() -> Check:
    try:
        import decord
    except ImportError as exc:
        return Check("decord", "warn", f"not importable ({exc}); video reading falls back to PyAV")
    return Check("decord", "ok", str(getattr(decord, "__version__", "installed")))


def check_turntable() -> Check:
    """The 3D turntable preview: pyrender importable and one tiny frame rendered offscreen (EGL)."""
    from scail.previews import turntable

    problem = turntable.unavailable()
    if problem:
        return Check("turntable preview", "warn", f"{problem}; the other previews are written")
    from scail.demo import dancer_pose

    try:
        frame = turntable.render_turntable(dancer_pose(1).body3d, frames=1, size=32)[0]
    except Exception as exc:
        return Check("turntable preview", "warn", f"pyrender cannot render offscreen ({type(exc).__name__}: "
                     f"{str(exc).splitlines()[0] if str(exc) else ''}); apt-get install libegl1 libegl-mesa0")
    import os

    platform_name = os.environ.get("PYOPENGL_PLATFORM", "egl")
    return Check("turntable preview", "ok" if frame.any() else "warn", f"pyrender offscreen on {platform_name}")


def check_pose_env(settings: Settings) -> Check:
    try:
        from scail.pose.venv import describe
    except ImportError:
        return Check("pose env", "warn", "scail.pose.venv is not available in this build")
    try:
        info = describe(settings.cache_dir)
    except Exception as exc:  # a broken env must not break the report
        return Check("pose env", "fail", f"could not inspect it: {exc}")
    ready = bool(info.get("exists"))
    parts = [str(info.get("path", ""))]
    parts += [f"{k}={v}" for k, v in info.items() if k not in ("path", "exists", "hint") and v]
    if info.get("hint"):
        parts.append(str(info["hint"]))
    return Check("pose env", "ok" if ready else "warn", "; ".join(parts))


def check_weights(settings: Settings) -> Check:
    """Which SCAIL-Preview files are in the weights folder (`scail weights verify` checks their contents)."""
    from scail.animate.weights import download_command, locate

    d: Path = settings.weights_dir
    if not d.is_dir():
        return Check("weights", "warn", f"{d} does not exist; run `{download_command(d)}` "
                                        "(set SCAIL_WEIGHTS_DIR to use another folder)")
    found = locate(d)
    missing = [name for name, path in found.items() if path is None]
    if missing:
        return Check("weights", "warn", f"{d}: missing {', '.join(missing)}; run `{download_command(d)}`")
    files = [f for p in found.values() if p is not None for f in ([p] if p.is_file() else p.rglob("*"))]
    size_gb = sum(f.stat().st_size for f in files if f.is_file()) / 1e9
    return Check("weights", "ok", f"{d}: all {len(found)} parts, {size_gb:.1f} GB; "
                                  "`scail weights verify` checks keys and shapes")


def check_distributed() -> Check:
    """What `--gpus N` (sequence parallel) can use here: NCCL and the GPUs, or gloo on the CPU."""
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        return Check("distributed", "warn", "torch.distributed is not built in; --gpus N is unavailable")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus and dist.is_nccl_available():
        version = ".".join(str(v) for v in torch.cuda.nccl.version())
        return Check("distributed", "ok", f"NCCL {version}, {gpus} GPU(s): --gpus up to {gpus} "
                                          "(2, 4, 5 or 8 for the 14B model)")
    if gpus:
        return Check("distributed", "warn", f"{gpus} GPU(s) but no NCCL in this torch build; --gpus N needs it")
    return Check("distributed", "ok", f"gloo on the CPU{' and NCCL' if dist.is_nccl_available() else ''}; "
                                      "no GPU, so --gpus N runs CPU processes (tests only)")


def check_ray(settings: Settings) -> Check:
    """The Ray install and, with $RAY_ADDRESS, the cluster `scail run --executor ray` would use."""
    try:
        import ray
    except ImportError:
        return Check("ray", "ok", "not installed (optional: pip install 'scail[ray]' for --executor ray)")
    if settings.ray_address is None:
        return Check("ray", "ok", f"{ray.__version__}; no cluster named ($RAY_ADDRESS unset): "
                                  "--executor ray starts a local one, or pass --ray-address")
    try:
        ray.init(address=settings.ray_address, log_to_driver=False, logging_level=logging.ERROR)
        res = ray.cluster_resources()
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    except Exception as exc:  # unreachable cluster, version mismatch, ...
        return Check("ray", "warn", f"{ray.__version__}; cluster {settings.ray_address} not reachable "
                                    f"({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})")
    finally:
        ray.shutdown()
    return Check("ray", "ok", f"{ray.__version__}; cluster {settings.ray_address}: {nodes} node(s), "
                              f"{res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs")


def collect(settings: Settings | None = None) -> list[Check]:
    """Run every check (torch is imported here, never at CLI start-up)."""
    settings = settings or Settings.from_env()
    checks = [check_python()]
    steps: list[Callable[[], Check | list[Check]]] = [
        check_torch, check_attention, check_distributed, lambda: check_ray(settings), check_encoder,
        check_decord, check_turntable, lambda: check_pose_env(settings), lambda: check_weights(settings),
    ]
    for step in steps:
        try:
            got = step()
        except Exception as exc:  # one broken check must not hide the others
            got = Check(getattr(step, "__name__", "check"), "fail", f"{type(exc).__name__}: {exc}")
        checks.extend(got if isinstance(got, list) else [got])
    return checks

"""Measured speed of this machine's GPU: the table `scail plan` scales its estimates from.

The numbers live in `scail/gpu_table.yaml` (one row per GPU model, with the source of every value),
so re-measuring a GPU is an edit of that file, and a user adds their own card with a file of the
same form (`scail plan --gpu-table FILE` or $SCAIL_GPU_TABLE), whose rows win. A GPU without a row
(or the CPU) has no speed: the plan then gives FLOP totals only, never an invented time.

Nothing here imports torch except `detect_gpu`, and only for a CUDA device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scail.errors import InputError

TABLE_PATH = Path(__file__).with_name("gpu_table.yaml")
DIT_KEYS = ("bf16", "bf16_sdpa", "fast", "fast_cudnn", "fast_sdpa", "offload")
"""Ways of running the DiT a row may have a measured s/step for (see the table's header)."""
STAGE_KEYS = ("t5_s", "clip_s", "vae_encode_s", "vae_decode_s", "load_s", "compile_s", "render_ms_per_frame")


@dataclass(frozen=True)
class GpuSpeed:
    """One row of the table: a GPU model's measured times (None: not measured)."""

    name: str
    match: tuple[str, ...]
    source: str
    memory_gib: float | None = None
    dit_s_per_step: dict[str, float] = field(default_factory=dict)
    """s/step at the reference shape (512x896x81, CFG pair), per way of running (`DIT_KEYS`)."""
    stages: dict[str, float] = field(default_factory=dict)
    """`STAGE_KEYS` that were measured."""

    def matches(self, device_name: str) -> bool:
        name = device_name.lower()
        return any(m.lower() in name for m in self.match)


@dataclass(frozen=True)
class MemoryCalibration:
    """Measured peak GiB of the whole sample at the reference shape, per memory mode."""

    resident: float
    offload: float
    fast: float
    encoders: float
    allocator_headroom: float


@dataclass(frozen=True)
class GpuTable:
    rows: tuple[GpuSpeed, ...]
    memory: MemoryCalibration
    files: tuple[Path, ...]

    def find(self, device_name: str) -> GpuSpeed | None:
        """The first row whose `match` is in `device_name` (or whose name equals it)."""
        for row in self.rows:
            if row.name.lower() == device_name.strip().lower() or row.matches(device_name):
                return row
        return None


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise InputError(f"{where}: expected a positive number, got {value!r}")
    return float(value)


def _read(path: Path) -> dict[str, Any]:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise InputError(f"{path}: cannot read the GPU table ({exc.strerror}); check --gpu-table / "
                         "$SCAIL_GPU_TABLE") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not a readable YAML file ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("gpus", {}), dict):
        raise InputError(f"{path}: expected `gpus:` mapping GPU names to rows (see scail/gpu_table.yaml)")
    return doc


def _row(name: str, raw: object, path: Path, done: dict[str, GpuSpeed]) -> GpuSpeed:
    where = f"{path}: gpus.{name}"
    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected a mapping (match, dit_s_per_step, ...)")
    known = {"match", "source", "memory_gib", "dit_s_per_step", "tflops", "scaled_from", "scale", *STAGE_KEYS}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InputError(f"{where}: unknown key '{unknown[0]}'; use one of {', '.join(sorted(known))}")
    match = raw.get("match", [name])
    match = (match,) if isinstance(match, str) else tuple(str(m) for m in match)
    dit: dict[str, float] = {}
    stages: dict[str, float] = {}
    if "scaled_from" in raw:
        base = done.get(str(raw["scaled_from"]))
        if base is None:
            raise InputError(f"{where}: scaled_from '{raw['scaled_from']}' is not a row above it")
        scale = _number(raw.get("scale", 1.0), f"{where}.scale")
        dit = {k: v * scale for k, v in base.dit_s_per_step.items()}
        stages = {k: v * scale for k, v in base.stages.items()}
    from scail.estimate import REFERENCE_PFLOP

    for key, value in (raw.get("tflops") or {}).items():
        if key not in DIT_KEYS:
            raise InputError(f"{where}.tflops: unknown key '{key}'; use one of {', '.join(DIT_KEYS)}")
        dit[key] = REFERENCE_PFLOP * 1e3 / _number(value, f"{where}.tflops.{key}")
    for key, value in (raw.get("dit_s_per_step") or {}).items():
        if key not in DIT_KEYS:
            raise InputError(f"{where}.dit_s_per_step: unknown key '{key}'; use one of {', '.join(DIT_KEYS)}")
        dit[key] = _number(value, f"{where}.dit_s_per_step.{key}")
    stages.update({k: _number(raw[k], f"{where}.{k}") for k in STAGE_KEYS if k in raw})
    memory = _number(raw["memory_gib"], f"{where}.memory_gib") if "memory_gib" in raw else None
    return GpuSpeed(name, match, str(raw.get("source", path.name)), memory, dit, stages)


def load_table(extra: Path | None = None) -> GpuTable:
    """The shipped table plus `extra` (its rows first, so they win; its `memory_gib` values too)."""
    files = (TABLE_PATH, *([extra] if extra is not None else []))
    rows: dict[str, GpuSpeed] = {}
    memory: dict[str, Any] = {}
    user_first: list[str] = []
    for path in files:
        doc = _read(path)
        for name, raw in (doc.get("gpus") or {}).items():
            rows[str(name)] = _row(str(name), raw, path, rows)
            if path is not TABLE_PATH:
                user_first.append(str(name))
        memory.update(doc.get("memory_gib") or {})
    try:
        mem = MemoryCalibration(**{k: _number(memory[k], f"memory_gib.{k}") for k in
                                   ("resident", "offload", "fast", "encoders", "allocator_headroom")})
    except KeyError as exc:
        raise InputError(f"{TABLE_PATH}: memory_gib.{exc.args[0]} is missing") from None
    order = [*dict.fromkeys(user_first), *(n for n in rows if n not in user_first)]
    return GpuTable(tuple(rows[n] for n in order), mem, files)


@dataclass(frozen=True)
class GpuInfo:
    """The GPU a plan is for: its name, memory and whether it was seen on this machine."""

    name: str
    memory_gib: float | None
    local: bool
    flash_attn: bool
    """flash-attn 3 or 4 importable here (locally), or assumed as measured (another machine); the
    two run the exact step at the same speed (benchmarks/README.md, bench_attention.py)."""
    fp8_attention: str | None = None
    """Fast mode's FP8 attention kernel here (`attention.fp8_kernel`: flash_attn_3, cudnn or None);
    flash_attn_3, as measured, for another machine."""


def detect_gpu(device: str) -> GpuInfo:
    """The GPU `device` ('auto', 'cuda', 'cuda:N', 'cpu') names on this machine; name 'cpu' without one."""
    if device == "cpu":
        return GpuInfo("cpu", None, True, False)
    try:
        import torch
    except ImportError:
        return GpuInfo("cpu", None, True, False)
    if not torch.cuda.is_available():
        return GpuInfo("cpu", None, True, False)
    index = int(device.partition(":")[2] or torch.cuda.current_device())
    props = torch.cuda.get_device_properties(index)
    from scail.animate.attention import available_backends, fp8_kernel

    backends = available_backends()
    flash = "flash_attn_3" in backends or ("flash_attn_4" in backends and props.major in (9, 10, 11))
    return GpuInfo(props.name, props.total_memory / 2**30, True, flash, fp8_kernel(torch.device("cuda", index)))


def named_gpu(name: str, table: GpuTable) -> GpuInfo:
    """`--gpu NAME`: plan for a GPU model of the table (not necessarily this machine's)."""
    row = table.find(name)
    if row is None:
        names = ", ".join(r.name for r in table.rows)
        raise InputError(f"--gpu {name}: no such GPU in the table ({names}); add a row with --gpu-table FILE")
    return GpuInfo(row.name, row.memory_gib, False, True, "flash_attn_3")

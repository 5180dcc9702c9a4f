"""The text of `scail plan`: a header naming the GPU and its measured speed, one table row per
example, a line of detail per example, and the batch totals; every line fits 80 columns."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

from scail.animate.stage2 import is_scail2
from scail.estimate import REFERENCE_FRAMES, REFERENCE_HW

if TYPE_CHECKING:
    from scail.plan import BatchPlan, ExamplePlan

WIDTH = 80
_COLUMNS = "{:<16} {:<3} {:>6} {:>5} {:>8} {:>5} {:>7} {:>8} {:>6} {:>3}"
_LETTER = {"pose": "P", "render": "R", "animate": "A"}


def duration(seconds: float | None) -> str:
    """62.5 -> '1m03s', 3725 -> '1h02m', None -> '?'."""
    if seconds is None:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _name(text: str, width: int = 16) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def _header(plan: BatchPlan) -> list[str]:
    gpu, row = plan.gpu, plan.row
    memory = f", {gpu.memory_gib:.1f} GiB" if gpu.memory_gib is not None else ""
    where = "" if gpu.local else " (named with --gpu, not this machine's)"
    lines = [f"pipeline {plan.pipeline}; {len(plan.examples)} example(s), {len(plan.to_run)} with work",
             f"GPU: {gpu.name}{memory}{where}"]
    if row is None:
        lines.append(f"no measured speed for {gpu.name}: FLOP totals only (add a row with --gpu-table FILE)")
        return lines
    lines.append(f"speed: table row {row.name} ({row.source})")
    shape = f"{REFERENCE_HW[0]}x{REFERENCE_HW[1]}x{REFERENCE_FRAMES}"
    measured = ", ".join(f"{k} {v:.2f}" for k, v in row.dit_s_per_step.items())
    lines.append(f"measured s/step at {shape}: {measured}")
    if gpu.local and not gpu.flash_attn:
        lines.append("flash-attn 3/4 is not installed here: the bf16_sdpa speed applies "
                     "(pip install 'scail[fa4]' installs flash-attn 4)")
    if gpu.local and gpu.fp8_attention != "flash_attn_3":
        entry = "fast_cudnn" if gpu.fp8_attention == "cudnn" else "fast_sdpa"
        lines.append(f"fast mode's FP8 attention: {gpu.fp8_attention or 'none'} here, so the {entry} speed applies")
    if not gpu.local:
        lines.append("assumes flash-attn 3, as measured (without it: the *_sdpa speeds)")
    return lines


def _row(e: ExamplePlan) -> str:
    run = "".join(_LETTER[s] if s in e.run else "-" for s in ("pose", "render", "animate"))
    if e.error:
        return _COLUMNS.format(_name(e.name), run, "", "", "", "", "", "error", "", "")
    w, est = e.work, e.estimate
    frames = str(e.frames) if e.frames is not None else ""
    if w is None or est is None:
        return _COLUMNS.format(_name(e.name), run, frames, "", "", "", "", duration(e.total_s) if e.run else "-", "", "")
    win = f"{len(w.windows)}x{4 * max(w.windows) - 3}"
    size = f"{w.size_hw[0]}x{w.size_hw[1]}"
    step = f"{est.s_per_step:.1f}" if est.s_per_step is not None else "?"
    fit = {True: "ok", False: "NO", None: "?"}[e.fits]
    return _COLUMNS.format(_name(e.name), run, frames, win, size, w.steps, step, duration(e.total_s),
                           f"{est.peak_gib:.1f}", fit)


def _detail(e: ExamplePlan) -> list[str]:
    if e.error:
        return [f"{e.name}: {e.error}"]
    if not e.run:
        return []
    parts = [", ".join(f"{stage} {status}" + (" (forced)" if stage in e.run and status in ("fresh", "user-provided")
                                                else "") for stage, status, _ in e.stages)]
    if e.frames is not None:
        parts.append(f"{e.frames} frames from {e.frames_from}")
    w, est = e.work, e.estimate
    if w is not None and est is not None:
        from scail.animate.windows import pixel_count  # loaded already: the plan of this work used it

        kind = "segments" if is_scail2(w.model) else "windows"
        parts.append(f"{len(w.windows)} {kind} of {', '.join(str(pixel_count(n)) for n in w.windows)} frames"
                     if len(w.windows) > 1 else f"1 window of {pixel_count(w.windows[0])} frames")
        mode = est.dit_mode + (", CFG" if w.cfg else ", no CFG")
        if est.s_per_window_step is not None:
            parts.append(f"{est.s_per_window_step:.2f} s per window step ({mode}, {est.tokens:,} tokens)")
        else:
            parts.append(f"{est.pflop_per_step:.2f} PFLOP per step ({mode}, {est.tokens:,} tokens)")
        parts.append(f"{est.pflop_total:.0f} PFLOP in all")
        stages = ", ".join(f"{k} {duration(v)}" for k, v in est.stage_s.items() if v is not None)
        if stages:
            parts.append(stages)
        parts.extend(est.notes)
    if e.render_s is not None:
        parts.append(f"render {duration(e.render_s)}")
    elif "render" in e.run:
        parts.append("render time not measured for this device")
    if "pose" in e.run:
        parts.append("pose time not estimated")
    if e.fits is False:
        parts.append("DOES NOT FIT: " + (" or ".join(e.fixes) if e.fixes else "no single setting makes it fit"))
    return [f"{e.name}: " + "; ".join(parts)]


def format_plan(plan: BatchPlan) -> str:
    """The whole plan as text, at most `WIDTH` columns."""
    lines = [w for h in _header(plan) for w in textwrap.wrap(h, WIDTH, subsequent_indent="  ")]
    lines += ["", _COLUMNS.format("example", "run", "frames", "win", "size", "steps", "s/step", "time", "GiB",
                                  "fit"), "-" * 78]
    lines += [_row(e) for e in plan.examples]
    lines.append("-" * 78)
    load = f" (incl. loading {duration(plan.load_s)})" if plan.load_s else ""
    peak = f", peak {plan.peak_gib:.1f} GiB" if plan.peak_gib is not None else ""
    lines.append(f"total: {len(plan.to_run)} to run, {duration(plan.total_s)}{load}{peak}")
    lines.append("run: P pose, R render, A animate; s/step: one sampler step over all windows;")
    lines.append(f"GiB: estimated peak allocated (the fit check adds x{plan.headroom:.2f} for the allocator)")
    details = [d for e in plan.examples for d in _detail(e)]
    if details:
        lines.append("")
    for d in details:
        lines += textwrap.wrap(d, WIDTH, subsequent_indent="  ", break_on_hyphens=False)
    return "\n".join(line[:WIDTH] for line in lines)

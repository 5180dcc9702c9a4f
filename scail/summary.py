"""Rich tables for the CLI: the batch summary, `scail status` and `scail doctor`.

Pure rendering: these functions take results and return Rich renderables; they never run anything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import RenderableType

    from scail.batch import BatchSummary
    from scail.doctor import Check
    from scail.engine import Status
    from scail.outputs import SampleInfo

STATUS_STYLES = {
    "ran": "green", "fresh": "dim green", "user-provided": "cyan", "skipped": "dim",
    "failed": "bold red", "interrupted": "yellow", "locked": "yellow",
    "stale": "yellow", "missing": "dim", "running": "blue",
}
"""The colour of each stage outcome / status (scail.engine.Outcome, Status) in tables and progress lines."""

MAX_ROWS = 200
"""Beyond this many examples, tables list only the examples that need attention."""


def format_duration(seconds: float | None) -> str:
    """`0.4 s`, `12.3 s`, `4:05`, `1:02:03`; empty for None (progress lines and the HTML report)."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _cell(status: str, extra: str = "") -> str:
    style = STATUS_STYLES.get(status, "")
    text = f"{status}{extra}"
    return f"[{style}]{text}[/]" if style else text


def batch_table(summary: BatchSummary) -> RenderableType:
    """One row per example: each stage's outcome and time, then the first failure's reason."""
    from rich.table import Table

    stage_names = list(dict.fromkeys(s.stage for e in summary.examples for s in e.stages))
    counts = summary.counts()
    title = (f"{summary.pipeline}: {counts['ok']}/{counts['examples']} examples ok"
             f" in {summary.duration_s:.1f}s" + (" (interrupted)" if summary.interrupted else ""))
    table = Table(title=title, title_justify="left")
    table.add_column("example", no_wrap=True)
    for name in stage_names:
        table.add_column(name, no_wrap=True)
    rows = summary.examples
    if len(rows) > MAX_ROWS:
        rows = [e for e in rows if not e.ok][:MAX_ROWS]
        table.caption = f"{len(summary.examples) - len(rows)} examples not shown (all ok)"
    for e in rows:
        by_stage = {s.stage: s for s in e.stages}
        cells = []
        for name in stage_names:
            s = by_stage.get(name)
            if s is None:
                cells.append("")
                continue
            timed = s.outcome.value == "ran" or s.duration_s >= 0.05
            cells.append(_cell(s.outcome.value, f" {s.duration_s:.1f}s" if timed else ""))
        table.add_row(e.name, *cells)
    return with_notes(table, [(e.name, "; ".join(filter(None, [e.reason, *e.notes]))) for e in rows])


def with_notes(table: RenderableType, notes: Sequence[tuple[str, str]]) -> RenderableType:
    """The table, then one line per example with a reason or note, below it at the full width.

    Reasons are long (a path, the error, the fix): in a table column they wrapped to a few
    characters on an 80-column terminal, so they get their own lines (--json has them too).
    """
    from rich.console import Group
    from rich.text import Text

    lines = [Text.assemble((f"{name}", "bold"), f"  {note}") for name, note in notes if note]
    return Group(table, *lines) if lines else table


def output_lines(summary: BatchSummary) -> list[str]:
    """Where each example's result is, one plain line per file (no wrapping: paths stay copyable).

    The files of each example's last stage that has any (the newest sample after animate); sidecar
    JSON files are left out. Beyond `MAX_ROWS` examples the rest are counted, not listed.
    """
    with_files = [(e.name, [p for p in e.outputs if not p.endswith(".json")]) for e in summary.examples]
    with_files = [(name, files) for name, files in with_files if files]
    if not with_files:
        return []
    width = max(len(name) for name, _ in with_files[:MAX_ROWS])
    lines = ["outputs:"]
    for name, files in with_files[:MAX_ROWS]:
        lines += [f"  {name:<{width}}  {path}" for path in files]
    if len(with_files) > MAX_ROWS:
        lines.append(f"  ... {len(with_files) - MAX_ROWS} more examples (see --json or the report)")
    return lines


def status_table(stage_names: Sequence[str], rows: Sequence[tuple[str, Sequence[tuple[Status, str]]]],
                 samples: Sequence[SampleInfo] | None = None) -> RenderableType:
    """Examples x stages: fresh / stale / failed / missing / user-provided / interrupted / running,
    then the latest sample (and how many earlier ones exist)."""
    from rich.table import Table

    totals: Counter[str] = Counter(s.value for _, st in rows for s, _ in st)
    table = Table(title=", ".join(f"{n} {k}" for k, n in sorted(totals.items())) or "no examples",
                  title_justify="left")
    table.add_column("example", no_wrap=True)
    for name in stage_names:
        table.add_column(name, no_wrap=True)
    if samples is not None:
        table.add_column("latest sample", overflow="fold")
    shown = list(range(len(rows)))
    if len(rows) > MAX_ROWS:
        shown = [i for i, r in enumerate(rows) if any(s.value != "fresh" for s, _ in r[1])][:MAX_ROWS]
        table.caption = f"{len(rows) - len(shown)} examples not shown (all fresh)"
    notes: list[tuple[str, str]] = []
    for i in shown:
        name, statuses = rows[i]
        note = next((f"{stage}: {reason}" for stage, (s, reason) in zip(stage_names, statuses, strict=True)
                     if reason and s.value != "fresh"), "")
        extra = [] if samples is None else [_sample_cell(samples[i])]
        table.add_row(name, *(_cell(s.value) for s, _ in statuses), *extra)
        notes.append((name, note))
    return with_notes(table, notes)


def _sample_cell(info: SampleInfo) -> str:
    """The latest sample's file name (its folder is always samples/) and the count of earlier ones."""
    if info.latest is None:
        return f"(none; {info.earlier} earlier)" if info.earlier else ""
    return info.latest.rsplit("/", 1)[-1] + (f" (+{info.earlier})" if info.earlier else "")


def status_json(stage_names: Sequence[str], rows: Sequence[tuple[str, Sequence[tuple[Status, str]]]],
                samples: Sequence[SampleInfo] | None = None) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for i, (name, statuses) in enumerate(rows):
        doc: dict[str, Any] = {"name": name, "stages": {stage: {"status": s.value, "reason": r}
                                                        for stage, (s, r) in zip(stage_names, statuses, strict=True)}}
        if samples is not None:
            doc["samples"] = {"latest": samples[i].latest, "earlier": samples[i].earlier}
        out.append(doc)
    return {"examples": out}


def doctor_table(checks: Sequence[Check]) -> RenderableType:
    from rich.table import Table

    table = Table(title="scail doctor", title_justify="left", show_header=False)
    table.add_column("", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("detail", overflow="fold")
    mark = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[bold red]FAIL[/]"}
    for c in checks:
        table.add_row(mark[c.level], c.name, c.detail)
    return table

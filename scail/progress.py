"""Terminal progress for batches: the only module that draws on the terminal.

`ProgressDisplay` receives the batch runner's lifecycle calls (`scail.batch.BatchObserver`) and the
stages' `ProgressEvent`s, and draws them on one stderr `Console`:

- on a terminal: one `Live` holding three `Progress` groups, nested batch -> example -> stage, with
  bars, counts and ETA (from the average rate) for examples, frames and denoising steps. A stage's
  bars are removed when it finishes and a result line ("001 render ran 12.3 s") is printed above;
- without a terminal (CI logs, pipes) or in `--json` mode: plain lines: a stage's first progress
  event, then at most one line per stage every `plain_interval_s` seconds, its result, and one line
  per finished example;
- in quiet mode: nothing but failed, interrupted or locked stages.

Stages that did no work (fresh, user-provided, skipped) get no line of their own, and examples
where nothing ran share a throttled "[i/N] name up to date" line, so a no-op rerun over 1,000
examples stays short and fast (the summary table lists everything).

stdout is left alone: it is for results (tables, JSON).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from scail.summary import STATUS_STYLES, format_duration

if TYPE_CHECKING:
    from scail.stage import ProgressEvent

_BAD_STATUSES = frozenset({"failed", "interrupted", "locked"})
_SILENT_STATUSES = frozenset({"fresh", "user-provided", "skipped"})
"""Stage results that did no work: not printed line by line (the summary table lists them)."""


def stderr_console() -> Console:
    """The console every scail command draws on: stderr, so stdout stays clean for results."""
    return Console(stderr=True)


class AverageEtaColumn(ProgressColumn):
    """`eta H:MM:SS` from the average rate since the task started.

    Rich's own column estimates speed from the last 30 s only, which shows nothing when one
    example or one denoising step takes longer than that.
    """

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed
        if not task.total or not task.completed or elapsed is None:
            return Text("eta -:--:--", style="dim")
        remaining = max(task.total - task.completed, 0) * elapsed / task.completed
        minutes, seconds = divmod(round(remaining), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"eta {hours}:{minutes:02d}:{seconds:02d}", style="cyan")


class _CountColumn(MofNCompleteColumn):
    """`done/total`, and nothing for a phase (a label without a count: `StageContext.phase`)."""

    def render(self, task: Task) -> Text:
        if task.total is None and task.fields.get("unit") == "":
            return Text("")
        return super().render(task)


@dataclass
class _StageTrack:
    """Plain-mode bookkeeping for one running stage of one example."""

    started_at: float
    last_line_at: float | None = None
    phase: str = ""


class ProgressDisplay:
    """Draws batch / example / stage progress on a stderr console (see the module docstring).

    Use as a context manager around the batch; pass it as the batch observer. Events may arrive
    from other threads (e.g. the pose worker's reader).

    Args:
        console: where to draw; a stderr console by default. Bars are used only when
            `console.is_terminal`.
        quiet: draw nothing but failed or interrupted stages.
        json_mode: no bars (stdout carries JSON); plain lines on the console instead.
        get_time: clock in seconds (tests inject a fake one); `time.monotonic` by default.
        plain_interval_s: at most one plain progress line per stage per this many seconds.
        auto_refresh: let Rich redraw the bars 10 times a second; when False the display is
            redrawn on every call (deterministic output for tests).
    """

    def __init__(
        self,
        console: Console | None = None,
        quiet: bool = False,
        json_mode: bool = False,
        get_time: Callable[[], float] | None = None,
        plain_interval_s: float = 2.0,
        auto_refresh: bool = True,
    ) -> None:
        import time

        self.console = console if console is not None else stderr_console()
        self.quiet = quiet
        self.json_mode = json_mode
        self.get_time = get_time or time.monotonic
        self.plain_interval_s = plain_interval_s
        self.auto_refresh = auto_refresh
        self.use_bars = self.console.is_terminal and not quiet and not json_mode
        self._lock = threading.RLock()
        self._live: Live | None = None
        self._total_examples = 0
        self._examples_done = 0
        self._batch_task: TaskID | None = None
        self._example_tasks: dict[str, TaskID] = {}
        self._stage_tasks: dict[tuple[str, str, str], TaskID] = {}
        self._tracks: dict[tuple[str, str], _StageTrack] = {}
        self._examples_with_news: set[str] = set()
        self._last_batch_line_at: float | None = None

        columns_time = (AverageEtaColumn(), TimeElapsedColumn())
        self._batch = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            *columns_time,
            console=self.console,
            get_time=self.get_time,
        )
        self._examples = Progress(
            TextColumn("  "),
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            TextColumn("{task.fields[stage]}"),
            TimeElapsedColumn(),
            console=self.console,
            get_time=self.get_time,
        )
        self._stages = Progress(
            TextColumn("    {task.description}"),
            BarColumn(),
            _CountColumn(),
            TextColumn("{task.fields[unit]}"),
            *columns_time,
            console=self.console,
            get_time=self.get_time,
        )

    # --- context manager ------------------------------------------------------------------------

    def __enter__(self) -> ProgressDisplay:
        if self.use_bars:
            self._live = Live(
                Group(self._batch, self._examples, self._stages),
                console=self.console,
                auto_refresh=self.auto_refresh,
                refresh_per_second=10,
                transient=False,
            )
            self._live.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._lock:
            live, self._live = self._live, None
            if live is not None:
                live.stop()

    # --- batch lifecycle (scail.batch.BatchObserver) --------------------------------------------

    def batch_started(self, total_examples: int) -> None:
        with self._lock:
            self._total_examples = total_examples
            self._examples_done = 0
            if self._live is not None:
                self._batch_task = self._batch.add_task("examples", total=total_examples)
            else:
                self._plain(f"scail: {total_examples} example{'s' if total_examples != 1 else ''}")
            self._refresh()

    def example_started(self, name: str) -> None:
        with self._lock:
            if self._live is not None:
                self._example_tasks[name] = self._examples.add_task(name, total=None, stage="")
                self._refresh()

    def stage_started(self, example: str, stage: str) -> None:
        with self._lock:
            self._tracks[(example, stage)] = _StageTrack(started_at=self.get_time())
            task = self._example_tasks.get(example)
            if task is not None:
                self._examples.update(task, stage=stage)
                self._refresh()

    def on_event(self, event: ProgressEvent) -> None:
        """A stage's progress report: `done` of `total` `unit`s (frames, steps, ...)."""
        with self._lock:
            if self._live is not None:
                self._update_bar(event)
                self._refresh()
            else:
                self._plain_event(event)

    def stage_finished(self, example: str, stage: str, status: str, duration_s: float) -> None:
        """Remove the stage's bars; print a result line unless nothing happened (fresh, skipped, ...)."""
        with self._lock:
            self._tracks.pop((example, stage), None)
            for key in [k for k in self._stage_tasks if k[:2] == (example, stage)]:
                self._stages.remove_task(self._stage_tasks.pop(key))
            if status not in _SILENT_STATUSES:
                self._examples_with_news.add(example)
            if status in _BAD_STATUSES or (status not in _SILENT_STATUSES and not self.quiet):
                style = STATUS_STYLES.get(status, "")
                self._print(
                    Text.assemble(f"{example} {stage} ", (status, style), f" {format_duration(duration_s)}")
                )
            self._refresh()

    def example_finished(self, name: str, ok: bool) -> None:
        """Advance the batch bar; without bars, one line per example that did something (else throttled)."""
        with self._lock:
            self._examples_done += 1
            task = self._example_tasks.pop(name, None)
            if task is not None:
                self._examples.remove_task(task)
            if self._batch_task is not None:
                self._batch.update(self._batch_task, completed=self._examples_done)
                self._refresh()
            elif not self.quiet:
                self._plain_example_line(name, ok)

    def _plain_example_line(self, name: str, ok: bool) -> None:
        count = f"[{self._examples_done}/{self._total_examples or '?'}]"
        had_news = name in self._examples_with_news
        self._examples_with_news.discard(name)
        now = self.get_time()
        if had_news or not ok:
            self._plain(f"{count} {name} {'ok' if ok else 'FAILED'}")
        elif self._examples_done == self._total_examples or (
            self._last_batch_line_at is None or now - self._last_batch_line_at >= self.plain_interval_s
        ):
            self._plain(f"{count} {name} up to date")
        else:
            return
        self._last_batch_line_at = now

    def log(self, msg: str) -> None:
        """Print a message above the bars (dropped in quiet mode)."""
        if not self.quiet:
            with self._lock:
                self._print(Text(msg))

    # --- internals ------------------------------------------------------------------------------

    def _update_bar(self, event: ProgressEvent) -> None:
        """One bar per unit of a stage, labelled with the latest `desc`; a phase (a label without a
        count) has one line per stage that shows the current phase until a count arrives."""
        from scail.stage import PHASE

        label = f"{event.stage} {event.desc}".rstrip()
        phase_key = (event.example, event.stage, PHASE)
        if event.unit == PHASE:
            task = self._stage_tasks.get(phase_key)
            if task is None:
                self._stage_tasks[phase_key] = self._stages.add_task(label, total=None, unit="")
            else:
                self._stages.update(task, description=label)
            return
        phase = self._stage_tasks.pop(phase_key, None)
        if phase is not None:  # the phase is over: its count has started
            self._stages.remove_task(phase)
        key = (event.example, event.stage, event.unit)
        task = self._stage_tasks.get(key)
        if task is None:
            task = self._stages.add_task(label, total=event.total, unit=event.unit)
            self._stage_tasks[key] = task
        self._stages.update(task, completed=event.done, total=event.total, description=label)

    def _plain_event(self, event: ProgressEvent) -> None:
        from scail.stage import PHASE

        now = self.get_time()
        track = self._tracks.setdefault((event.example, event.stage), _StageTrack(started_at=now))
        if event.unit == PHASE:  # rare and worth seeing: every phase gets its line, and the count after it too
            if not self.quiet and event.desc != track.phase:
                self._plain(f"{event.example} {event.stage}: {event.desc}")
            track.phase, track.last_line_at = event.desc, None
            return
        finished = event.total is not None and event.done >= event.total
        due = track.last_line_at is None or now - track.last_line_at >= self.plain_interval_s
        if not (due or finished) or self.quiet:
            return
        track.last_line_at = now
        what = f"{event.desc} " if event.desc else ""
        if event.total:
            pct = 100 * event.done / event.total
            text = (
                f"{event.example} {event.stage}: {what}{event.done}/{event.total} {event.unit} ({pct:.0f}%)"
            )
            elapsed = now - track.started_at
            if 0 < event.done < event.total and elapsed > 0:
                text += f", eta {format_duration(elapsed / event.done * (event.total - event.done))}"
        else:
            text = f"{event.example} {event.stage}: {what}{event.done} {event.unit}"
        self._plain(text)

    def _plain(self, text: str) -> None:
        if not self.quiet:
            self._print(Text(text))

    def _print(self, text: Text) -> None:
        self.console.print(text, soft_wrap=True, highlight=False)

    def _refresh(self) -> None:
        if self._live is not None and not self.auto_refresh:
            self._live.refresh()

"""The terminal display: bars with ETA on a TTY, throttled plain lines without, silence when quiet."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from scail.logs import setup_logging
from scail.progress import ProgressDisplay, format_duration
from scail.stage import ProgressEvent


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_console(is_tty: bool) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=100, force_terminal=is_tty, color_system=None, legacy_windows=False), buf


def drive(display: ProgressDisplay, clock: FakeClock, frames: int = 10, fail_second: bool = False) -> None:
    """A two-example batch: render with a frames bar, animate with a steps bar."""
    with display:
        display.batch_started(2)
        for name in ("001", "002"):
            display.example_started(name)
            display.stage_started(name, "render")
            for done in range(frames + 1):
                display.on_event(ProgressEvent(name, "render", done, frames, "frames"))
                clock.now += 0.5
            display.stage_finished(name, "render", "ran", 5.0)
            display.stage_started(name, "animate")
            bad = fail_second and name == "002"
            for step in range(3 if bad else 5):
                display.on_event(ProgressEvent(name, "animate", step, 4, "steps", "denoising"))
                clock.now += 2.0
            display.stage_finished(name, "animate", "failed" if bad else "ran", 8.0)
            display.example_finished(name, not bad)
        display.log("summary written to .scail-summary.json")


def test_tty_draws_nested_bars_with_eta() -> None:
    console, buf = make_console(is_tty=True)
    clock = FakeClock()
    display = ProgressDisplay(console, get_time=clock, auto_refresh=False)
    assert display.use_bars
    drive(display, clock)
    out = buf.getvalue()

    assert "━" in out  # bars were drawn
    assert "examples" in out and "1/2" in out  # batch bar counts examples
    assert "render" in out and "5/10" in out and "frames" in out  # stage bar with count and unit
    assert "animate denoising" in out and "steps" in out
    assert "4/10 frames eta 0:00:03" in out  # average rate: 4 frames in 2 s, 6 to go
    assert "1/2 eta 0:00:" in out  # the batch ETA once one example is done
    assert "001 render ran 5.0 s" in out  # finished stages are reported above the bars
    assert "summary written to .scail-summary.json" in out


def test_tty_hides_finished_stage_bars() -> None:
    console, _ = make_console(is_tty=True)
    clock = FakeClock()
    display = ProgressDisplay(console, get_time=clock, auto_refresh=False)
    with display:
        display.batch_started(1)
        display.example_started("001")
        display.stage_started("001", "render")
        display.on_event(ProgressEvent("001", "render", 3, 10))
        assert [t.description for t in display._stages.tasks] == ["render"]
        display.stage_finished("001", "render", "ran", 1.0)
        assert display._stages.tasks == []
        display.example_finished("001", True)
        assert display._examples.tasks == []
        assert display._batch.tasks[0].completed == 1


def test_plain_lines_without_tty_are_throttled() -> None:
    console, buf = make_console(is_tty=False)
    clock = FakeClock()
    display = ProgressDisplay(console, get_time=clock)
    assert not display.use_bars
    drive(display, clock, frames=20)
    lines = buf.getvalue().splitlines()

    assert "\x1b[" not in buf.getvalue() and "━" not in buf.getvalue()
    assert lines[0] == "scail: 2 examples"
    assert "001 render: 0/20 frames (0%)" in lines  # the first event doubles as the start line
    render_lines = [ln for ln in lines if ln.startswith("001 render: ") and "frames" in ln]
    # 21 events 0.5 s apart over 10 s: one line per 2 s (6) plus the final 20/20
    assert len(render_lines) == 6
    assert render_lines[-1] == "001 render: 20/20 frames (100%)"
    assert "001 render: 4/20 frames (20%), eta 8.0 s" in lines
    assert "001 animate: denoising 1/4 steps (25%), eta 6.0 s" in lines
    assert "001 render ran 5.0 s" in lines
    assert "[1/2] 001 ok" in lines and "[2/2] 002 ok" in lines
    assert lines[-1] == "summary written to .scail-summary.json"


@pytest.mark.parametrize("is_tty", [True, False])
def test_up_to_date_batch_is_terse(is_tty: bool) -> None:
    """A no-op rerun over many fresh examples prints a handful of lines, not one per stage."""
    console, buf = make_console(is_tty)
    clock = FakeClock()
    with ProgressDisplay(console, get_time=clock) as display:  # real refresh mode: Rich's 10 Hz thread
        display.batch_started(300)
        for i in range(300):
            name = f"{i:03d}"
            display.example_started(name)
            for stage in ("pose", "render", "animate"):
                display.stage_started(name, stage)
                display.stage_finished(name, stage, "fresh", 0.001)
            display.example_finished(name, True)
            clock.now += 0.05  # 15 s in all
    out = buf.getvalue()
    assert "fresh" not in out
    if is_tty:
        assert "300/300" in out
    else:
        lines = out.splitlines()
        assert lines[0] == "scail: 300 examples" and lines[1] == "[1/300] 000 up to date"
        assert lines[-1] == "[300/300] 299 up to date"
        assert len(lines) <= 2 + 15 / 2 + 1


def test_json_mode_draws_no_bars_even_on_a_tty() -> None:
    console, buf = make_console(is_tty=True)
    clock = FakeClock()
    display = ProgressDisplay(console, json_mode=True, get_time=clock)
    assert not display.use_bars
    drive(display, clock)
    assert "━" not in buf.getvalue()
    assert "001 render ran 5.0 s" in buf.getvalue()


@pytest.mark.parametrize("is_tty", [True, False])
def test_quiet_draws_nothing_but_failures(is_tty: bool) -> None:
    console, buf = make_console(is_tty)
    clock = FakeClock()
    drive(ProgressDisplay(console, quiet=True, get_time=clock), clock)
    assert buf.getvalue() == ""

    console, buf = make_console(is_tty)
    drive(ProgressDisplay(console, quiet=True, get_time=clock), clock, fail_second=True)
    assert buf.getvalue().splitlines() == ["002 animate failed 8.0 s"]


def test_setup_logging_prints_through_the_console() -> None:
    console, buf = make_console(is_tty=False)
    setup_logging(verbose=1, console=console)
    logging.getLogger("scail.test").info("loaded 3 examples")
    logging.getLogger("scail.test").debug("hidden at -v")
    assert "loaded 3 examples" in buf.getvalue()
    assert "hidden at -v" not in buf.getvalue()

    console, buf = make_console(is_tty=False)
    setup_logging(quiet=True, console=console)
    logging.getLogger("scail.test").warning("not shown when quiet")
    logging.getLogger("scail.test").error("disk full")
    assert "not shown" not in buf.getvalue() and "disk full" in buf.getvalue()


def test_summary_table() -> None:
    from scail.batch import BatchSummary, ExampleResult
    from scail.engine import Outcome, StageOutcome
    from scail.summary import batch_table

    examples = [
        ExampleResult("001", "/x/001", [StageOutcome("pose", Outcome.FRESH, 0.01),
                                         StageOutcome("render", Outcome.RAN, 75.0)]),
        ExampleResult("002", "/x/002", [StageOutcome("pose", Outcome.FAILED, 1.5,
                                                     "driving.mp4: not a readable video"),
                                         StageOutcome("render", Outcome.SKIPPED, 0.0, "pose failed")]),
    ]
    summary = BatchSummary("tiny-random", {}, examples, started="2026-01-01T00:00:00", duration_s=76.5)
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(batch_table(summary))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    for text in (
        "example",
        "pose",
        "fresh",
        "ran 75.0s",
        "failed 1.5s",
        "pose: driving.mp4: not a readable video",
        "1/2 examples ok in 76.5s",
    ):
        assert text in out, text
    assert out.count("001") == 1  # one row per example


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0.04, 12.34, 75, 3723)] == ["0.0 s", "12.3 s", "1:15", "1:02:03"]
    assert format_duration(None) == ""


def test_phases_are_labelled_and_give_way_to_counts() -> None:
    """A phase (a label without a count) shows its name, not a silent '0/17' bar, and disappears once
    a count starts; a bar's label follows the latest description."""
    console, buf = make_console(is_tty=True)
    clock = FakeClock()
    display = ProgressDisplay(console, get_time=clock, auto_refresh=False)
    with display:
        display.batch_started(1)
        display.example_started("001")
        display.stage_started("001", "animate")
        display.on_event(ProgressEvent("001", "animate", 0, None, "phase", "loading weights"))
        assert [t.description for t in display._stages.tasks] == ["animate loading weights"]
        display.on_event(ProgressEvent("001", "animate", 0, None, "phase", "encoding text (umT5)"))
        assert [t.description for t in display._stages.tasks] == ["animate encoding text (umT5)"]
        assert "animate encoding text (umT5)" in buf.getvalue() and "0/?" not in buf.getvalue()
        display.on_event(ProgressEvent("001", "animate", 1, 4, "steps", "denoising"))
        assert [t.description for t in display._stages.tasks] == ["animate denoising"]
        display.on_event(ProgressEvent("001", "animate", 0, 17, "frames", "VAE decode + writing video"))
        display.on_event(ProgressEvent("001", "animate", 3, 17, "frames", "VAE decode + writing video"))
        assert "animate VAE decode + writing video" in buf.getvalue() and "3/17" in buf.getvalue()
        display.on_event(ProgressEvent("001", "pose", 0, 17, "frames", "loading mediapipe"))
        display.on_event(ProgressEvent("001", "pose", 1, 17, "frames", "pose (mediapipe)"))
        assert "pose (mediapipe)" in [t.description.removeprefix("pose ") for t in display._stages.tasks]

    console, buf = make_console(is_tty=False)  # plain lines: every phase once, at once
    display = ProgressDisplay(console, get_time=clock)
    with display:
        display.stage_started("001", "animate")
        for label in ("loading weights", "loading weights", "VAE encode"):
            display.on_event(ProgressEvent("001", "animate", 0, None, "phase", label))
        display.on_event(ProgressEvent("001", "animate", 0, 4, "steps", "denoising"))
    lines = buf.getvalue().splitlines()
    assert lines == ["001 animate: loading weights", "001 animate: VAE encode",
                     "001 animate: denoising 0/4 steps (0%)"], lines


def test_tables_stay_readable_at_80_columns() -> None:
    """Reasons get their own lines below the table, so they are not folded into a narrow column."""
    from scail.batch import BatchSummary, ExampleResult
    from scail.engine import Outcome, StageOutcome, Status
    from scail.outputs import SampleInfo
    from scail.summary import batch_table, status_table

    reason = ("/data/examples/an-example-with-a-long-name/driving.mp4: not a readable video (moov atom not "
              "found); re-encode it, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4")
    examples = [ExampleResult("an-example-with-a-long-name", "/x", [
        StageOutcome("pose", Outcome.FAILED, 1.5, reason), StageOutcome("render", Outcome.SKIPPED, 0.0, "pose failed"),
        StageOutcome("animate", Outcome.SKIPPED, 0.0, "pose failed")]),
        ExampleResult("002", "/y", [StageOutcome(s, Outcome.USER_PROVIDED, 0.0) for s in ("pose", "render", "animate")])]
    summary = BatchSummary("scail-preview-512p", {}, examples, started="2026-01-01T00:00:00", duration_s=3.0)
    rows = [("an-example-with-a-long-name", [(Status.FAILED, reason), (Status.MISSING, ""), (Status.MISSING, "")]),
            ("002", [(Status.USER_PROVIDED, ""), (Status.STALE, "upstream pose will rerun"), (Status.FRESH, "")])]
    samples = [SampleInfo(None, 0), SampleInfo("samples/002_42_3fa9c1d2.mp4", 2)]
    for table in (batch_table(summary), status_table(("pose", "render", "animate"), rows, samples)):
        console = Console(file=io.StringIO(), width=80, color_system=None)
        console.print(table)
        out = console.file.getvalue()  # type: ignore[attr-defined]
        lines = out.splitlines()
        assert max(len(line) for line in lines) <= 80
        assert "an-example-with-a-long-name  pose:" in out and "user-provided" in out
        # the reason wraps at the terminal's width, not in a 15-character column
        assert "/data/examples/an-example-with-a-long-name/driving.mp4: not a readable video" in out
    assert "002  render: upstream pose will rerun" in out

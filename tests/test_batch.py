"""The batch runner: isolation, resume, load-once, locks, kill -9, Ctrl-C and two runners at once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from toy_pipeline import toy_factory

from scail.batch import SerialExecutor, make_jobs, run_batch
from scail.cache import example_lock, read_manifest
from scail.config import load_pipeline
from scail.engine import Outcome
from scail.errors import ExitCode
from scail.example import Example, discover

TOY_SCRIPT = Path(__file__).resolve().parent / "toy_pipeline.py"
STAGES = ("pose", "render", "animate")


def _batch(path: Path, built: list | None = None, **overrides):
    config = load_pipeline("tiny-random", overrides)
    jobs = make_jobs(discover(path), config, STAGES)
    return run_batch(jobs, SerialExecutor(toy_factory(built=built)), json_out=path / ".scail-summary.json")


def _outputs(root: Path) -> dict[str, bytes]:
    """Every file under `root` except logs, lock files and the hash cache."""
    skip = {"lock", "lock.owner", "hashes.json", ".scail-summary.json"}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip and "logs" not in p.parts and not p.name.endswith(".json")}


def test_corrupt_video_fails_only_that_example_and_the_batch_goes_on(make_toy_example, tmp_path) -> None:
    make_toy_example("001")
    make_toy_example("002", driving=b"\x00\x00\x00 not a video")
    make_toy_example("003")
    built: list = []
    summary = _batch(tmp_path / "examples", built)
    assert summary.exit_code is ExitCode.SOME_FAILED
    assert [e.ok for e in summary.examples] == [True, False, True]
    bad = summary.examples[1]
    assert [s.outcome for s in bad.stages] == [Outcome.FAILED, Outcome.SKIPPED, Outcome.SKIPPED]
    assert bad.reason == f"pose: {tmp_path / 'examples/002/driving.mp4'}: not a readable video; re-export it as H.264 mp4"
    assert read_manifest(Example(tmp_path / "examples/002"), "pose").error == bad.reason.removeprefix("pose: ")
    # Stages were built once for the whole batch and closed at the end.
    assert [s.name for s in built] == list(STAGES)
    assert [s.runs for s in built] == [["001", "003"]] * 3  # 002 failed before writing anything
    assert all(s.closed for s in built)
    doc = json.loads((tmp_path / "examples/.scail-summary.json").read_text())
    assert doc["exit_code"] == 2 and doc["failed"] == 1 and doc["pipeline"] == "tiny-random"
    assert doc["examples"][1]["stages"][0]["outcome"] == "failed"
    assert doc["config"]["animate"]["model"] == "tiny-random"
    # Fix the input: the rerun resumes (only 002 runs) and everything succeeds.
    (tmp_path / "examples/002/driving.mp4").write_text("frames=5\n")
    built.clear()
    summary = _batch(tmp_path / "examples", built)
    assert summary.exit_code is ExitCode.OK
    assert [s.runs for s in built] == [["002"]] * 3


def test_batch_parameter_change_reruns_downstream_only(make_toy_example, tmp_path) -> None:
    make_toy_example("001")
    _batch(tmp_path / "examples")
    summary = _batch(tmp_path / "examples", **{"render.radius_mm": 25.0})
    assert [s.outcome for s in summary.examples[0].stages] == [Outcome.FRESH, Outcome.RAN, Outcome.RAN]


def test_a_summary_that_cannot_be_written_does_not_lose_the_results(make_toy_example, tmp_path) -> None:
    make_toy_example("001")
    path = tmp_path / "examples"
    (tmp_path / "not-a-folder").write_text("x")  # the summary's folder cannot exist: like a full disk
    jobs = make_jobs(discover(path), load_pipeline("tiny-random"), ("pose", "render", "animate"))
    summary = run_batch(jobs, SerialExecutor(toy_factory()), json_out=tmp_path / "not-a-folder" / "s.json")
    assert summary.exit_code == ExitCode.OK and read_manifest(Example(path / "001"), "animate").status == "done"


def test_user_provided_render_skips_pose_and_render(make_toy_example, tmp_path) -> None:
    root = make_toy_example("001")
    (root / "driving.mp4").unlink()
    (root / "rendered.mp4").write_text("my own skeleton video")
    summary = _batch(tmp_path / "examples")
    assert summary.exit_code is ExitCode.OK
    stages = summary.examples[0].stages
    assert [s.outcome for s in stages] == [Outcome.SKIPPED, Outcome.USER_PROVIDED, Outcome.RAN]
    assert stages[0].reason == "not needed: render outputs are user-provided"
    assert (root / "rendered.mp4").read_text() == "my own skeleton video"


def test_a_locked_example_is_skipped_then_reported(make_toy_example, tmp_path) -> None:
    make_toy_example("001")
    make_toy_example("002")
    with example_lock(Example(tmp_path / "examples/001")):
        summary = _batch(tmp_path / "examples")
    assert summary.exit_code is ExitCode.SOME_FAILED
    locked = summary.examples[0]
    assert {s.outcome for s in locked.stages} == {Outcome.LOCKED}
    assert "locked by another runner" in locked.reason
    assert summary.examples[1].ok
    assert _batch(tmp_path / "examples").exit_code is ExitCode.OK


# ----------------------------------------------------------------------------------------------
# Real processes
# ----------------------------------------------------------------------------------------------


def _start(path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(TOY_SCRIPT), str(path), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the runner"
        time.sleep(0.02)


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp-" in p.name or p.name.endswith(".tmp")]


def test_kill_9_mid_stage_then_rerun_completes_with_no_partial_output(make_toy_example, tmp_path) -> None:
    for name in ("001", "002"):
        make_toy_example(name)
    path = tmp_path / "examples"
    proc = _start(path, "--delay", "3")
    _wait_for(lambda: bool(_temp_files(path)))  # a stage is half-way through writing its output
    time.sleep(0.2)
    proc.kill()
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    ex = Example(path / "001")
    assert read_manifest(ex, "pose").status == "running"
    assert not ex.pose_data.exists()  # the half-written file never got the real name

    rerun = _start(path)
    _, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    assert _temp_files(path) == []
    # Resumed result == uninterrupted result (the equivalence pattern).
    for name in ("001", "002"):
        make_toy_example(f"clean/{name}")
    clean = _start(tmp_path / "examples/clean")
    assert clean.wait(timeout=60) == 0
    for name in ("001", "002"):
        assert _outputs(path / name) == _outputs(path / "clean" / name)
        assert {read_manifest(Example(path / name), s).status for s in STAGES} == {"done"}


def test_ctrl_c_records_interrupted_and_exits_130(make_toy_example, tmp_path) -> None:
    make_toy_example("001")
    make_toy_example("002")
    path = tmp_path / "examples"
    events = tmp_path / "events.log"
    proc = _start(path, "--delay", "10", "--events", str(events))
    _wait_for(lambda: events.exists() and "start" in events.read_text())
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert time.monotonic() - t0 < 9  # stopped at a progress report (every 1 s), not after the 10 s stage
    ex = Example(path / "001")
    assert read_manifest(ex, "pose").status == "interrupted"
    assert not ex.pose_data.exists() and _temp_files(path) == []
    assert read_manifest(Example(path / "002"), "pose") is None  # the batch stopped
    doc = json.loads((path / ".scail-summary.json").read_text())
    assert doc["interrupted"] is True and doc["exit_code"] == 130


def test_two_runners_never_process_the_same_example_at_once(make_toy_example, tmp_path) -> None:
    names = ["001", "002", "003", "004"]
    for name in names:
        make_toy_example(name)
    path = tmp_path / "examples"
    events = tmp_path / "events.log"
    go = tmp_path / "go"
    procs = [_start(path, "--delay", "0.3", "--events", str(events), "--ready", str(tmp_path / f"ready{i}"),
                    "--go", str(go)) for i in range(2)]
    _wait_for(lambda: (tmp_path / "ready0").exists() and (tmp_path / "ready1").exists(), timeout_s=60)
    go.touch()  # both start together
    codes = [p.wait(timeout=120) for p in procs]
    assert set(codes) <= {0, 2}, [p.stderr.read() for p in procs]
    rows = [line.split() for line in events.read_text().splitlines()]
    spans: dict[tuple[str, str], list[tuple[float, float, str]]] = {}
    open_: dict[tuple[str, str, str], float] = {}
    for t, pid, what, example, stage in rows:
        if what == "start":
            open_[(pid, example, stage)] = float(t)
        else:
            spans.setdefault((example, stage), []).append((open_.pop((pid, example, stage)), float(t), pid))
    # Every stage of every example ran exactly once in total: nothing was done twice.
    assert sorted(spans) == sorted((n, s) for n in names for s in STAGES)
    assert all(len(v) == 1 for v in spans.values())
    # Both runners did work, and for each example no two runners' stage spans overlap.
    assert len({pid for v in spans.values() for _, _, pid in v}) == 2
    for name in names:
        by_pid: dict[str, tuple[float, float]] = {}
        for (example, _), v in spans.items():
            if example == name:
                for start, end, pid in v:
                    lo, hi = by_pid.get(pid, (start, end))
                    by_pid[pid] = (min(lo, start), max(hi, end))
        if len(by_pid) == 2:
            (a0, a1), (b0, b1) = by_pid.values()
            assert a1 <= b0 or b1 <= a0, f"{name} processed by two runners at once"
    assert _batch(path).exit_code is ExitCode.OK  # everything is fresh afterwards


def test_each_example_gets_a_debug_log_file(make_toy_example, tmp_path) -> None:
    make_toy_example("001")
    _batch(tmp_path / "examples")
    text = (tmp_path / "examples/001/.scail/logs/scail.log").read_text()
    assert "DEBUG" in text or "INFO" in text
    assert "001: animate done" in text


def test_previews_are_written_behind_the_next_example_under_the_first_ones_lock(tmp_path: Path) -> None:
    """`PreviewsBehind`: example a's previews run on their thread while the main thread goes on with
    example b; a stays locked until they are written, and each example's log gets its own records."""
    import contextlib
    import logging
    import threading

    from scail.batch import PreviewsBehind
    from scail.cache import is_locked
    from scail.logs import example_log_file

    a, b = Example(tmp_path / "a"), Example(tmp_path / "b")
    for ex in (a, b):
        ex.root.mkdir()
    log = logging.getLogger("scail.test")
    may_finish, seen = threading.Event(), {}
    behind = PreviewsBehind()

    def write(observer: object) -> None:
        seen["observer"] = observer
        seen["a locked while writing"] = is_locked(a)
        log.info("writing a's previews")
        assert may_finish.wait(10)

    with contextlib.ExitStack() as held:
        held.enter_context(example_lock(a))
        held.enter_context(example_log_file(a)).previews = True
        behind.submit("a", write, held.pop_all())
    with example_lock(b), example_log_file(b):  # the next example runs meanwhile
        log.info("running b's stages")
        assert is_locked(a)
    may_finish.set()
    behind.close()
    assert seen == {"observer": None, "a locked while writing": True}
    assert not is_locked(a)
    a_log = (a.state_dir / "logs" / "scail.log").read_text(encoding="utf-8")
    b_log = (b.state_dir / "logs" / "scail.log").read_text(encoding="utf-8")
    assert "writing a's previews" in a_log and "running b's stages" not in a_log
    assert "running b's stages" in b_log and "writing a's previews" not in b_log


def test_a_failing_previews_step_releases_the_lock_and_the_batch_goes_on(tmp_path: Path) -> None:
    import contextlib

    from scail.batch import PreviewsBehind
    from scail.cache import is_locked

    a = Example(tmp_path / "a")
    a.root.mkdir()
    behind = PreviewsBehind()

    def write(observer: object) -> None:
        raise RuntimeError("no codec")

    with contextlib.ExitStack() as held:
        held.enter_context(example_lock(a))
        behind.submit("a", write, held.pop_all())
    behind.close()
    assert not is_locked(a)

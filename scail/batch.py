"""The batch runner: many examples through a list of stages, each example isolated.

    jobs = [ExampleJob(root, config, ("pose", "render", "animate")) for root in ...]
    summary = run_batch(jobs)            # SerialExecutor(build_stages) by default
    summary.exit_code                    # 0 all ok, 2 some failed/locked, 130 Ctrl-C

- One example's failure is recorded in its manifest with a one-line reason; the batch goes on.
- A rerun resumes: fresh stages are skipped, failed and interrupted ones run again.
- Ctrl-C sets the cancel event: the running stage stops at its next progress report, its manifest
  says "interrupted", and the batch stops (a second Ctrl-C aborts at once).
- Stage objects are built once per executor (heavy models load once) and closed at the end.
- An example locked by another runner is skipped, then retried once after the others.

The per-example job is a plain function of picklable data (`run_example(job, stages, ...)`), so an
executor that ships jobs to other processes can reuse it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from scail.cache import ExampleLocked, HashCache, atomic_write_text, example_lock, now_iso
from scail.config import STAGES, PipelineConfig
from scail.engine import (
    Outcome,
    StageOutcome,
    disk_full_reason,
    is_disk_full,
    one_line,
    run_stage,
    user_outputs,
)
from scail.errors import ExitCode, InputError, Interrupted, ScailError
from scail.example import Example
from scail.logs import PREVIEWS_THREAD, example_log_file
from scail.outputs import OutputLedger
from scail.preflight import example_problem
from scail.stage import PHASE, ProgressEvent, Stage

log = logging.getLogger(__name__)

SUMMARY_NAME = ".scail-summary.json"


# ----------------------------------------------------------------------------------------------
# Jobs and results
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExampleJob:
    """Everything needed to process one example (plain, picklable data)."""

    root: Path
    config: PipelineConfig
    stages: tuple[str, ...] = STAGES
    force: frozenset[str] = frozenset()
    """Stage names to rerun even when fresh or user-provided."""
    prompt: str | None = None
    """--prompt: overrides prompt.txt for the animate stage."""
    lock_wait_s: float = 0.0
    problem: str = ""
    """Why this example cannot run at all (its scail.yaml is invalid): it fails alone, the batch goes on."""


@dataclass
class ExampleResult:
    """What happened to one example: one outcome per stage."""

    name: str
    root: str
    stages: list[StageOutcome] = field(default_factory=list)
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    """What else the batch did for this example (e.g. retried after its Ray worker died)."""

    @property
    def ok(self) -> bool:
        return all(s.outcome.is_ok for s in self.stages)

    @property
    def interrupted(self) -> bool:
        return any(s.outcome is Outcome.INTERRUPTED for s in self.stages)

    @property
    def reason(self) -> str:
        """The first failure's one-line reason ('' when ok)."""
        return next((f"{s.stage}: {s.reason}" for s in self.stages if not s.outcome.is_ok), "")

    @property
    def outputs(self) -> list[str]:
        """The files of the last stage that has any: the example's result (its newest sample after animate)."""
        return next((s.outputs for s in reversed(self.stages) if s.outputs and s.outcome.is_ok), [])


@dataclass
class BatchSummary:
    """Every example, stage, status and time of one batch (the table and the JSON file)."""

    pipeline: str
    config: dict[str, Any]
    examples: list[ExampleResult]
    started: str
    duration_s: float = 0.0
    interrupted: bool = False

    @property
    def exit_code(self) -> ExitCode:
        if self.interrupted:
            return ExitCode.INTERRUPTED
        return ExitCode.OK if all(e.ok for e in self.examples) else ExitCode.SOME_FAILED

    def counts(self) -> dict[str, int]:
        ok = sum(e.ok for e in self.examples)
        return {"examples": len(self.examples), "ok": ok, "failed": len(self.examples) - ok}

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": 1,
            "pipeline": self.pipeline,
            "started": self.started,
            "duration_s": round(self.duration_s, 3),
            "exit_code": int(self.exit_code),
            "interrupted": self.interrupted,
            **self.counts(),
            "examples": [
                {
                    "name": e.name, "path": e.root, "ok": e.ok, "reason": e.reason, "notes": e.notes,
                    "duration_s": round(e.duration_s, 3), "outputs": e.outputs,
                    "stages": [{"stage": s.stage, "outcome": s.outcome.value, "duration_s": round(s.duration_s, 3),
                                "reason": s.reason, "outputs": s.outputs} for s in e.stages],
                }
                for e in self.examples
            ],
            "config": self.config,
        }

    def write_json(self, path: Path) -> None:
        indent = 1 if len(self.examples) <= 200 else None  # big batches: compact and quick
        atomic_write_text(path, json.dumps(self.to_dict(), indent=indent))


# ----------------------------------------------------------------------------------------------
# Observers (progress display) and stage construction
# ----------------------------------------------------------------------------------------------


class BatchObserver(Protocol):
    """What the batch tells the display (scail/progress.py `ProgressDisplay` implements this)."""

    def batch_started(self, total_examples: int) -> None: ...
    def example_started(self, name: str) -> None: ...
    def stage_started(self, example: str, stage: str) -> None: ...
    def stage_finished(self, example: str, stage: str, status: str, duration_s: float) -> None: ...
    def example_finished(self, name: str, ok: bool) -> None: ...
    def on_event(self, event: ProgressEvent) -> None: ...
    def log(self, msg: str) -> None: ...


class NullObserver:
    """Discards everything (library use and tests)."""

    def batch_started(self, total_examples: int) -> None: ...
    def example_started(self, name: str) -> None: ...
    def stage_started(self, example: str, stage: str) -> None: ...
    def stage_finished(self, example: str, stage: str, status: str, duration_s: float) -> None: ...
    def example_finished(self, name: str, ok: bool) -> None: ...
    def on_event(self, event: ProgressEvent) -> None: ...
    def log(self, msg: str) -> None: ...


StageFactory = Callable[[PipelineConfig, Sequence[str], "str | None"], list[Stage]]


def build_stages(config: PipelineConfig, names: Sequence[str], prompt: str | None = None) -> list[Stage]:
    """Build the named stages from the config blocks (heavy models load lazily inside them)."""
    stages: list[Stage] = []
    for name in names:
        if name not in STAGES:
            raise InputError(f"unknown stage '{name}'; choose from {', '.join(STAGES)}")
        try:
            stages.append(_build_one(config, name, prompt))
        except ImportError as exc:
            raise ScailError(f"the {name} stage is not available in this install ({exc})") from exc
    return stages


# ----------------------------------------------------------------------------------------------
# One example
# ----------------------------------------------------------------------------------------------


def _build_one(config: PipelineConfig, name: str, prompt: str | None) -> Stage:
    if name == "pose":
        from scail.pose.stage import PoseStage

        return PoseStage(config.pose)
    if name == "render":
        from scail.render.stage import RenderStage

        return RenderStage(config.render)
    from scail.animate.stage import AnimateStage

    return AnimateStage(config.animate, prompt_override=prompt, preset=config.name)


def _user_files(stages: Sequence[Stage], example: Example, force: frozenset[str],
                hashes: HashCache, ledger: OutputLedger) -> list[list[Path]]:
    """Each stage's user-provided outputs (none for forced stages)."""
    return [[] if s.name in force else user_outputs(s, example, hashes, ledger) for s in stages]


def run_example(job: ExampleJob, stages: Sequence[Stage], observer: BatchObserver | None = None,
                cancel: threading.Event | None = None, previews: PreviewsBehind | None = None) -> ExampleResult:
    """Run the stages on one example under its lock; never raises for the example's own failures.

    The previews are written after the stages, here, or on `previews`' thread when given: the
    example is then finished (its result returned) while its lock is still held for its previews.
    """
    observer = observer or NullObserver()
    example = Example(job.root)
    name = example.name  # resolves the path: compute once
    result = ExampleResult(name=name, root=str(job.root))
    t0 = time.perf_counter()
    observer.example_started(name)
    try:
        with contextlib.ExitStack() as held:
            held.enter_context(example_lock(example, job.lock_wait_s))
            example_log = held.enter_context(example_log_file(example))
            hashes = HashCache(example)
            write = _run_locked(job, stages, example, name, result, observer, cancel, hashes)
            if write is not None:
                if previews is None:
                    write(observer)
                else:  # the lock and the log file go with the job; the thread lets them go
                    example_log.previews = True
                    previews.submit(name, write, held.pop_all())
    except ExampleLocked as exc:
        result.stages = [StageOutcome(s.name, Outcome.LOCKED, reason=one_line(exc)) for s in stages]
    except ScailError as exc:  # e.g. the example folder was deleted while the batch ran
        result.stages = [StageOutcome(stages[0].name, Outcome.FAILED, reason=one_line(exc))]
    except OSError as exc:  # e.g. a read-only example folder: .scail/ cannot be created; a full disk
        reason = (disk_full_reason(example, stages[0].name) if is_disk_full(exc) else
                  f"{example.root}: {exc.strerror or exc}")
        result.stages = [StageOutcome(stages[0].name, Outcome.FAILED, reason=reason)]
    result.duration_s = time.perf_counter() - t0
    observer.example_finished(name, result.ok)
    return result


WritePreviews = Callable[[BatchObserver | None], None]
"""An example's previews step (`_run_locked` returns it): writes them, then saves the hash cache;
the observer hears of it when given (None from the previews thread: the display is the main thread's)."""


def _run_locked(job: ExampleJob, stages: Sequence[Stage], example: Example, name: str, result: ExampleResult,
                observer: BatchObserver, cancel: threading.Event | None, hashes: HashCache) -> WritePreviews | None:
    """The stages, in order; returns the previews step still to do (None: nothing more to do)."""
    problem = example_problem(job, example)
    if problem is not None:  # e.g. a prompt.txt that is not UTF-8: fail before pose runs
        bad_stage, reason = problem
        result.stages = [StageOutcome(s.name, Outcome.FAILED, reason=reason) if s.name == bad_stage else
                         StageOutcome(s.name, Outcome.SKIPPED, reason=f"not run: {reason}") for s in stages]
        return None
    ledger = OutputLedger(example)
    user = _user_files(stages, example, job.force, hashes, ledger)
    # Stages above the last user-provided one are not needed: a hand-made rendered.mp4 means pose
    # and render have nothing to do for this example, even when driving.mp4 is absent.
    start = max((i for i, files in enumerate(user) if files), default=0)
    for stage in stages[:start]:
        result.stages.append(StageOutcome(stage.name, Outcome.SKIPPED,
                                          reason=f"not needed: {stages[start].name} outputs are user-provided"))
    failed: str | None = None
    try:
        for stage, user_files in zip(stages[start:], user[start:], strict=True):
            if failed is not None:
                result.stages.append(StageOutcome(stage.name, Outcome.SKIPPED, reason=f"{failed} failed"))
                continue
            observer.stage_started(name, stage.name)
            try:
                outcome = run_stage(stage, example, on_event=observer.on_event, cancel=cancel,
                                    force=stage.name in job.force, hashes=hashes, user_files=user_files,
                                    ledger=ledger)
            except Interrupted as exc:
                outcome = StageOutcome(stage.name, Outcome.INTERRUPTED, reason=one_line(exc))
            observer.stage_finished(name, stage.name, outcome.outcome.value, outcome.duration_s)
            result.stages.append(outcome)
            if outcome.outcome is Outcome.INTERRUPTED:
                return None
            if not outcome.outcome.is_ok:
                failed = stage.name
                log.debug("%s: %s failed: %s", name, stage.name, outcome.reason)
    finally:
        hashes.save()
    if not job.config.previews.enabled or (cancel is not None and cancel.is_set()):
        return None

    def write(observer: BatchObserver | None) -> None:
        try:
            _write_previews(job, example, result, ledger, observer, cancel, hashes)
        finally:
            hashes.save()

    return write


def _write_previews(job: ExampleJob, example: Example, result: ExampleResult, ledger: OutputLedger,
                    observer: BatchObserver | None, cancel: threading.Event | None, hashes: HashCache) -> None:
    """The previews of the stages that went well (scail/previews/); never fails the example."""
    if cancel is not None and cancel.is_set():
        return
    from scail.previews import write_previews

    done: list[str] = []
    for s in result.stages:  # the stages up to the first failure (later ones were skipped for it)
        if not s.outcome.is_ok:
            break
        done.append(s.stage)
    t0 = time.perf_counter()
    started: list[bool] = []

    def on_progress(i: int, total: int, what: str) -> None:
        if i >= total or observer is None:
            return
        if not started:
            observer.stage_started(result.name, "previews")
            started.append(True)
        observer.on_event(ProgressEvent(result.name, "previews", 0, None, PHASE, f"writing previews/{what}"))

    try:
        write_previews(example, job.config, done, ledger, on_progress, hashes)
    except Exception as exc:  # write_previews catches each preview's failure; this is the last guard
        log.warning("%s: previews failed: %s", result.name, one_line(exc))
    if started and observer is not None:
        observer.stage_finished(result.name, "previews", "ran", time.perf_counter() - t0)


class PreviewsBehind:
    """Writes finished examples' previews on one background thread, in order.

    The previews are CPU work (decoding the sample, composing, H.264) of a second or two per clip;
    on this thread they overlap the next example's stages (the GPU's sampling) instead of delaying
    them. Each job holds its example's lock until its previews are written, so another runner
    never sees the example half-done. `drain()` waits for every job (the batch calls it before its
    summary: when `scail run` returns, the previews are on disk).
    """

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=PREVIEWS_THREAD)
        self._pending: list[Any] = []

    def submit(self, name: str, write: WritePreviews, held: contextlib.ExitStack) -> None:
        """Write `name`'s previews, then close `held` (its lock and log file)."""

        def job() -> None:
            with held:
                try:
                    write(None)
                except Exception as exc:  # write_previews guards each preview; this is the last guard
                    log.warning("%s: previews failed: %s", name, one_line(exc))

        self._pending = [f for f in self._pending if not f.done()]
        try:
            self._pending.append(self._pool.submit(job))
        except RuntimeError:  # shut down already (a batch closing on Ctrl-C): write them here
            job()

    def drain(self) -> None:
        """Wait until every submitted example's previews are written and its lock released."""
        for future in self._pending:
            future.result()
        self._pending.clear()

    def close(self) -> None:
        self.drain()
        self._pool.shutdown(wait=True)


# ----------------------------------------------------------------------------------------------
# Executors
# ----------------------------------------------------------------------------------------------


class Executor(Protocol):
    """Runs example jobs and yields their results (in any order)."""

    def run(self, jobs: Sequence[ExampleJob], observer: BatchObserver,
            cancel: threading.Event) -> Iterator[ExampleResult]: ...

    def close(self) -> None: ...


class SerialExecutor:
    """Runs jobs one after the other in this process; stages are built once and reused.

    Each example's previews are written on a background thread while the next example runs
    (`PreviewsBehind`); `close()` waits for them.
    """

    def __init__(self, factory: StageFactory | None = None) -> None:
        self._factory = factory
        self._built: dict[str, list[Stage]] = {}
        self._last: tuple[PipelineConfig, tuple[tuple[str, ...], str | None], list[Stage]] | None = None
        self._previews: PreviewsBehind | None = None

    def stages_for(self, job: ExampleJob) -> list[Stage]:
        """The stages for this job's config, built on first use (jobs of one batch share them)."""
        if self._last is not None and self._last[0] is job.config and self._last[1] == (job.stages, job.prompt):
            return self._last[2]
        key = json.dumps([job.config.model_dump(mode="json"), job.stages, job.prompt], sort_keys=True)
        if key not in self._built:
            factory = self._factory or build_stages
            self._built[key] = factory(job.config, job.stages, job.prompt)
        self._last = (job.config, (job.stages, job.prompt), self._built[key])
        return self._built[key]

    def run(self, jobs: Sequence[ExampleJob], observer: BatchObserver,
            cancel: threading.Event) -> Iterator[ExampleResult]:
        if self._previews is None:
            self._previews = PreviewsBehind()
        for job in jobs:
            if cancel.is_set():
                return
            yield run_example(job, self.stages_for(job), observer, cancel, self._previews)

    def close(self) -> None:
        try:
            if self._previews is not None:  # a second Ctrl-C here still frees the models below
                self._previews.close()
        finally:
            self._previews = None
            for stages in self._built.values():
                for stage in stages:
                    try:
                        stage.close()
                    except Exception as exc:  # closing must not hide the batch's result
                        log.warning("closing the %s stage failed: %s", stage.name, exc)
            self._built.clear()
            self._last = None


# ----------------------------------------------------------------------------------------------
# The batch
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _ctrl_c_sets(cancel: threading.Event, observer: BatchObserver) -> Iterator[None]:
    """First Ctrl-C: set `cancel` (the stage stops at its next progress report). Second: abort now."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        observer.log("Ctrl-C: stopping after the current step (press again to abort now)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_batch(jobs: Sequence[ExampleJob], executor: Executor | None = None,
              observer: BatchObserver | None = None, cancel: threading.Event | None = None,
              json_out: Path | None = None) -> BatchSummary:
    """Run every job; locked examples are retried once at the end. Writes the JSON summary if asked.

    The executor (default: `SerialExecutor()` with the real stages) belongs to this batch and is
    closed at the end.
    """
    observer = observer or NullObserver()
    cancel = cancel or threading.Event()
    executor = executor or SerialExecutor()
    config = jobs[0].config if jobs else PipelineConfig()
    summary = BatchSummary(pipeline=config.name, config=config.model_dump(mode="json"), examples=[],
                           started=now_iso())
    t0 = time.perf_counter()
    observer.batch_started(len(jobs))
    results: dict[Path, ExampleResult] = {}
    try:
        with _ctrl_c_sets(cancel, observer):
            try:
                for r in executor.run(jobs, observer, cancel):
                    results[Path(r.root)] = r
                    if r.interrupted:
                        cancel.set()
                locked = [j for j in jobs if Path(j.root) in results
                          and any(s.outcome is Outcome.LOCKED for s in results[Path(j.root)].stages)]
                if locked and not cancel.is_set():
                    log.info("retrying %d example(s) that another runner held", len(locked))
                    for r in executor.run(locked, observer, cancel):
                        results[Path(r.root)] = r
            except KeyboardInterrupt:
                cancel.set()
    finally:
        executor.close()  # stages close here: models are freed once the batch is over
    summary.examples = [results[Path(j.root)] for j in jobs if Path(j.root) in results]
    summary.interrupted = cancel.is_set()
    summary.duration_s = time.perf_counter() - t0
    if json_out is not None:
        try:
            summary.write_json(json_out)
        except OSError as exc:  # a full disk or a read-only folder: the results stand (manifests, table)
            log.error("%s: could not write the batch summary (%s)", json_out, exc.strerror or exc)
    return summary


def make_jobs(examples: Iterable[Example], config: PipelineConfig, stages: Sequence[str],
              force: Iterable[str] = (), prompt: str | None = None, lock_wait_s: float = 0.0,
              flag_keys: Iterable[str] = ()) -> list[ExampleJob]:
    """One job per example: the resolved config with the example's scail.yaml applied, except the
    config keys in `flag_keys` (set on the command line, which wins)."""
    from scail.example_settings import config_for_example

    forced, protected = frozenset(force), frozenset(flag_keys)
    jobs = []
    for e in examples:
        try:
            jobs.append(ExampleJob(e.root, config_for_example(config, e.root, protected), tuple(stages), forced,
                                   prompt, lock_wait_s))
        except InputError as exc:  # one bad scail.yaml fails its example, not the batch
            jobs.append(ExampleJob(e.root, config, tuple(stages), forced, prompt, lock_wait_s, one_line(exc)))
    return jobs

"""Run a batch's examples on Ray actors (`scail run DIR --executor ray`), behind `batch.Executor`.

    driver (scail run)                                   actors (one per GPU, or per group of N GPUs)
      queue of ExampleJobs ── run(job) ───────────────►  SerialExecutor: stages built once, models resident
      rich display  ◄──────── drain(): lifecycle calls    run_example(job): the example lock, manifests,
                               and progress events         outputs, exactly as a local run
      ExampleResult ◄──────── return value

Each actor runs `batch.run_example`, the same function as the local executor, so the same
manifests and per-example locks are used: on a shared filesystem a Ray run and a local run skip
what the other finished and never process an example at once. An actor that dies (killed, out of
memory, node lost) has its example retried once on another actor; the example's summary notes it.
A second failure of the same kind is recorded as a failed example. Without an address a local Ray
is started (and shut down at the end); with one, scail connects to that cluster.

`ray` is an optional extra: `pip install 'scail[ray]'`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scail.batch import BatchObserver, ExampleJob, ExampleResult, SerialExecutor, run_example
from scail.engine import Outcome, StageOutcome
from scail.errors import ScailError
from scail.stage import ProgressEvent

log = logging.getLogger(__name__)

POLL_S = 0.2
"""How often the driver forwards the actors' progress to the display."""


def require_ray() -> Any:
    """The `ray` module, or a one-line ScailError with the install command."""
    try:
        import ray
    except ImportError:
        raise ScailError("--executor ray needs Ray, which is not installed; pip install 'scail[ray]'") from None
    return ray


@dataclass(frozen=True)
class RayOptions:
    """Where and how many actors run.

    Attributes:
        address: a running cluster ("auto", "ray://host:10001", "host:6379"); None starts a local Ray.
        workers: how many actors; None: one per `gpus_per_worker` GPUs of the cluster, or 1 without GPUs.
        gpus_per_worker: GPUs each actor holds (a sequence-parallel group of N GPUs is one actor); 0: CPU.
        require_gpus: fail when the cluster has no GPUs (device cuda); else such a cluster gets CPU actors.
        cpus_per_worker: CPUs each actor reserves.
        num_cpus, object_store_mb: size of a local Ray (None: Ray's defaults; tests keep both small).
        torch_threads: CPU threads of torch in each actor (None: Ray's choice, one per reserved CPU).
            CPU matmuls sum in an order that depends on the thread count, so bit-exact agreement
            with a local run on the CPU needs the local run's count.
    """

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: int = 0
    require_gpus: bool = False
    cpus_per_worker: float = 1.0
    num_cpus: int | None = None
    object_store_mb: int | None = None
    torch_threads: int | None = None


class _Recorder:
    """Inside an actor: records the batch observer calls for the driver to replay (`drain`)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._lock = threading.Lock()
        self._calls: list[tuple[str, tuple[Any, ...]]] = []

    def _add(self, name: str, *args: Any) -> None:
        with self._lock:
            self._calls.append((name, args))

    def drain(self) -> list[tuple[str, tuple[Any, ...]]]:
        with self._lock:
            calls, self._calls = self._calls, []
        return calls

    def batch_started(self, total_examples: int) -> None: ...
    def example_started(self, name: str) -> None:
        self._add("example_started", name)

    def stage_started(self, example: str, stage: str) -> None:
        self._add("stage_started", example, stage)

    def stage_finished(self, example: str, stage: str, status: str, duration_s: float) -> None:
        self._add("stage_finished", example, stage, status, duration_s)

    def example_finished(self, name: str, ok: bool) -> None:
        self._add("example_finished", name, ok)

    def on_event(self, event: ProgressEvent) -> None:
        desc = f"[{self.label}] {event.desc}".rstrip()
        self._add("on_event", dataclasses.replace(event, desc=desc))

    def log(self, msg: str) -> None:
        self._add("log", f"[{self.label}] {msg}")


class ExampleWorker:
    """The actor class (wrapped with `ray.remote` by `RayExecutor`): models stay loaded across examples."""

    def __init__(self, label: str, torch_threads: int | None = None) -> None:
        logging.basicConfig(level=logging.WARNING, format=f"{label}: %(levelname)s %(message)s")
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
        self.label = label
        self.executor = SerialExecutor()
        self.recorder = _Recorder(label)
        self.cancel = threading.Event()

    def pid(self) -> int:
        return os.getpid()

    def run(self, job: ExampleJob) -> ExampleResult:
        return run_example(job, self.executor.stages_for(job), self.recorder, self.cancel)

    def drain(self) -> list[tuple[str, tuple[Any, ...]]]:
        return self.recorder.drain()

    def stop(self) -> None:
        """Ctrl-C on the driver: the running stage stops at its next progress report."""
        self.cancel.set()

    def close(self) -> None:
        self.executor.close()


@dataclass
class _Slot:
    """One actor as the driver sees it."""

    label: str
    actor: Any
    alive: bool = True
    busy: tuple[Any, ExampleJob] | None = None  # (object ref of run(), job)


class RayExecutor:
    """`batch.Executor` on Ray actors (see the module docstring)."""

    def __init__(self, options: RayOptions | None = None) -> None:
        self.options = options or RayOptions()
        self._ray = require_ray()
        self._started_ray = False
        self._slots: list[_Slot] = []
        self._cls: Any = None
        self.retried: dict[str, str] = {}
        """Example root -> what happened, for examples whose actor died (retried once)."""
        self._attempts: dict[str, int] = {}  # example root -> 0 first run, 1 the retry

    # ------------------------------------------------------------------------------------------

    def _connect(self) -> None:
        ray, opts = self._ray, self.options
        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "configure_logging": False}
        if opts.address is None:
            if opts.num_cpus is not None:
                kwargs["num_cpus"] = opts.num_cpus
            if opts.object_store_mb is not None:
                kwargs["object_store_memory"] = opts.object_store_mb * 2**20
            # the actors import scail the way this process does (a source checkout on PYTHONPATH too)
            kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(_import_paths())}}
        else:
            kwargs = {"address": opts.address, "log_to_driver": False}
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = opts.address or "a local Ray"
            raise ScailError(f"--executor ray: could not start or reach {where} ({str(exc).splitlines()[0]})") from exc
        self._started_ray = True

    def _worker_count(self) -> int:
        opts = self.options
        if opts.gpus_per_worker:
            gpus = int(self._ray.cluster_resources().get("GPU", 0))
            if gpus == 0 and not opts.require_gpus:  # --device auto on a cluster without GPUs
                self.options = opts = dataclasses.replace(opts, gpus_per_worker=0)
            elif gpus < opts.gpus_per_worker:
                raise ScailError(f"--executor ray: the cluster has {gpus} GPU(s), a worker needs "
                                 f"{opts.gpus_per_worker}; use --device cpu or a cluster with GPUs")
            elif opts.workers is None:
                return gpus // opts.gpus_per_worker
        return opts.workers or 1

    def _start_actor(self, index: int) -> _Slot:
        if self._cls is None:
            self._cls = self._ray.remote(ExampleWorker).options(
                num_cpus=self.options.cpus_per_worker, num_gpus=self.options.gpus_per_worker,
                max_concurrency=2,  # run() in one thread, drain()/stop() beside it
            )
        label = f"w{index}"
        return _Slot(label, self._cls.remote(label, self.options.torch_threads))

    def worker_pids(self) -> list[int]:
        """Process ids of the live actors (started on first use)."""
        return [self._ray.get(s.actor.pid.remote()) for s in self._slots if s.alive]

    # ------------------------------------------------------------------------------------------

    def run(self, jobs: Sequence[ExampleJob], observer: BatchObserver,
            cancel: threading.Event) -> Iterator[ExampleResult]:
        ray = self._ray
        self._connect()
        if not self._slots:
            self._slots = [self._start_actor(i) for i in range(self._worker_count())]
            observer.log(f"ray: {len(self._slots)} worker(s)"
                         + (f", {self.options.gpus_per_worker} GPU(s) each" if self.options.gpus_per_worker else ""))
        queue: deque[tuple[ExampleJob, int]] = deque((job, 0) for job in jobs)
        stopping = False
        while queue or any(s.busy for s in self._slots):
            if cancel.is_set() and not stopping:
                stopping = True
                queue.clear()
                for s in self._slots:
                    if s.busy:
                        s.actor.stop.remote()
            for slot in self._slots:
                if slot.alive and slot.busy is None and queue:
                    job, attempt = queue.popleft()
                    slot.busy = (slot.actor.run.remote(job), job)
                    self._attempts[str(job.root)] = attempt
            refs = [s.busy[0] for s in self._slots if s.busy]
            if not refs:
                if queue:  # every actor died: start a new one for the retries
                    self._slots.append(self._start_actor(len(self._slots)))
                    continue
                break
            done, _ = ray.wait(refs, num_returns=len(refs), timeout=POLL_S)
            self._forward(observer)
            for slot in [s for s in self._slots if s.busy and s.busy[0] in done]:
                assert slot.busy is not None
                ref, job = slot.busy
                slot.busy = None
                result = self._result(slot, ref, job, observer, queue)
                if result is not None:
                    yield result

    def _result(self, slot: _Slot, ref: Any, job: ExampleJob, observer: BatchObserver,
                queue: deque[tuple[ExampleJob, int]]) -> ExampleResult | None:
        ray = self._ray
        try:
            result: ExampleResult = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
            slot.alive = False
            name = Path(job.root).name
            attempt = self._attempts.get(str(job.root), 0)
            what = f"worker {slot.label} died while running it ({type(exc).__name__})"
            if attempt == 0:
                observer.log(f"{name}: {what}; retrying it once on another worker")
                self.retried[str(job.root)] = what
                queue.appendleft((job, 1))
                return None
            reason = f"{what}, and on its retry too"
            return ExampleResult(name=name, root=str(job.root),
                                 stages=[StageOutcome(job.stages[-1], Outcome.FAILED, reason=reason)])
        except ray.exceptions.RayTaskError as exc:  # run_example raised (a bug, not the example's failure)
            raise ScailError(f"{Path(job.root).name}: worker {slot.label} failed: {exc}") from exc
        self._forward(observer, only=slot)
        note = self.retried.get(str(job.root))
        if note:
            result.notes.append(f"retried: {note}")
        return result

    def _forward(self, observer: BatchObserver, only: _Slot | None = None) -> None:
        """Replay the actors' recorded observer calls on the driver's display."""
        slots = [only] if only is not None else [s for s in self._slots if s.alive and s.busy]
        refs = [s.actor.drain.remote() for s in slots]
        for ref in refs:
            try:
                calls = self._ray.get(ref, timeout=30)
            except Exception:  # a dead actor's progress is lost with it
                continue
            for name, args in calls:
                getattr(observer, name)(*args)

    def close(self) -> None:
        ray = self._ray
        for slot in self._slots:
            if slot.alive:
                with contextlib.suppress(Exception):
                    ray.get(slot.actor.close.remote(), timeout=60)
                with contextlib.suppress(Exception):
                    ray.kill(slot.actor)
        self._slots = []
        if self._started_ray and self.options.address is None:
            with contextlib.suppress(Exception):
                ray.shutdown()
        self._started_ray = False


def _import_paths() -> list[str]:
    """The folder scail is imported from, then this process's PYTHONPATH."""
    here = str(Path(__file__).resolve().parents[1])
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != here]
    return [here, *extra]


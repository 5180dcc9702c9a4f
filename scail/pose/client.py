"""Parent side of the pose worker: spawn it in the pose env, stream its events, enforce the timeout.

One `PoseWorker` serves a whole batch: the worker process (`--serve`) stays alive between
examples so its models load once. A timeout, a cancel (Ctrl-C in the runner) or a crash ends the
process (SIGINT first, then kill); the next job starts a fresh one.

The worker imports `scail` from a private folder that holds only a symlink to this process's
`scail` package, put on PYTHONPATH: the worker runs exactly the parent's code, and neither the
parent's site-packages nor the working directory leak into the pose env.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from scail.errors import InputError, Interrupted, ScailError
from scail.pose.worker import PoseJob

log = logging.getLogger(__name__)
worker_log = logging.getLogger("scail.pose.worker.stderr")

EventFn = Callable[[dict[str, Any]], None]


def _package_link_dir() -> Path:
    """A temp folder with `scail` -> this process's scail package (for the worker's PYTHONPATH)."""
    import scail

    d = Path(tempfile.mkdtemp(prefix="scail-pose-path-"))
    (d / "scail").symlink_to(Path(scail.__file__).resolve().parent, target_is_directory=True)
    return d


class PoseWorker:
    """A pose worker process (or the in-process runner) that runs jobs one after another."""

    def __init__(self, python: Path | None, *, in_process: bool = False) -> None:
        self.python, self.in_process = python, in_process
        self.proc: subprocess.Popen[str] | None = None
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr_tail: list[str] = []
        self._link_dir: Path | None = None
        self._runner: Any = None

    # -- process management --------------------------------------------------------------------

    def _start(self) -> None:
        assert self.python is not None
        if self._link_dir is None:
            self._link_dir = _package_link_dir()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(PYTHONPATH=str(self._link_dir), PYTHONUNBUFFERED="1", PYTHONNOUSERSITE="1")
        self._events = queue.Queue()
        self._stderr_tail = []
        self.proc = subprocess.Popen(
            [str(self.python), "-m", "scail.pose.worker", "--serve", "--parent", str(os.getpid())], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, env=env,
            start_new_session=True,  # Ctrl-C reaches us only; we forward it (see stop)
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        threading.Thread(target=self._read_events, args=(self.proc.stdout,), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(self.proc.stderr,), daemon=True).start()

    def _read_events(self, stream: IO[str]) -> None:
        for line in stream:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                worker_log.debug("worker stdout: %s", line)
                continue
            if isinstance(event, dict):
                self._events.put(event)
        self._events.put(None)  # EOF: the process is gone

    def _read_stderr(self, stream: IO[str]) -> None:
        for line in stream:
            line = line.rstrip()
            worker_log.debug("%s", line)
            self._stderr_tail = [*self._stderr_tail[-30:], line]

    def stop(self, grace_s: float = 5.0) -> None:
        """End the worker: SIGINT (it reports and exits), then SIGKILL after grace_s."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        """Stop the worker (asks it to exit by closing its stdin first)."""
        if self.proc is not None and self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.stop()
        if self._runner is not None:
            self._runner.close()
            self._runner = None
        if self._link_dir is not None:
            (self._link_dir / "scail").unlink(missing_ok=True)
            self._link_dir.rmdir()
            self._link_dir = None

    # -- jobs ----------------------------------------------------------------------------------

    def run(self, job: PoseJob, on_event: EventFn, cancel: threading.Event | None = None,
            timeout_s: float = 3600.0) -> dict[str, Any]:
        """Run one job; returns the worker's summary. Raises ScailError with the worker's message."""
        if self.in_process:
            return self._run_in_process(job, on_event, cancel)
        cancel = cancel or threading.Event()
        with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="scail-pose-job-", delete=False) as fh:
            fh.write(job.model_dump_json())
            job_file = Path(fh.name)
        try:
            return self._run_subprocess(job_file, on_event, cancel, timeout_s)
        finally:
            job_file.unlink(missing_ok=True)

    def _run_subprocess(self, job_file: Path, on_event: EventFn, cancel: threading.Event,
                        timeout_s: float) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(f"{job_file}\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # the process died; the EOF below reports it
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if cancel.is_set():
                    self.stop()
                    raise Interrupted("pose worker stopped (cancelled)")
                if time.monotonic() > deadline:
                    self.stop()
                    raise ScailError(f"pose worker timed out after {timeout_s:.0f} s "
                                     "(raise pose.timeout_s in the pipeline config)")
                try:
                    event = self._events.get(timeout=0.2)
                except queue.Empty:
                    continue
                if event is None:
                    self.stop()
                    tail = next((t for t in reversed(self._stderr_tail) if t.strip()), "no output")
                    raise ScailError(f"pose worker exited unexpectedly ({tail[:200]}); "
                                     "run with -v to see its log")
                kind = event.get("event")
                if kind in ("done", "error"):
                    break
                on_event(event)  # may raise Interrupted (ctx.progress on cancel): handled below
        except BaseException:
            self.stop()  # the worker is mid-job or dead: never reuse it
            raise
        if kind == "done":
            return dict(event.get("summary") or {})
        # the worker finished this job with an error and is ready for the next one
        msg = str(event.get("message", "pose worker failed"))
        if event.get("kind") == "interrupted":
            self.stop()
            raise Interrupted(msg)
        raise (InputError if event.get("kind") == "input" else ScailError)(msg)

    def _run_in_process(self, job: PoseJob, on_event: EventFn, cancel: threading.Event | None) -> dict[str, Any]:
        from scail.pose.worker import Runner

        if self._runner is None:
            self._runner = Runner()

        def emit(event: dict[str, Any]) -> None:
            if cancel is not None and cancel.is_set():
                raise Interrupted("pose stopped (cancelled)")
            on_event(event)

        try:
            return self._runner.run(job, emit)
        except ScailError:
            raise
        except ImportError as exc:
            raise ScailError(f"pose backend dependencies are missing in this interpreter ({exc}); "
                             "drop pose.in_process to use the pose env") from exc


def worker_python(in_process: bool, cache_dir: Path | None,
                  on_progress: Callable[[int, int | None, str], None] | None = None) -> Path | None:
    """The interpreter for the worker: the pose env's python (created on first use), or None in-process."""
    if in_process:
        return None
    from scail.pose.venv import ensure_pose_env

    return ensure_pose_env(cache_dir, on_progress)


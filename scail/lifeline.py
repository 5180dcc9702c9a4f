"""Keep a worker process from outliving the runner that started it.

A worker (the pose worker, in its own env) that survives a `kill -9` of `scail run` would go on
writing into an example folder whose lock the OS has already released, maybe while the next
runner holds it. Three layers, from the strongest:

1. Linux: `prctl(PR_SET_PDEATHSIG, SIGKILL)`: the kernel kills the worker the moment its parent
   dies, whatever the worker is doing (deep in C code, or even stopped).
2. Everywhere: a watchdog thread notices the parent is gone (its pid is no longer our parent:
   POSIX re-parents orphans) or that stdin reached EOF while a job runs (the parent holds the
   pipe's other end, and closes it on purpose only between jobs), and ends the process at once.
3. `check_parent()` before each write: a worker that still runs after all writes nothing.

The worker learns its parent's pid from its command line (`--parent PID`), so a pid recycled by
another process is never mistaken for the parent: the check is "is my parent still that pid".
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO

log = logging.getLogger(__name__)

EXIT_PARENT_GONE = 75
"""Exit status of a worker that ended because its parent died (EX_TEMPFAIL)."""
POLL_S = 0.5

_parent_pid: int | None = None


def _set_pdeathsig() -> bool:
    """Ask the Linux kernel to SIGKILL us when our parent dies; False where that is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        return int(libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def parent_alive() -> bool:
    """True while the process that started us (as told by `die_with_parent`) is still our parent."""
    if _parent_pid is None:
        return True
    if os.name == "posix":
        return os.getppid() == _parent_pid
    try:  # Windows: no re-parenting; ask whether the pid still exists
        import psutil

        return bool(psutil.pid_exists(_parent_pid))
    except ImportError:
        return True


def _exit_now(why: str) -> None:
    """End the process without unwinding: no cleanup handler may write anything anymore."""
    try:
        sys.stderr.write(f"scail worker {os.getpid()}: {why}; exiting\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(EXIT_PARENT_GONE)


def check_parent() -> None:
    """Call before each write: a worker whose parent died exits here instead of writing."""
    if not parent_alive():
        _exit_now("the runner that started this worker is gone")


def die_with_parent(parent_pid: int) -> None:
    """Make this process end when `parent_pid` (our parent) dies: layers 1 and 2 above."""
    global _parent_pid
    _parent_pid = parent_pid
    _set_pdeathsig()
    check_parent()  # the parent may have died before prctl took effect

    def watch() -> None:
        while True:
            time.sleep(POLL_S)
            check_parent()

    threading.Thread(target=watch, name="scail-lifeline", daemon=True).start()


class JobLines:
    """The lines of the parent's job pipe, read by a thread so EOF is seen even mid-job.

    Iterate to get job lines. EOF between jobs ends the iteration (the parent closed the pipe:
    the batch is over); EOF while `busy` is set means the parent died: the process ends at once.
    """

    def __init__(self, stream: IO[str]) -> None:
        self.busy = threading.Event()
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), name="scail-job-pipe", daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                self._lines.put(line)
        except (OSError, ValueError):
            pass
        if self.busy.is_set():
            _exit_now("the job pipe closed during a job (the runner died)")
        self._lines.put(None)

    def __iter__(self) -> Iterator[str]:
        while True:
            line = self._lines.get()
            if line is None:
                return
            yield line

"""Read the weight files into the OS page cache ahead of the loaders, so a cold start reads at the
disk's speed rather than at the speed of page faults.

Why: the loaders memory-map the checkpoints (`checkpoint.read_tensors`) and copy tensor after
tensor to the GPU. On a cold page cache every copy waits on page faults, which the kernel's
read-ahead serves a little at a time. On the development box that read 1.1-1.4 GB/s where large
sequential reads of the same file got 1.2-1.9 GB/s; through the loaders' own reader the prefetch
gave 1.2-1.3 GB/s against 0.6-1.2 (`benchmarks/README.md`, "bench_prefetch.py"). Background threads
reading the files front to back in 16 MiB pieces, several pieces in flight, keep the disk busy while
the loader converts and copies what is already in memory.

Only what the page cache can hold is read: of the files, in the loaders' order (VAE, umT5, CLIP,
DiT), the selection with the most bytes under 80 % of the memory available now, so prefetching
never evicts the pages the loader is about to use; on a host too small for all, that keeps the DiT.
A warm cache makes the reads memory copies (seconds on one core, off the loader's thread); `stop()`
ends them once the models are built.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

PIECE_BYTES = 16 << 20
"""One read: large enough for the disk to stream, small enough to stop quickly."""
MEMORY_SHARE = 0.8
"""The share of the available memory the prefetched files may fill."""
MAX_EXHAUSTIVE = 12
"""Up to this many files every selection is tried (2^12 sums); beyond, the first that fit."""
DEFAULT_WORKERS = 4
"""Reads in flight at once."""


def plan(paths: Sequence[Path], available_bytes: int, share: float = MEMORY_SHARE) -> list[Path]:
    """The files to read, in the loaders' order: of the existing files, the selection with the most
    bytes that fits `share` of `available_bytes` (read in order and all held at once, none evicts
    another). On a host too small for all of them this keeps the DiT, the largest file, over the
    encoders' smaller ones: its bytes are most of what a cold load waits on."""
    sized: list[tuple[Path, int]] = []
    for path in dict.fromkeys(Path(p) for p in paths):  # a file named twice is read once
        try:
            size = path.stat().st_size if path.is_file() else 0
        except OSError:
            continue
        if size > 0:
            sized.append((path, size))
    budget = int(available_bytes * share)
    if len(sized) > MAX_EXHAUSTIVE:  # never in the loaders' use (four files): keep the first that fit
        chosen, total = [], 0
        for path, size in sized:
            if total + size <= budget:
                chosen.append(path)
                total += size
        return chosen
    best: tuple[int, ...] = ()
    best_total = 0
    for mask in range(1, 1 << len(sized)):
        picked = tuple(i for i in range(len(sized)) if mask >> i & 1)
        total = sum(sized[i][1] for i in picked)
        if best_total < total <= budget:
            best, best_total = picked, total
    return [sized[i][0] for i in best]


class Prefetch:
    """Reads `paths` on `workers` background threads (see the module docstring); `stop()` ends them.

    The threads take 16 MiB pieces from one cursor that walks the files front to back, so the reads
    stay in the loaders' order while several are in flight: a virtual disk answers one stream of
    reads slower than several. `bytes_read` and `seconds` say what they did (the loader logs them)."""

    def __init__(self, paths: Sequence[Path], available_bytes: int | None = None, workers: int | None = None) -> None:
        if available_bytes is None:
            import psutil

            available_bytes = int(psutil.virtual_memory().available)
        self.paths = plan(paths, available_bytes)
        self.workers = max(1, workers if workers is not None else configured_workers())
        self.bytes_read = 0
        self.seconds = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._fds: list[int] = []
        self._pieces = iter(self._walk())
        self._threads = [threading.Thread(target=self._run, name=f"scail-prefetch-{i}", daemon=True)
                         for i in range(self.workers)]
        self._t0 = time.perf_counter()
        if self.paths:
            for thread in self._threads:
                thread.start()

    def _walk(self) -> Iterator[tuple[int, int]]:
        """(file descriptor, offset) of every piece, file after file; each file is opened once."""
        for path in self.paths:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError as exc:  # the loader reports a bad file with its own message
                log.debug("prefetch skips %s: %s", path, exc)
                continue
            self._fds.append(fd)
            size = os.fstat(fd).st_size
            for offset in range(0, size, PIECE_BYTES):
                yield fd, offset

    def _next(self) -> tuple[int, int] | None:
        with self._lock:
            if self._stop.is_set():
                return None
            return next(self._pieces, None)

    def _run(self) -> None:
        buf = bytearray(PIECE_BYTES)
        while (piece := self._next()) is not None:
            fd, offset = piece
            try:
                n = os.preadv(fd, [buf], offset)  # releases the GIL for the read
            except OSError as exc:
                log.debug("prefetch read failed at offset %d: %s", offset, exc)
                continue
            with self._lock:
                self.bytes_read += n
        with self._lock:
            self.seconds = max(self.seconds, time.perf_counter() - self._t0)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the reads to end by themselves (tests, benchmarks)."""
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def stop(self) -> None:
        """End the reads (the pieces in flight finish), wait for the threads and close the files."""
        self._stop.set()
        self.join()
        with self._lock:
            fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)
        if self.paths:
            log.debug("prefetched %.1f GB of %d weight files in %.1f s on %d threads", self.bytes_read / 1e9,
                      len(self.paths), self.seconds, self.workers)


def configured_workers() -> int:
    """SCAIL_PREFETCH=N reads with N threads (default 4)."""
    value = os.environ.get("SCAIL_PREFETCH", "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_WORKERS


def enabled() -> bool:
    """SCAIL_PREFETCH=0 turns the prefetch off (to measure a cold start without it); a number > 0
    is how many threads read."""
    return os.environ.get("SCAIL_PREFETCH", "1") != "0"

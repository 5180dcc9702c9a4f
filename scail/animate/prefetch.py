"""Read the weight files into the OS page cache ahead of the loaders, so a cold start reads at the
disk's speed rather than at the speed of page faults.

Why: the loaders memory-map the checkpoints (`checkpoint.read_tensors`) and copy tensor after
tensor to the GPU. On a cold page cache every copy waits on page faults, which the kernel's
read-ahead serves a little at a time. On the development box that read 1.1-1.4 GB/s where large
sequential reads of the same file got 1.2-1.9 GB/s; through the loaders' own reader the prefetch
gave 1.2-1.3 GB/s against 0.6-1.2 (`benchmarks/README.md`, "bench_prefetch.py"). A background thread
reading the files front to back in 16 MiB pieces keeps the disk busy while the loader converts and
copies what is already in memory.

Only what the page cache can hold is read: files are taken in the loaders' order (DiT, VAE, umT5,
CLIP) while their total stays under 80 % of the memory available now, so prefetching never evicts
the pages the loader is about to use. A warm cache makes the reads memory copies (seconds on one
core, off the loader's thread); `stop()` ends them once the models are built.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

PIECE_BYTES = 16 << 20
"""One read: large enough for the disk to stream, small enough to stop quickly."""
MEMORY_SHARE = 0.8
"""The share of the available memory the prefetched files may fill."""


def plan(paths: Sequence[Path], available_bytes: int, share: float = MEMORY_SHARE) -> list[Path]:
    """The files to read, in order: each existing file while the running total fits `share` of
    `available_bytes` (the first that does not fit ends the list: later files would evict earlier ones)."""
    chosen: list[Path] = []
    total = 0
    budget = int(available_bytes * share)
    for path in dict.fromkeys(Path(p) for p in paths):  # a file named twice is read once
        try:
            size = path.stat().st_size if path.is_file() else 0
        except OSError:
            continue
        if size == 0:
            continue
        if total + size > budget:
            break
        chosen.append(path)
        total += size
    return chosen


class Prefetch:
    """Reads `paths` on one background thread (see the module docstring); `stop()` ends it.

    `bytes_read` and `seconds` say what it did (the loader logs them)."""

    def __init__(self, paths: Sequence[Path], available_bytes: int | None = None) -> None:
        if available_bytes is None:
            import psutil

            available_bytes = int(psutil.virtual_memory().available)
        self.paths = plan(paths, available_bytes)
        self.bytes_read = 0
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scail-prefetch", daemon=True)
        if self.paths:
            self._thread.start()

    def _run(self) -> None:
        t0 = time.perf_counter()
        buf = bytearray(PIECE_BYTES)
        try:
            for path in self.paths:
                with open(path, "rb", buffering=0) as fh:
                    while not self._stop.is_set():
                        n = fh.readinto(buf)  # releases the GIL for the read
                        if not n:
                            break
                        self.bytes_read += n
                if self._stop.is_set():
                    break
        except OSError as exc:  # the loader reports a bad file with its own message
            log.debug("prefetch stopped at %s: %s", path, exc)
        self.seconds = time.perf_counter() - t0

    def stop(self) -> None:
        """End the reads (the current piece finishes) and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self.paths:
            log.debug("prefetched %.1f GB of %d weight files in %.1f s", self.bytes_read / 1e9, len(self.paths),
                      self.seconds)


def enabled() -> bool:
    """SCAIL_PREFETCH=0 turns the prefetch off (to measure a cold start without it)."""
    return os.environ.get("SCAIL_PREFETCH", "1") != "0"

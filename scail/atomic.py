"""Atomic file writes: write beside the target under a temp name, fsync, rename into place.

A killed run never leaves a file that looks complete: until the rename, the only thing on disk is
a temp file whose name says so. Every writer in scail (manifests, stage outputs, videos, pose data,
downloads, markers) uses the one temp-name rule below, so `scail clean` and the engine's stale-temp
detection find what any of them left behind.

Temp-name rule: `<dir>/.<stem>.tmp-<pid>-<thread>-<random><suffix>`. The suffix is kept last so
writers that pick a format from the extension (video encoders, numpy) still work.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

TEMP_MARK = ".tmp-"


def temp_path(path: Path) -> Path:
    """A fresh temp name beside `path`, unique per process, thread and call."""
    tag = f"{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex[:8]}"
    return path.with_name(f".{path.stem}{TEMP_MARK}{tag}{path.suffix}")


def temp_files(folder: Path, of: Path | None = None) -> list[Path]:
    """Temp files in `folder` (only those of the file `of`, when given) that a killed writer left."""
    if not folder.is_dir():
        return []
    pattern = f".{of.stem}{TEMP_MARK}*{of.suffix}" if of is not None else f".*{TEMP_MARK}*"
    return sorted(folder.glob(pattern))


def commit(tmp: Path, path: Path) -> None:
    """fsync the finished temp file and rename it onto `path` (atomic on one filesystem)."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; it replaces `path` only if the block succeeds.

    The block must create the temp file; on any error (or a missing file) it is removed and
    `path` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        commit(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))

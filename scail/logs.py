"""Logging setup: a terse terminal handler chosen by -v/-q, and a DEBUG log file per example.

Library code only calls `logging.getLogger(__name__)`; this module (used by the CLI and the batch
runner) decides where records go.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scail.example import Example

_FILE_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"

PREVIEWS_THREAD = "scail-previews"
"""The name of the thread that writes finished examples' previews (`batch.PreviewsBehind`): its
records belong to the example whose previews it writes, not to the one the main thread runs."""


def level_for(verbose: int, quiet: bool = False) -> int:
    """-q: errors only; default: warnings; -v: info; -vv: debug (the pipx mapping)."""
    if quiet:
        return logging.ERROR
    return {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)


def setup_logging(verbose: int = 0, quiet: bool = False, console: Any = None) -> None:
    """Send `scail.*` records to the terminal (stderr, through Rich when a console is given)."""
    root = logging.getLogger("scail")
    root.setLevel(logging.DEBUG)  # handlers filter; the per-example file always gets DEBUG
    for h in list(root.handlers):
        if getattr(h, "_scail_terminal", False):
            root.removeHandler(h)
    handler: logging.Handler
    if console is not None:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_time=False, show_path=verbose >= 2, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level_for(verbose, quiet))
    setattr(handler, "_scail_terminal", True)  # noqa: B010 (marks our own terminal handler)
    root.addHandler(handler)
    root.propagate = False


class ExampleLog(logging.FileHandler):
    """An example's log file: a FileHandler that creates its folder on the first record (and drops
    records it cannot write).

    `previews` says whose records it takes: False, those of every thread but the previews thread
    (the stages, and the threads they start); True, the previews thread's only (the example was
    handed to it, while the main thread goes on with the next example).
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8", delay=True)
        self.previews = False

    def filter(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        if (record.threadName or "").startswith(PREVIEWS_THREAD) != self.previews:
            return False
        return bool(super().filter(record))

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None:  # type: ignore[has-type]
            try:
                Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
            except OSError:
                return
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        """Drop a record the file cannot take (a full disk, a deleted folder): the run goes on, and
        the terminal does not fill with logging's own tracebacks, one per record."""

    def close(self) -> None:
        with contextlib.suppress(OSError):  # the last flush may hit the same full disk
            super().close()


_open_logs = 0
_open_logs_lock = threading.Lock()
_level_before = logging.NOTSET


@contextlib.contextmanager
def example_log_file(example: Example) -> Iterator[ExampleLog]:
    """Append every `scail.*` record (DEBUG and up) to `<example>/.scail/logs/scail.log` meanwhile.

    The file is opened on the first record only, so a run with nothing to do touches nothing. Two
    examples' files can be open at once (one example's previews on their thread while the next
    runs); the logger's level is raised to DEBUG by the first and restored by the last.
    """
    global _open_logs, _level_before
    root = logging.getLogger("scail")
    handler = ExampleLog(example.state_dir / "logs" / "scail.log")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(_FILE_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    with _open_logs_lock:
        if _open_logs == 0:
            _level_before = root.level
            if root.level == logging.NOTSET or root.level > logging.DEBUG:
                root.setLevel(logging.DEBUG)
        _open_logs += 1
        root.addHandler(handler)
    try:
        yield handler
    finally:
        with _open_logs_lock:
            root.removeHandler(handler)
            _open_logs -= 1
            if _open_logs == 0:
                root.setLevel(_level_before)
        handler.close()

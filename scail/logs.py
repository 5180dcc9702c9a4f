"""Logging setup: a terse terminal handler chosen by -v/-q, and a DEBUG log file per example.

Library code only calls `logging.getLogger(__name__)`; this module (used by the CLI and the batch
runner) decides where records go.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scail.example import Example

_FILE_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"


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


class _LazyFileHandler(logging.FileHandler):
    """A FileHandler that creates its folder on the first record (and drops records it cannot write)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8", delay=True)

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


@contextlib.contextmanager
def example_log_file(example: Example) -> Iterator[None]:
    """Append every `scail.*` record (DEBUG and up) to `<example>/.scail/logs/scail.log` meanwhile.

    The file is opened on the first record only, so a run with nothing to do touches nothing.
    """
    root = logging.getLogger("scail")
    handler: logging.Handler = _LazyFileHandler(example.state_dir / "logs" / "scail.log")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(_FILE_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    previous = root.level
    if root.level == logging.NOTSET or root.level > logging.DEBUG:
        root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(previous)

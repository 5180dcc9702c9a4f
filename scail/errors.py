"""The user-facing exceptions.

Every expected failure is a `ScailError` whose message is one line naming the file or option and
the fix. The CLI catches it once, prints `error: <msg>` and exits 1. Subclasses exist only where a
caller catches them differently. `expand_user` is here because expanding a user's `~path` is itself
a user-facing failure (pathlib raises a RuntimeError for an unknown `~name`).
"""

from __future__ import annotations

import os
from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    """Process exit codes of the `scail` command."""

    OK = 0
    ERROR = 1
    SOME_FAILED = 2
    INTERRUPTED = 130


def one_line_text(text: str) -> str:
    """`text` with control characters (newlines, tabs, escapes) written as escapes: a message that
    quotes a user's key or value (`unknown key 'a\\nb'`) stays one line on the terminal and in logs."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


class ScailError(Exception):
    """An expected failure with a one-line, actionable message (control characters are escaped)."""

    def __init__(self, *args: object) -> None:
        if args and isinstance(args[0], str):
            args = (one_line_text(args[0]), *args[1:])
        super().__init__(*args)


class InputError(ScailError):
    """A user's input file or folder is missing, unreadable or malformed."""


class CheckpointError(ScailError):
    """A weight file is missing, truncated or does not match the model."""


class StageFailed(ScailError):
    """A stage failed for one example; the batch records it and goes on."""


class Interrupted(ScailError):
    """The user pressed Ctrl-C (or the run was cancelled); work stopped cleanly."""


def expand_user(path: str | os.PathLike[str], what: str) -> Path:
    """`Path(path).expanduser()`, where a `~name` of no known user (or `~` with no home directory)
    is an InputError naming `what` (the option or file the user gave), not pathlib's RuntimeError."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        raise InputError(f"{what} {str(path)!r}: '~' names no home directory here; give the full path") from None

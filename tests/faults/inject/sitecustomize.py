"""Test-only fault injector, loaded by every Python started with this folder on PYTHONPATH.

The fault-injection tests (tests/faults) put this folder first on the PYTHONPATH of the `scail`
processes they start, so the real CLI runs unchanged except for the faults asked for here:

    SCAIL_TEST_ENOSPC_ON="<path substring>@N[,<substring>@N...]"
        the N-th fsync of a file whose path contains the substring raises OSError(ENOSPC), the
        error a full disk gives (scail/atomic.py fsyncs every file before renaming it into place,
        so this is "the disk filled up while that file was written");
    SCAIL_TEST_FAULT_LOG=<file>
        one line per fault that fired, so a test knows its fault really happened;
    SCAIL_TEST_POSE_ENV_PINS=pip
        the pose env's requirement lists become just `pip` (already in every fresh venv), so
        creating the env takes seconds offline instead of a 1 GB download: for killing it mid-way.

Without these variables nothing is changed. Nothing here is imported by scail itself.
"""

from __future__ import annotations

import errno
import os

_SPEC = os.environ.get("SCAIL_TEST_ENOSPC_ON", "")


def _install() -> None:
    rules: list[list[object]] = []  # [substring, n, seen]
    for item in _SPEC.split(","):
        sub, _, n = item.rpartition("@")
        if sub and n.isdigit():
            rules.append([sub, int(n), 0])
    if not rules:
        return
    real_fsync = os.fsync
    log_file = os.environ.get("SCAIL_TEST_FAULT_LOG")

    def fsync(fd: object) -> None:
        try:
            fileno = fd if isinstance(fd, int) else fd.fileno()  # type: ignore[attr-defined]
            path = os.readlink(f"/proc/self/fd/{fileno}")
        except (OSError, AttributeError):
            path = ""
        for rule in rules:
            if path and str(rule[0]) in path:
                rule[2] = int(rule[2]) + 1  # type: ignore[call-overload]
                if rule[2] == rule[1]:
                    if log_file:
                        with open(log_file, "a", encoding="utf-8") as fh:
                            fh.write(f"ENOSPC {os.getpid()} {path}\n")
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        real_fsync(fd)  # type: ignore[arg-type]

    os.fsync = fsync


if _SPEC:
    _install()

if os.environ.get("SCAIL_TEST_POSE_ENV_PINS") == "pip":
    import scail.pose.venv as _venv

    _venv.requirements = lambda: ("pip",)  # type: ignore[assignment]
    _venv.POSE_REQUIREMENTS_NO_DEPS = ("pip",)

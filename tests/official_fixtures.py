"""The official-code parity fixtures, from the repository first and the shared folder second.

The golden outputs of the official SCAIL / SCAIL-2 code live in two places:

* ``tests/fixtures/official.tar.xz`` — a trimmed copy carried by the repository, so that a fresh
  clone runs every parity test. One xz archive (not loose files) because the same tiny weights are
  stored in two checkpoint layouts (wan safetensors and SAT ``.pt``): xz stores them once (61 MB of
  fixtures -> 22.7 MB). What was trimmed, and why, is in ``tests/fixtures/README.md``.
* ``../shared/fixtures`` — the complete set, beside the checkout on the team's machines.

`fixtures_root` unpacks the archive once per test session and lays a tree of symbolic links over
both: a file comes from the repository's copy when it has one, else from the shared folder. Tests
read one tree and never know which copy they got; a case that only the shared folder has is
skipped, with its path in the reason, on a machine without it.
"""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
ARCHIVE = TESTS / "fixtures" / "official.tar.xz"
SHARED_FIXTURES = (REPO / ".." / "shared" / "fixtures").resolve()


def unpack(archive: Path, dest: Path) -> Path:
    """Extract the archive into ``dest`` (created) with tarfile's safe ``data`` filter; returns dest.

    The filter refuses absolute names, ``..``, links out of the tree and device files, so a damaged
    or hostile archive cannot write outside ``dest``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:xz") as tar:
        tar.extractall(dest, filter="data")
    return dest


def overlay(primary: Path | None, secondary: Path | None, dest: Path) -> Path:
    """A tree of symlinks at ``dest``: every file of ``primary``, plus the files only ``secondary`` has."""
    dest.mkdir(parents=True, exist_ok=True)
    for root in (r for r in (primary, secondary) if r is not None and r.is_dir()):
        for src in sorted(root.rglob("*")):
            if not src.is_file():
                continue
            link = dest / src.relative_to(root)
            if link.exists() or link.is_symlink():
                continue                                   # the primary copy wins
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(src)
    return dest


def build_root(work: Path) -> Path:
    """Unpack the repository's archive under ``work`` and overlay the shared folder, if present."""
    repo_copy = unpack(ARCHIVE, work / "repo-copy") if ARCHIVE.is_file() else None
    shared = SHARED_FIXTURES if SHARED_FIXTURES.is_dir() else None
    return overlay(repo_copy, shared, work / "fixtures")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

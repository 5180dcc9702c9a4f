"""Atomic writes (scail/atomic.py): one temp-name rule for every writer, `clean` and stale-temp detection."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from scail.atomic import atomic_path, atomic_write_bytes, atomic_write_text, temp_files, temp_path
from scail.cache import manifest_path
from scail.engine import clean_example
from scail.example import Example


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "m.json"
    atomic_write_text(target, "one")
    atomic_write_bytes(target, b"two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.json"]


def test_a_failed_block_keeps_the_old_file_and_removes_its_temp(tmp_path: Path) -> None:
    target = tmp_path / "rendered.mp4"
    target.write_text("old")
    with pytest.raises(ZeroDivisionError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise ZeroDivisionError
    assert target.read_text() == "old" and temp_files(tmp_path) == []
    with pytest.raises(FileNotFoundError), atomic_path(target):
        pass  # nothing written: nothing replaces the target
    assert target.read_text() == "old"


def test_temp_names_keep_the_suffix_and_are_found_per_file(tmp_path: Path) -> None:
    pose_npz, pose_json = tmp_path / "pose.npz", tmp_path / "pose.json"
    a, b = temp_path(pose_npz), temp_path(pose_json)
    assert a != temp_path(pose_npz) and a.suffix == ".npz" and a.name.startswith(".pose.tmp-")
    a.write_text("x")
    b.write_text("y")
    assert temp_files(tmp_path, of=pose_npz) == [a]
    assert temp_files(tmp_path, of=pose_json) == [b]
    assert temp_files(tmp_path) == sorted([a, b])


def test_a_killed_writer_leaves_a_temp_that_clean_removes(make_toy_example) -> None:
    """A real writer killed mid-write: the target never appears; `scail clean`'s rule finds the temp."""
    ex = Example(make_toy_example())
    target = manifest_path(ex, "pose")
    code = ("import sys, time\nfrom pathlib import Path\nfrom scail.atomic import atomic_path\n"
            "with atomic_path(Path(sys.argv[1])) as tmp:\n"
            "    tmp.write_text('half'); print('writing', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    left = temp_files(ex.state_dir, of=target)
    assert not target.exists() and len(left) == 1
    assert left[0] in clean_example(ex, ("pose",))
    assert temp_files(ex.state_dir) == []

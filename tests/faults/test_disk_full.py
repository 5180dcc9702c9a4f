"""A full disk during an output write and during the final manifest write, then a rerun.

1. A real small tmpfs (mounted here as root; skipped with the reason where mounting is not
   permitted) holds two examples; once render runs, another file takes every free byte, as a
   download or another job filling the disk would. The run must name "disk is full" for each
   example and exit non-zero; no manifest may claim a missing or partial output; after the space
   is freed the rerun completes.
2. The fault injector (tests/faults/inject/sitecustomize.py) makes the fsync of the render
   stage's final manifest fail with ENOSPC, after its videos were written: the stage must
   end failed with "disk is full", never "done" nor a "running" manifest that a later run reads
   as killed, and the rerun completes.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_injection import (
    check_example,
    cli_env,
    fast_preset,
    manifests,
    record,
    rng,
    run_until,
    scail,
    stage_running,
    summary,
    write_example,
)

pytestmark = pytest.mark.faults

DISK_MB = 136
"""The tmpfs: room for the pre-flight's estimate (64 MiB a example), not much more."""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'mount failed'}): needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(folder: Path) -> Path:
    """Take every free byte of `folder`'s filesystem with one file; returns it."""
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        free = shutil.disk_usage(folder).free
        try:
            os.posix_fallocate(fd, 0, max(free - 4096, 1))
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        try:
            while True:  # the last few blocks
                os.write(fd, b"\0" * 4096)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    finally:
        os.close(fd)
    return filler


def test_disk_fills_during_render_then_rerun_completes(small_disk: Path, tmp_path: Path) -> None:
    r = rng("disk-full")
    examples = small_disk / "examples"
    roots = [write_example(examples / name) for name in ("a", "b")]
    preset = fast_preset(tmp_path)
    env = cli_env(tmp_path / "cache")
    args: list[str | Path] = ["render", examples, "-p", preset, "--json"]
    filled: list[Path] = []
    delay = r.uniform(0.0, 0.5)

    def fill_when_render_runs(pid: int) -> bool:
        if stage_running(roots[0], "render")(pid):
            filled.append(_fill(small_disk))
            return True
        return False

    run = run_until(env, args, fill_when_render_runs, delay, 0)  # signal 0: nothing is sent
    assert filled, run.stderr[-2000:]
    assert run.returncode not in (0, -9) and "Traceback" not in run.stderr, run.stderr[-3000:]
    reasons = {name: e["reason"] for name, e in summary_from(run.stdout).items()}
    assert all("disk is full" in why and "\n" not in why for why in reasons.values()), reasons
    for root in roots:
        check = check_example(root)
        state = {s: m.get("status") for s, m in manifests(root).items()}
        record(f"disk full {delay:.2f}s into render", f"{root.name} on an {DISK_MB} MB tmpfs",
               f"exit {run.returncode}, render {state.get('render', 'not started')}", check)
        assert not check.problems, check.problems
        assert state.get("render") != "done"
    filled[0].unlink()
    proc = scail(env, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for root in roots:
        final = check_example(root, final=True)
        assert not final.problems, final.problems
        assert manifests(root)["render"]["status"] == "done"
        record("rerun after freeing space", f"{root.name} on an {DISK_MB} MB tmpfs", "exit 0, render done", final)


def summary_from(stdout: str) -> dict[str, dict]:
    import json

    return {e["name"]: e for e in json.loads(stdout)["examples"]}


def test_enospc_on_the_final_manifest_write_fails_the_stage_cleanly(tmp_path: Path) -> None:
    root = write_example(tmp_path / "examples" / "dancer")
    pose_before = (root / ".scail" / "pose.npz").read_bytes()
    preset = fast_preset(tmp_path)
    fault_log = tmp_path / "faults.log"
    args: list[str | Path] = ["render", root, "-p", preset, "--json"]
    # fsync 1: the "running" manifest; 2: the final one (temp names: .scail/.render.tmp-...)
    env = cli_env(tmp_path / "cache", enospc="/.scail/.render.tmp-@2", fault_log=fault_log)
    proc = scail(env, *args)
    assert "ENOSPC" in fault_log.read_text(), "the fault never fired"
    assert proc.returncode == 2, proc.stderr[-3000:]
    outcomes = {s["stage"]: (s["outcome"], s["reason"]) for s in summary(proc)["dancer"]["stages"]}
    assert outcomes["render"][0] == "failed" and "disk is full" in outcomes["render"][1], outcomes
    render = manifests(root)["render"]
    assert render["status"] == "failed" and "disk is full" in render["error"], render
    check = check_example(root)
    record("ENOSPC on the final render manifest", "dancer (5 frames)",
           f"exit {proc.returncode}, render {render['status']}: disk is full", check)
    assert not check.problems, check.problems
    proc = scail(cli_env(tmp_path / "cache"), *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = check_example(root, final=True)
    assert not final.problems, final.problems
    assert manifests(root)["render"]["status"] == "done"
    assert (root / ".scail" / "pose.npz").read_bytes() == pose_before
    record("rerun after the manifest ENOSPC", "dancer (5 frames)", "exit 0, render done", final)

"""Odd example folders in one batch through the real `scail render`: a read-only example, an example
deleted while the batch runs, and a symlinked example. The batch goes on; each odd example gets one
clear line; the others complete; the symlinked one is reported under its own (the link's) name.

The read-only example is a read-only bind mount (root ignores file modes), skipped with the reason
where mounting is not permitted.
"""

from __future__ import annotations

import hashlib
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
    run_until,
    stage_running,
    write_example,
)

pytestmark = pytest.mark.faults


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """An example folder mounted read-only onto itself."""
    root = write_example(tmp_path / "examples" / "b_readonly")
    ok = subprocess.run(["mount", "--bind", str(root), str(root)], capture_output=True, text=True)
    if ok.returncode != 0:
        pytest.skip(f"cannot bind-mount here ({ok.stderr.strip() or 'mount failed'}): needs root")
    try:
        ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(root)], capture_output=True, text=True)
        if ro.returncode != 0:
            pytest.skip(f"cannot remount read-only here ({ro.stderr.strip()})")
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], capture_output=True)


def test_read_only_deleted_and_symlinked_examples_in_one_batch(read_only: Path, tmp_path: Path) -> None:
    examples = tmp_path / "examples"
    first = write_example(examples / "a_ok")
    doomed = write_example(examples / "c_deleted")
    target = write_example(tmp_path / "elsewhere" / "real_name")
    link = examples / "d_link"
    link.symlink_to(target, target_is_directory=True)
    before_ro = _tree(read_only)
    preset = fast_preset(tmp_path)
    env = cli_env(tmp_path / "cache")

    def delete_when_first_renders(pid: int) -> bool:
        if stage_running(first, "render")(pid):
            shutil.rmtree(doomed)
            return True
        return False

    run = run_until(env, ["render", examples, "-p", preset, "--json"], delete_when_first_renders, 0.0, 0)
    import json

    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-3000:]
    results = {e["name"]: e for e in json.loads(run.stdout)["examples"]}
    assert set(results) == {"a_ok", "b_readonly", "c_deleted", "d_link"}, sorted(results)  # the link's own name

    assert results["a_ok"]["ok"] and manifests(first)["render"]["status"] == "done"
    assert results["d_link"]["ok"] and manifests(target)["render"]["status"] == "done"
    ro_reason, gone_reason = results["b_readonly"]["reason"], results["c_deleted"]["reason"]
    assert "Read-only file system" in ro_reason and "\n" not in ro_reason, ro_reason
    assert "gone" in gone_reason and "\n" not in gone_reason, gone_reason
    assert _tree(read_only) == before_ro  # nothing written there
    assert not doomed.exists()  # the deleted example was not recreated
    for name, root in (("a_ok", first), ("d_link", link)):
        check = check_example(root)
        assert not check.problems, check.problems
        record("odd folders in one batch", f"{name} (plain)" if name == "a_ok" else "d_link -> real_name (symlink)",
               "rendered, reported as " + name, check)
    record("read-only bind mount", "b_readonly", f"failed: {ro_reason.rpartition(': ')[2]}")
    record("example deleted mid-batch", "c_deleted", "failed: folder gone, not recreated")

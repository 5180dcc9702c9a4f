"""kill -9 and Ctrl-C at seeded random moments of each stage, then a rerun that completes.

Render and animate (tiny-random) run through the real `scail run`; the pose stage through its
real worker in the pose env (skipped exactly like the pose tests when that env cannot be had);
pose-env creation through `scail run` with the env's pins reduced to `pip` (offline, seconds).
After every fault: nothing half-written is visible, no manifest claims a missing or changed file;
after the rerun: every stage is fresh, nothing that had finished was redone, no temp file is left.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from fault_injection import (
    Check,
    check_example,
    cli_env,
    fast_preset,
    finished_times,
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


def _where(root: Path) -> str:
    """Where a fault landed, from the manifests it left: 'mid-render', 'between stages', ..."""
    states = {s: m.get("status") for s, m in manifests(root).items()}
    mid = [s for s, st in states.items() if st != "done"]
    if mid:
        return f"mid-{mid[0]} ({states[mid[0]]})" if states[mid[0]] != "failed" else f"{mid[0]} failed"
    done = [s for s, st in states.items() if st == "done"]
    return f"after {done[-1]}" if done else "before any stage"


def test_kill_9_and_ctrl_c_in_render_and_animate_then_rerun_completes(tmp_path: Path) -> None:
    r = rng("kills")
    root = write_example(tmp_path / "examples" / "dancer")
    preset = fast_preset(tmp_path)
    env = cli_env(tmp_path / "cache")
    args: list[str | Path] = ["run", root, "-p", preset, "--json"]
    pose_before = (root / ".scail" / "pose.npz").read_bytes()
    total = Check()
    faults = [("kill -9", signal.SIGKILL, "render", r.uniform(0.0, 0.8)),
              ("Ctrl-C", signal.SIGINT, "render", r.uniform(0.0, 0.8)),
              ("Ctrl-C", signal.SIGINT, "animate", r.uniform(0.0, 1.5)),
              ("kill -9", signal.SIGKILL, "animate", r.uniform(0.0, 1.5))]
    for what, sig, stage, delay in faults:
        before = finished_times(root)
        run = run_until(env, args, stage_running(root, stage), delay, sig, group=sig == signal.SIGINT)
        check = check_example(root)
        total.add(check)
        landed = _where(root) if run.signalled else "run finished first"
        record(f"{what} {delay:.2f}s into {stage}", "dancer (5 frames)", f"exit {run.returncode}, {landed}", check)
        assert not check.problems, check.problems
        if run.signalled and sig == signal.SIGINT:
            assert run.returncode == 130, run.stderr[-2000:]
        if run.signalled and sig == signal.SIGKILL:
            assert run.returncode == -signal.SIGKILL
        now = finished_times(root)
        redone = [s for s, t in before.items() if now.get(s) not in (None, t)]
        assert not redone, f"finished stages redone after {what}: {redone}"
    before = finished_times(root)
    proc = scail(env, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcomes = {s["stage"]: s["outcome"] for s in summary(proc)["dancer"]["stages"]}
    assert outcomes["pose"] == "user-provided"
    assert all(outcomes[s] == "fresh" for s in before), (before, outcomes)  # nothing finished was redone
    final = check_example(root, final=True, env=env, preset=preset)
    assert not final.problems, final.problems
    assert finished_times(root).items() >= before.items()
    assert (root / ".scail" / "pose.npz").read_bytes() == pose_before  # the user's pose data untouched
    record("rerun after 4 faults", "dancer (5 frames)", "exit 0, every stage fresh, nothing redone", final)


# ----------------------------------------------------------------------------------------------
# The pose worker (real pose env) and pose-env creation
# ----------------------------------------------------------------------------------------------


def _worker_pids(parent: int | None = None) -> list[int]:
    """Pids of running pose workers (of `parent` when given), from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"scail.pose.worker" in cmd and (parent is None or str(parent).encode() in cmd):
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def pose_example(shared_dir: Path, tmp_path: Path) -> Path:
    """examples/001's inputs (a real person: the demo's cartoon is not one for the pose models)."""
    src = shared_dir / "examples" / "001"
    if not (src / "driving.mp4").is_file():
        pytest.skip(f"{src}/driving.mp4 is absent")
    root = tmp_path / "examples" / "001"
    root.mkdir(parents=True)
    for name in ("driving.mp4", "ref.jpg"):
        shutil.copy(src / name, root / name)
    return root


def test_kill_9_of_the_pose_worker_and_of_its_runner(pose_python: Path, pose_cache_dir: Path,
                                                   pose_example: Path, tmp_path: Path) -> None:
    r = rng("pose-worker")
    root = pose_example
    env = cli_env(pose_cache_dir)
    args: list[str | Path] = ["pose", root, "-p", "tiny-random", "--set", "pose.max_frames=5", "--json"]

    # 1) the worker dies mid-job: the runner reports a clean failure for the example
    delay = r.uniform(0.0, 1.0)
    killed: list[int] = []

    def worker_up(pid: int) -> bool:
        pids = _worker_pids(pid)
        if pids and stage_running(root, "pose")(pid):
            time.sleep(delay)
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            return True
        return False

    run = run_until(env, args, worker_up, 0.0, signal.SIGCONT)  # SIGCONT: the runner itself is left alone
    assert killed, "the pose worker never started"
    check = check_example(root)
    record(f"kill -9 of the pose worker {delay:.2f}s into its job", "001 (5 frames)",
           f"exit {run.returncode}, {_where(root)}", check)
    assert not check.problems, check.problems
    assert run.returncode in (0, 2), run.stderr[-2000:]  # 0: the job had finished before the kill
    if run.returncode == 2:
        (entry,) = summary_from(run.stdout).values()
        assert "\n" not in entry["reason"] and "pose" in entry["reason"], entry

    # 2) the runner dies mid-pose: its worker exits too (parent-death signal) and writes nothing
    delay = r.uniform(0.0, 1.0)
    seen: list[int] = []

    def runner_pose(pid: int) -> bool:
        seen[:] = _worker_pids(pid)
        return bool(seen) and stage_running(root, "pose")(pid)

    run = run_until(env, [*args, "--force", "pose"], runner_pose, delay, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() and _alive(p) for p in seen) and time.monotonic() < deadline:
        time.sleep(0.05)
    orphans = [p for p in seen if _alive(p)]
    check = check_example(root)
    record(f"kill -9 of scail run {delay:.2f}s into pose", "001 (5 frames)",
           f"worker gone: {not orphans}, {_where(root)}", check)
    assert not orphans, f"pose workers outlived their runner: {orphans}"
    assert not check.problems, check.problems

    # 3) Ctrl-C in a terminal (the whole process group) mid-pose: exit 130, the worker gone
    delay = r.uniform(0.0, 1.0)
    run = run_until(env, [*args, "--force", "pose"], runner_pose, delay, signal.SIGINT, group=True)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in seen) and time.monotonic() < deadline:
        time.sleep(0.05)
    check = check_example(root)
    record(f"Ctrl-C {delay:.2f}s into pose", "001 (5 frames)", f"exit {run.returncode}, {_where(root)}", check)
    assert not check.problems, check.problems
    assert not [p for p in seen if _alive(p)], "a pose worker outlived Ctrl-C"
    if run.signalled:
        assert run.returncode == 130, run.stderr[-2000:]

    # 4) the rerun completes
    proc = scail(env, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = check_example(root, final=True)
    assert not final.problems, final.problems
    assert manifests(root)["pose"]["status"] == "done"
    record("rerun after the pose faults", "001 (5 frames)", "exit 0, pose done", final)


def summary_from(stdout: str) -> dict[str, dict]:
    import json

    return {e["name"]: e for e in json.loads(stdout)["examples"]}


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_kill_during_pose_env_creation_then_the_rebuild_works(tmp_path: Path) -> None:
    from scail.pose.venv import READY_MARKER

    r = rng("pose-env")
    root = write_example(tmp_path / "examples" / "dancer")
    (root / ".scail" / "pose.npz").unlink()  # the pose stage must run, so the env is needed
    (root / ".scail" / "ref_pose.npz").unlink()
    wheels = tmp_path / "no-wheels"
    wheels.mkdir()
    cache = tmp_path / "cache"
    path = [d for d in os.environ.get("PATH", "").split(os.pathsep) if not (Path(d) / "uv").exists()]
    env = cli_env(cache, SCAIL_TEST_POSE_ENV_PINS="pip", PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels),
                  PATH=os.pathsep.join(path))
    envs = cache / "envs"
    args: list[str | Path] = ["pose", root, "-p", "tiny-random", "--json"]

    def building(pid: int) -> bool:
        return envs.is_dir() and any(p.is_dir() for p in envs.iterdir())

    for what, sig in (("Ctrl-C to", signal.SIGINT), ("kill -9 of", signal.SIGKILL)):
        delay = r.uniform(0.0, 3.0)
        run = run_until(env, args, building, delay, sig, group=True)
        # at most one env folder; none when the signal came between removing an earlier incomplete
        # env and `python -m venv` creating the new one
        left = [p for p in envs.iterdir() if p.is_dir()]
        assert len(left) <= 1, left
        ready = bool(left) and (left[0] / READY_MARKER).is_file()
        state = "ready" if ready else "incomplete (never used)" if left else "none (removed before the rebuild)"
        record(f"{what} the process group {delay:.2f}s into pose-env creation", "pose env (pins: pip)",
               f"exit {run.returncode}, env left {state}")
        assert run.returncode != 0 or ready, run.stderr[-2000:]
        assert "Traceback" not in run.stderr, run.stderr[-3000:]
        if ready:  # the moment came after the build: start over for the next fault
            shutil.rmtree(left[0])
    # the rerun builds the env again (an incomplete one is removed, never used)
    proc = scail(env, *args)
    (env_dir,) = [p for p in envs.iterdir() if p.is_dir()]
    assert (env_dir / READY_MARKER).is_file(), proc.stderr[-3000:]
    ok = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import pip, sys; print(sys.prefix)"],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.strip() == str(env_dir), ok.stderr
    record("rerun after the env-creation kill", "pose env (pins: pip)", "env rebuilt and usable")

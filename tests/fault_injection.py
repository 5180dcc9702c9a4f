"""The fault-injection suite's tools (tests/faults): run the real CLI, inject faults, check invariants.

Every fault test drives `python -m scail` in a subprocess, exactly as a user runs it, on small
synthetic examples (scail/demo.py, a few frames) with the tiny-random model at a small size, then:

- `check_example` verifies the invariants that make a run trustworthy after any fault: every
  manifest parses; every output a manifest or the output ledger claims exists with the recorded
  hash (a missing one is *lost*, another hash is *corrupted*); every video under a final name
  decodes (nothing half-written is visible); `final=True` adds: each stage fresh or user-provided
  (`scail status`), no temp file left anywhere.
- `record` adds a row to the fault table that tests/conftest.py prints at the end of the run:
  the fault, the input, the outcome and the outputs lost/corrupted (which must all be zero).
- Faults: signals at seeded random moments (`run_until`), a full disk (a real tmpfs, or the
  ENOSPC injector in tests/faults/inject/sitecustomize.py for an exact write), concurrent runners,
  odd folders, hostile files.

The random moments come from one seed per session: `SCAIL_FAULT_SEED` (printed in the table)
reproduces a run.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INJECTOR_DIR = Path(__file__).resolve().parent / "faults" / "inject"
SEED = int(os.environ.get("SCAIL_FAULT_SEED") or random.SystemRandom().randrange(2**31))
FRAMES = 5
"""Frames of each synthetic example (4k+1: the animate stage takes it as it is)."""
OUTPUT_STAGES = ("render", "animate")

# ----------------------------------------------------------------------------------------------
# The fault table
# ----------------------------------------------------------------------------------------------


@dataclass
class FaultRow:
    """One fault injected into one input, what came of it, and what was lost or corrupted."""

    fault: str
    input: str
    outcome: str
    lost: int = 0
    corrupted: int = 0


TABLE: list[FaultRow] = []


def record(fault: str, input: str, outcome: str, check: Check | None = None) -> None:
    """Add a row to the fault table (printed by tests/conftest.py at the end of the run)."""
    TABLE.append(FaultRow(fault, input, outcome, check.lost if check else 0, check.corrupted if check else 0))


def rng(test_name: str) -> random.Random:
    """The seeded random source of one test (the session seed and the test's name)."""
    return random.Random(f"{SEED}:{test_name}")


def format_table(rows: list[FaultRow]) -> list[str]:
    """The table as lines: one per fault, then the totals."""
    if not rows:
        return []
    widths = [max(len(h), *(len(getattr(r, a)) for r in rows)) for h, a in
              (("fault", "fault"), ("input", "input"), ("outcome", "outcome"))]
    widths = [min(w, 60) for w in widths]

    def line(cells: list[str]) -> str:
        return "  ".join(c[:w].ljust(w) for c, w in zip(cells, [*widths, 4, 9], strict=True)).rstrip()

    out = [f"fault injection (seed {SEED}; rerun with SCAIL_FAULT_SEED={SEED})",
           line(["fault", "input", "outcome", "lost", "corrupted"])]
    out += [line([r.fault, r.input, r.outcome, str(r.lost), str(r.corrupted)]) for r in rows]
    lost, corrupted = sum(r.lost for r in rows), sum(r.corrupted for r in rows)
    out.append(f"{len(rows)} faults injected over {len({r.input for r in rows})} inputs: "
               f"{lost} outputs lost, {corrupted} corrupted")
    return out


# ----------------------------------------------------------------------------------------------
# Examples and the real CLI
# ----------------------------------------------------------------------------------------------


def write_example(folder: Path, frames: int = FRAMES) -> Path:
    """A small synthetic example (its pose files are user-provided: no pose model needed)."""
    from scail.demo import write_demo_example

    return write_demo_example(folder, num_frames=frames)


def fast_preset(folder: Path, frames: int = FRAMES) -> Path:
    """tiny-random at 160x96 animating at most `frames` frames (1: the cheapest sample, for tests
    that need many runs but no moment inside animate): a full run costs a few CPU seconds."""
    import yaml

    from scail.config import preset_dirs

    src = next(d / "tiny-random.yaml" for d in preset_dirs() if (d / "tiny-random.yaml").is_file())
    doc = yaml.safe_load(src.read_text(encoding="utf-8"))
    doc["animate"].update(size_hw=[160, 96], max_frames=frames)
    path = folder / f"faults-tiny-{frames}.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def cli_env(cache: Path, *, enospc: str = "", fault_log: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a `scail` subprocess: this checkout first, the injector, a private cache."""
    paths = [str(REPO), str(INJECTOR_DIR)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCAIL_TEST_")}
    env.update(PYTHONPATH=os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               SCAIL_CACHE_DIR=str(cache), SCAIL_WEIGHTS_DIR=str(cache / "weights"), **extra)
    if enospc:
        env["SCAIL_TEST_ENOSPC_ON"] = enospc
    if fault_log is not None:
        env["SCAIL_TEST_FAULT_LOG"] = str(fault_log)
    return env


def scail_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "scail", *map(str, args)]


def scail(env: dict[str, str], *args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `scail ARGS` to its end."""
    return subprocess.run(scail_cmd(*args), env=env, capture_output=True, text=True, timeout=timeout)


def summary(proc: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    """{example name: its entry of the --json summary}."""
    doc = json.loads(proc.stdout)
    return {e["name"]: e for e in doc["examples"]}


@dataclass
class Killed:
    """A run that was signalled (or ended first)."""

    returncode: int
    signalled: bool
    """False when the run finished before the moment came."""
    stdout: str
    stderr: str


def run_until(env: dict[str, str], args: list[str | Path], moment: Callable[[int], bool], delay_s: float,
              sig: int = signal.SIGKILL, *, group: bool = False, timeout: float = 300) -> Killed:
    """Start `scail ARGS`, wait until `moment(its pid)` is true, then `delay_s` more, then send `sig`.

    `group`: signal the whole process group (a terminal's Ctrl-C, or killing a run with its
    children); otherwise only the `scail` process itself.
    """
    proc = subprocess.Popen(scail_cmd(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + timeout
    signalled = False
    try:
        while proc.poll() is None and not moment(proc.pid):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{args}: the moment never came")
            time.sleep(0.02)
        if proc.poll() is None:
            time.sleep(delay_s)
            if proc.poll() is None:
                if group:
                    os.killpg(proc.pid, sig)
                else:
                    proc.send_signal(sig)
                signalled = True
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return Killed(proc.returncode, signalled, out, err)


def stage_running(root: Path, stage: str) -> Callable[[int], bool]:
    """A `moment` for `run_until`: the stage's manifest says process `pid` is running it now
    (a manifest that a killed run left "running" does not count)."""
    path = root / ".scail" / f"{stage}.json"

    def check(pid: int) -> bool:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return bool(doc.get("status") == "running" and doc.get("pid") == pid)

    return check


# ----------------------------------------------------------------------------------------------
# Invariants
# ----------------------------------------------------------------------------------------------


@dataclass
class Check:
    """What `check_example` found: problems (each one line) and the counts of the table."""

    lost: int = 0
    corrupted: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, other: Check) -> None:
        self.lost += other.lost
        self.corrupted += other.corrupted
        self.problems += other.problems


def _sha(path: Path) -> str | None:
    from scail.cache import sha256_file

    try:
        return sha256_file(path)
    except FileNotFoundError:
        return None


def manifests(root: Path) -> dict[str, dict]:
    """{stage: manifest JSON} of the stages with a manifest."""
    out = {}
    for stage in ("pose", *OUTPUT_STAGES):
        path = root / ".scail" / f"{stage}.json"
        if path.is_file():
            out[stage] = json.loads(path.read_text(encoding="utf-8"))
    return out


def finished_times(root: Path) -> dict[str, str]:
    """{stage: finished time} of the stages whose manifest says done (a redone stage changes it)."""
    return {s: m["finished"] for s, m in manifests(root).items() if m.get("status") == "done"}


def temp_leftovers(root: Path) -> list[Path]:
    from scail.atomic import TEMP_MARK

    return sorted(p for p in root.rglob(f"*{TEMP_MARK}*") if p.is_file())


def check_example(root: Path, *, final: bool = False, env: dict[str, str] | None = None,
                  preset: Path | None = None) -> Check:
    """The invariants after a fault (see the module docstring); `final` after the rerun that must complete."""
    from scail.video import probe

    check = Check()
    claimed: dict[str, str] = {}
    for stage in ("pose", *OUTPUT_STAGES):
        path = root / ".scail" / f"{stage}.json"
        if not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            check.corrupted += 1
            check.problems.append(f"{path}: not JSON ({exc})")
            continue
        claimed.update(doc.get("outputs") or {})
    ledger = root / ".scail" / "outputs.json"
    if ledger.is_file():
        files = json.loads(ledger.read_text(encoding="utf-8"))["files"]
        if final:  # during a run a stage may rewrite a file before its ledger entry is renewed
            claimed.update({k: e["sha256"] for k, e in files.items()})
    for key, digest in sorted(claimed.items()):
        got = _sha(root / key)
        if got is None:
            check.lost += 1
            check.problems.append(f"{root.name}: {key} is claimed but missing")
        elif got != digest:
            check.corrupted += 1
            check.problems.append(f"{root.name}: {key} does not have its recorded hash")
    videos = [root / "rendered.mp4", root / "rendered_aligned.mp4", *sorted((root / "samples").glob("*.mp4"))]
    for video in videos:
        if video.is_file() and not video.name.startswith("."):
            try:
                probe(video)
            except Exception as exc:  # any failure to decode is a half-written file
                check.corrupted += 1
                check.problems.append(f"{video}: does not decode ({exc})")
    if final:
        left = temp_leftovers(root)
        check.problems += [f"temp file left: {p}" for p in left]
        if env is not None and preset is not None:
            proc = scail(env, "status", root, "-p", preset, "--json")
            doc = json.loads(proc.stdout)
            for ex in doc["examples"]:
                for stage, st in ex["stages"].items():
                    if st["status"] not in ("fresh", "user-provided"):
                        check.problems.append(f"{ex['name']}: {stage} is {st['status']} after the rerun")
    return check

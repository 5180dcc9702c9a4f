"""2 and 4 `scail run` processes started together on one folder of examples.

The example lock (scail/cache.py) lets one runner at a time into an example; the others skip it and
retry it once at the end, when it is fresh. So each stage of each example runs exactly once, over
all runners together (counted in each example's own log, which every runner appends to), and every
example ends complete. A runner may end with exit 2 only for examples another runner still held.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from fault_injection import check_example, cli_env, fast_preset, record, scail_cmd, write_example

pytestmark = pytest.mark.faults

EXAMPLES = 4


@pytest.mark.parametrize(("runners", "command", "stages"), [(2, "run", ("render", "animate")), (4, "render", ("render",))],
                         ids=["2 runners, scail run", "4 runners, scail render"])
def test_concurrent_runners_run_each_stage_of_each_example_once(tmp_path: Path, runners: int, command: str,
                                                                stages: tuple[str, ...]) -> None:
    """4 runners run the render stage only: the same lock and retry path, at a quarter of the CPU."""
    folder = tmp_path / "examples"
    roots = [write_example(folder / f"ex{i}") for i in range(EXAMPLES)]
    preset = fast_preset(tmp_path, frames=1)
    env = cli_env(tmp_path / "cache")
    procs = [subprocess.Popen(scail_cmd(command, folder, "-p", preset, "--json"), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(runners)]
    outs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode in (0, 2), err[-3000:]
        if proc.returncode == 2:  # only examples another runner still held
            reasons = [s["outcome"] for e in json.loads(out)["examples"] for s in e["stages"]
                       if s["outcome"] not in ("ran", "fresh", "user-provided", "skipped")]
            assert set(reasons) == {"locked"}, reasons
    for root in roots:
        log = (root / ".scail" / "logs" / "scail.log").read_text(encoding="utf-8")
        runs = {stage: log.count(f"{root.name}: {stage} started") for stage in stages}
        check = check_example(root, final=True)
        record(f"{runners} runners on one folder ({command})", f"{root.name} (1 of {EXAMPLES})",
               ", ".join(f"{s} ran {n}x" for s, n in runs.items()), check)
        assert runs == dict.fromkeys(stages, 1), (root.name, runs)
        assert not check.problems, check.problems
    done = [json.loads((r / ".scail" / f"{stages[-1]}.json").read_text())["status"] for r in roots]
    assert done == ["done"] * EXAMPLES

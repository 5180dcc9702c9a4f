"""The Ray executor on a local Ray (2 CPU workers) with the tiny-random pipeline: same outputs as the
serial executor, a killed worker's example retried once, and resuming with a local run."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scail.batch import BatchSummary, SerialExecutor, make_jobs, run_batch
from scail.cache import read_manifest
from scail.config import STAGES, load_pipeline
from scail.engine import Outcome
from scail.example import Example, discover
from scail.video import write_video

ray = pytest.importorskip("ray")

from scail.ray_executor import RayExecutor, RayOptions  # noqa: E402

PIPELINE = """\
name: tiny-ray
animate: {model: tiny-random, solver: euler, steps: 3, size_hw: [32, 64], device: cpu, seed: 5}
"""


def make_examples(root: Path, count: int = 6) -> Path:
    """`count` examples with a hand-made rendered.mp4 (pose and render are skipped), prompts on odd ones."""
    rng = np.random.default_rng(0)
    for i in range(count):
        ex = root / f"ex{i}"
        ex.mkdir(parents=True)
        frames = []
        for t in range(5):
            f = np.zeros((64, 128, 3), np.uint8)
            f[16:48, (8 * t + 11 * i) % 112 : (8 * t + 11 * i) % 112 + 16] = (255, 120 + 10 * i, 0)
            frames.append(f)
        write_video(ex / "rendered.mp4", frames, fps=16.0)
        Image.fromarray(rng.integers(0, 255, (60, 100, 3), dtype=np.uint8)).save(ex / "ref.png")
        if i % 2:
            (ex / "prompt.txt").write_text(f"a dancer, take {i}\n")
    return root


def samples(root: Path) -> dict[str, str]:
    return {p.parent.parent.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.glob("*/samples/*.mp4"))}


@pytest.fixture(scope="module")
def local_ray():
    """One small local Ray for the module (2 CPUs, 80 MB object store, no dashboard)."""
    ray.init(num_cpus=2, object_store_memory=80 * 2**20, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                 [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def serial_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The six examples through the serial executor (and the pristine inputs to copy)."""
    pristine = make_examples(tmp_path_factory.mktemp("pristine"))
    root = tmp_path_factory.mktemp("serial") / "examples"
    shutil.copytree(pristine, root)
    (root.parent / "tiny.yaml").write_text(PIPELINE)
    config = load_pipeline(str(root.parent / "tiny.yaml"))
    summary = run_batch(make_jobs(discover(root), config, STAGES), SerialExecutor())
    assert summary.exit_code == 0, summary.to_dict()
    return pristine, samples(root)


def _ray_batch(root: Path) -> tuple[RayExecutor, BatchSummary]:
    config = load_pipeline(str(root.parent / "tiny.yaml"))
    import torch

    # the actors multiply with the driver's thread count, so CPU sums match bit for bit
    executor = RayExecutor(RayOptions(workers=2, torch_threads=torch.get_num_threads()))
    return executor, run_batch(make_jobs(discover(root), config, STAGES), executor)


def _copy(pristine: Path, dest: Path) -> Path:
    shutil.copytree(pristine, dest / "examples")
    (dest / "tiny.yaml").write_text(PIPELINE)
    return dest / "examples"


def test_two_workers_give_the_serial_outputs_bit_exact(local_ray, serial_reference, tmp_path: Path) -> None:
    pristine, expected = serial_reference
    root = _copy(pristine, tmp_path)
    _, summary = _ray_batch(root)
    assert summary.exit_code == 0, summary.to_dict()
    assert len(expected) == 6 and samples(root) == expected
    pids = {read_manifest(Example(root / name), "animate").pid for name in expected}
    assert len(pids) == 2 and os.getpid() not in pids  # both actors worked, the driver did not


def test_a_killed_worker_has_its_example_retried_once(local_ray, serial_reference, tmp_path: Path) -> None:
    pristine, expected = serial_reference
    root = _copy(pristine, tmp_path)
    killed: list[tuple[str, int]] = []
    stop = threading.Event()

    def kill_one_running_worker() -> None:
        """SIGKILL the actor running an example, once another example has finished."""
        while not stop.is_set() and not killed:
            manifests = {ex.name: read_manifest(ex, "animate") for ex in map(Example, sorted(root.iterdir()))}
            if any(m is not None and m.status == "done" for m in manifests.values()):
                for name, m in manifests.items():
                    if m is not None and m.status == "running" and m.pid and m.pid != os.getpid():
                        os.kill(m.pid, signal.SIGKILL)
                        killed.append((name, m.pid))
                        return
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_one_running_worker, daemon=True)
    watcher.start()
    try:
        executor, summary = _ray_batch(root)
    finally:
        stop.set()
        watcher.join()
    assert killed, "no worker was caught mid-example"
    victim = killed[0][0]
    assert summary.exit_code == 0, summary.to_dict()
    assert sorted(e.name for e in summary.examples) == sorted(expected)  # each example once
    retried = [e for e in summary.examples if e.notes]
    assert [e.name for e in retried] == [victim] and "died" in retried[0].notes[0]
    assert summary.to_dict()["examples"][[e.name for e in summary.examples].index(victim)]["notes"]
    assert samples(root) == expected  # the retry wrote the same video; no partial file left
    assert not list(root.glob("*/samples/.*tmp*"))

    # a local run afterwards finds everything done
    config = load_pipeline(str(root.parent / "tiny.yaml"))
    again = run_batch(make_jobs(discover(root), config, STAGES), SerialExecutor())
    assert again.exit_code == 0
    assert all(s.outcome is not Outcome.RAN for e in again.examples for s in e.stages)

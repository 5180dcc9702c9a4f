"""The Ray executor on a local Ray (2 CPU workers) with the tiny-random pipeline: same outputs as the
serial executor, a killed worker's example retried once, and resuming with a local run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
from scale_out_helpers import TINY_PIPELINE, make_examples
from typer.testing import CliRunner

from scail.batch import BatchSummary, NullObserver, SerialExecutor, make_jobs, run_batch
from scail.cache import read_manifest
from scail.cli import app
from scail.config import STAGES, load_pipeline
from scail.example import Example, discover
from scail.stage import ProgressEvent

ray = pytest.importorskip("ray")

from scail.ray_executor import RayExecutor, RayOptions  # noqa: E402


def samples(root: Path) -> dict[str, str]:
    """Example name -> the sha256 of its sample's frames (from the manifest: the H.264 bytes of the
    same frames differ from run to run)."""
    out = {}
    for ex in sorted(root.iterdir()):
        manifest = read_manifest(Example(ex), "animate")
        if manifest is not None and manifest.status == "done":
            out[ex.name] = manifest.notes["frames_sha256"]
    return out


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
    (root.parent / "tiny.yaml").write_text(TINY_PIPELINE)
    config = load_pipeline(str(root.parent / "tiny.yaml"))
    summary = run_batch(make_jobs(discover(root), config, STAGES), SerialExecutor())
    assert summary.exit_code == 0, summary.to_dict()
    return pristine, samples(root)


class Events(NullObserver):
    """Records the progress events the driver's display receives."""

    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []

    def on_event(self, event: ProgressEvent) -> None:
        self.events.append(event)


def _ray_batch(root: Path, observer: Events | None = None) -> tuple[RayExecutor, BatchSummary]:
    config = load_pipeline(str(root.parent / "tiny.yaml"))
    import torch

    # the actors multiply with the driver's thread count, so CPU sums match bit for bit
    executor = RayExecutor(RayOptions(workers=2, torch_threads=torch.get_num_threads()))
    return executor, run_batch(make_jobs(discover(root), config, STAGES), executor, observer)


def _copy(pristine: Path, dest: Path) -> Path:
    shutil.copytree(pristine, dest / "examples")
    (dest / "tiny.yaml").write_text(TINY_PIPELINE)
    return dest / "examples"


def test_two_workers_give_the_serial_outputs_bit_exact(local_ray, serial_reference, tmp_path: Path) -> None:
    pristine, expected = serial_reference
    root = _copy(pristine, tmp_path)
    observer = Events()
    _, summary = _ray_batch(root, observer)
    assert summary.exit_code == 0, summary.to_dict()
    assert len(expected) == 6 and samples(root) == expected
    # the driver's display got every worker's denoising progress, labelled by worker
    labels = {e.desc.split("]")[0] + "]" for e in observer.events if e.unit == "steps"}
    assert labels == {"[w0]", "[w1]"}, labels
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
        _, summary = _ray_batch(root)
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

    # a local `scail run` afterwards finds everything done
    result = CliRunner().invoke(app, ["run", str(root), "-p", str(root.parent / "tiny.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    outcomes = {s["outcome"] for e in json.loads(result.stdout)["examples"] for s in e["stages"]}
    assert outcomes <= {"fresh", "skipped", "user-provided"}, outcomes  # nothing ran again


def test_ray_flags_need_the_ray_executor(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", str(tmp_path), "--ray-workers", "2"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == "error: --ray-address and --ray-workers need --executor ray"

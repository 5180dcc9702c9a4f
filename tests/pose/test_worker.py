"""Worker protocol and the parent client, with the main interpreter as the worker's python.

These need no pose env: the jobs fail (missing input, missing backend) or are stopped before any
backend loads, which is exactly the error/timeout/cancel plumbing under test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from scail.errors import InputError, Interrupted, ScailError
from scail.pose.client import PoseWorker
from scail.pose.worker import PoseJob, load_job

REPO = Path(__file__).resolve().parents[2]


def _job(tmp_path: Path, driving: Path, **kw: object) -> PoseJob:
    return PoseJob(driving=driving, out_pose=tmp_path / "pose.npz", weights_dir=tmp_path / "w",
                   cache_dir=tmp_path / "c", backend="mediapipe", **kw)  # type: ignore[arg-type]


def _tiny_video(path: Path, frames: int = 3) -> Path:
    from scail.video import write_video

    rng = np.random.default_rng(0)
    write_video(path, [rng.integers(0, 255, (64, 96, 3), dtype=np.uint8) for _ in range(frames)], fps=16)
    return path


def test_load_job_rejects_bad_files_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "job.json"
    bad.write_text(json.dumps({"driving": "x.mp4", "out_pose": "p.npz", "weights_dir": "w", "cache_dir": "c",
                               "max_people": 0}))
    with pytest.raises(InputError, match=r"job.json: invalid pose job \(max_people: "):
        load_job(bad)
    with pytest.raises(InputError, match="cannot read the pose job file"):
        load_job(tmp_path / "missing.json")


def test_worker_cli_reports_errors_as_a_final_json_line(tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_text(_job(tmp_path, tmp_path / "nope.mp4").model_dump_json())
    res = subprocess.run([sys.executable, "-m", "scail.pose.worker", str(job)], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    lines = [json.loads(t) for t in res.stdout.splitlines()]
    assert res.returncode == 1
    assert lines[0]["event"] == "start"
    assert lines[-1]["event"] == "error" and lines[-1]["kind"] == "input"
    assert "nope.mp4" in lines[-1]["message"]


def test_client_raises_worker_errors_and_reuses_the_process(tmp_path: Path) -> None:
    worker = PoseWorker(Path(sys.executable))
    try:
        with pytest.raises(InputError, match=r"nope\.mp4: video file not found; check the path$"):
            worker.run(_job(tmp_path, tmp_path / "nope.mp4"), lambda e: None)
        pid = worker.proc.pid if worker.proc else None
        video = _tiny_video(tmp_path / "d.mp4")
        events: list[dict[str, object]] = []
        # mediapipe is not in the main env: the worker reports the crash, the client raises it
        with pytest.raises(ScailError, match="No module named 'mediapipe'"):
            worker.run(_job(tmp_path, video), events.append)
        assert worker.proc is not None and worker.proc.pid == pid  # same worker served both jobs
        assert any(e.get("event") == "note" and e.get("backend") == "mediapipe" for e in events)
    finally:
        worker.close()
    assert worker.proc is None


def test_client_timeout_stops_the_worker(tmp_path: Path) -> None:
    worker = PoseWorker(Path(sys.executable))
    try:
        with pytest.raises(ScailError, match=r"timed out after 0 s \(raise pose.timeout_s"):
            worker.run(_job(tmp_path, tmp_path / "x.mp4"), lambda e: None, timeout_s=0.01)
        assert worker.proc is None
    finally:
        worker.close()


def test_client_cancel_interrupts(tmp_path: Path) -> None:
    worker = PoseWorker(Path(sys.executable))
    cancel = threading.Event()
    cancel.set()
    try:
        with pytest.raises(Interrupted):
            worker.run(_job(tmp_path, tmp_path / "x.mp4"), lambda e: None, cancel=cancel)
        assert worker.proc is None
    finally:
        worker.close()


def test_in_process_missing_dependency_is_a_clean_error(tmp_path: Path) -> None:
    worker = PoseWorker(None, in_process=True)
    video = _tiny_video(tmp_path / "d.mp4")
    with pytest.raises(ScailError, match=r"missing in this interpreter .*drop pose.in_process"):
        worker.run(_job(tmp_path, video), lambda e: None)
    worker.close()


def test_sigint_ends_a_serving_worker_with_130(tmp_path: Path) -> None:
    worker = PoseWorker(Path(sys.executable))
    with pytest.raises(InputError):
        worker.run(_job(tmp_path, tmp_path / "nope.mp4"), lambda e: None)
    proc = worker.proc
    assert proc is not None and proc.poll() is None  # idle, waiting for the next job
    worker.stop()  # what Ctrl-C in the parent does: SIGINT to the worker
    assert proc.returncode == 130
    worker.close()

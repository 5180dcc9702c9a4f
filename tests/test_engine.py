"""The stage engine with toy stages: skip-when-fresh, downstream-only reruns, user-provided outputs."""

from __future__ import annotations

import errno
import json
import threading
from pathlib import Path

import pytest
from toy_pipeline import ToyAnimate, ToyPose, ToyRender

from scail.cache import HashCache, read_manifest
from scail.config import AnimateConfig, PoseConfig, RenderConfig
from scail.engine import Outcome, Status, example_status, is_disk_full, run_stage
from scail.errors import InputError, Interrupted
from scail.example import Example
from scail.stage import StageContext


def _stages(pose=PoseConfig(), render=RenderConfig(), animate=AnimateConfig()):
    return [ToyPose(pose), ToyRender(render), ToyAnimate(animate)]


def _run_all(stages, ex: Example) -> list[Outcome]:
    return [run_stage(s, ex).outcome for s in stages]


def test_second_run_skips_every_stage_and_status_is_fresh(make_toy_example) -> None:
    ex = Example(make_toy_example())
    stages = _stages()
    assert [s for s, _ in example_status(stages, ex)] == [Status.MISSING] * 3
    assert _run_all(stages, ex) == [Outcome.RAN] * 3
    assert _run_all(stages, ex) == [Outcome.FRESH] * 3
    assert [s.runs for s in stages] == [[ex.name]] * 3
    assert [s for s, _ in example_status(stages, ex)] == [Status.FRESH] * 3
    m = read_manifest(ex, "animate")
    assert m is not None and m.status == "done" and m.notes == {"seed": 42}
    assert m.params == AnimateConfig().model_dump(mode="json")
    assert set(m.inputs) == {"ref.png", "rendered.mp4"} and set(m.outputs) == {"samples/toy.mp4"}
    assert m.duration_s is not None and m.peak_rss_mb and m.versions["scail"]


def test_parameter_change_reruns_only_downstream_stages(make_toy_example) -> None:
    ex = Example(make_toy_example())
    _run_all(_stages(), ex)
    before = {p: p.read_bytes() for p in (ex.pose_data, ex.rendered)}
    changed = _stages(render=RenderConfig(radius_mm=30.0))
    assert [s for s, _ in example_status(changed, ex)] == [Status.FRESH, Status.STALE, Status.STALE]
    assert _run_all(changed, ex) == [Outcome.FRESH, Outcome.RAN, Outcome.RAN]
    assert ex.pose_data.read_bytes() == before[ex.pose_data]
    assert ex.rendered.read_bytes() != before[ex.rendered]
    # An animate-only change leaves pose and render alone.
    assert _run_all(_stages(render=RenderConfig(radius_mm=30.0), animate=AnimateConfig(steps=3)), ex) == [
        Outcome.FRESH, Outcome.FRESH, Outcome.RAN]


def test_output_replaced_by_hand_is_kept_and_a_deleted_one_is_redone(make_toy_example) -> None:
    ex = Example(make_toy_example())
    stages = _stages()
    _run_all(stages, ex)
    ex.rendered.write_text("edited by hand")
    assert example_status(stages, ex)[1] == (
        Status.USER_PROVIDED, "rendered.mp4 changed by hand after scail wrote it; kept unless --force")
    assert run_stage(stages[1], ex).outcome is Outcome.USER_PROVIDED
    assert ex.rendered.read_text() == "edited by hand"
    assert run_stage(stages[2], ex).outcome is Outcome.RAN  # animate follows the hand-made video
    assert run_stage(stages[1], ex, force=True).outcome is Outcome.RAN
    assert ex.rendered.read_text() != "edited by hand"
    assert run_stage(stages[2], ex).outcome is Outcome.RAN
    (ex.samples_dir / "toy.mp4").unlink()
    assert example_status(stages, ex)[2] == (Status.STALE, "samples/toy.mp4 is missing")


class _FailsAfterWriting(ToyRender):
    def run(self, example: Example, ctx: StageContext) -> None:
        super().run(example, ctx)
        raise InputError("broke after writing")


def test_outputs_of_a_failed_run_are_not_mistaken_for_user_files(make_toy_example) -> None:
    ex = Example(make_toy_example())
    run_stage(ToyPose(PoseConfig()), ex)
    assert run_stage(_FailsAfterWriting(RenderConfig()), ex).outcome is Outcome.FAILED
    assert ex.rendered.exists()
    assert example_status([ToyRender(RenderConfig())], ex)[0][0] is Status.FAILED
    assert run_stage(ToyRender(RenderConfig()), ex).outcome is Outcome.RAN


def test_user_provided_rendered_video_is_kept_unless_forced(make_toy_example) -> None:
    root = make_toy_example()
    (root / "driving.mp4").unlink()  # no driving video at all: pose cannot run
    ex = Example(root)
    ex.rendered.write_text("hand-made skeleton video")
    stages = _stages()
    assert [s for s, _ in example_status(stages, ex)][1] == Status.USER_PROVIDED
    assert run_stage(stages[1], ex).outcome is Outcome.USER_PROVIDED
    assert run_stage(stages[2], ex).outcome is Outcome.RAN
    assert ex.rendered.read_text() == "hand-made skeleton video"
    assert read_manifest(ex, "animate").inputs["rendered.mp4"]
    # --force render: the stage runs (and here fails: there is no pose data), the file is untouched.
    out = run_stage(stages[1], ex, force=True)
    assert out.outcome is Outcome.FAILED and "no pose data" in out.reason
    assert ex.rendered.read_text() == "hand-made skeleton video"


def test_expected_failure_is_recorded_with_a_one_line_reason(make_toy_example) -> None:
    ex = Example(make_toy_example(driving=b"\x00\x01garbage"))
    out = run_stage(ToyPose(PoseConfig()), ex)
    assert out.outcome is Outcome.FAILED
    assert out.reason == f"{ex.root / 'driving.mp4'}: not a readable video; re-export it as H.264 mp4"
    m = read_manifest(ex, "pose")
    assert m.status == "failed" and m.error == out.reason
    assert example_status([ToyPose(PoseConfig())], ex) == [(Status.FAILED, out.reason)]


class _Crashing(ToyPose):
    def run(self, example: Example, ctx: StageContext) -> None:
        raise ZeroDivisionError("division by zero")


def test_unexpected_exception_is_recorded_with_a_traceback_file(make_toy_example) -> None:
    ex = Example(make_toy_example())
    out = run_stage(_Crashing(PoseConfig()), ex)
    assert out.outcome is Outcome.FAILED
    assert out.reason.startswith("ZeroDivisionError: division by zero (traceback: ")
    m = read_manifest(ex, "pose")
    assert m.status == "failed" and m.traceback_file
    assert "ZeroDivisionError" in Path(m.traceback_file).read_text()


class _DiskFull(ToyPose):
    def run(self, example: Example, ctx: StageContext) -> None:
        with ctx.atomic_output(example.pose_data) as tmp:
            tmp.write_bytes(b"half a pose")
            raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_is_one_line_and_leaves_no_partial_output(make_toy_example) -> None:
    ex = Example(make_toy_example())
    out = run_stage(_DiskFull(PoseConfig()), ex)
    assert out.outcome is Outcome.FAILED
    assert out.reason == f"{ex.root}: pose: the disk is full; free space and rerun (finished stages are kept)"
    assert not ex.pose_data.exists() and not list(ex.state_dir.glob(".pose.tmp-*"))
    assert read_manifest(ex, "pose").error == out.reason
    assert run_stage(ToyPose(PoseConfig()), ex).outcome is Outcome.RAN  # the rerun resumes


class _WrappedDiskFull(ToyPose):
    """A library that wraps ENOSPC in its own error (safetensors' message, PyAV's chained one)."""

    def run(self, example: Example, ctx: StageContext) -> None:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })") from exc


def test_a_library_wrapped_disk_full_is_recognised(make_toy_example) -> None:
    ex = Example(make_toy_example())
    out = run_stage(_WrappedDiskFull(PoseConfig()), ex)
    assert out.outcome is Outcome.FAILED and "the disk is full" in out.reason
    assert is_disk_full(RuntimeError('SafetensorError: "No space left on device (os error 28)"'))
    assert not is_disk_full(RuntimeError("out of memory")) and not is_disk_full(OSError(errno.EACCES, "denied"))


def test_cancel_writes_an_interrupted_manifest_and_no_output(make_toy_example) -> None:
    ex = Example(make_toy_example())
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Interrupted):
        run_stage(ToyPose(PoseConfig()), ex, cancel=cancel)
    assert read_manifest(ex, "pose").status == "interrupted"
    assert not ex.pose_data.exists()
    assert [p.name for p in ex.state_dir.iterdir() if ".tmp-" in p.name] == []
    assert example_status([ToyPose(PoseConfig())], ex)[0][0] is Status.INTERRUPTED
    assert run_stage(ToyPose(PoseConfig()), ex).outcome is Outcome.RAN


def test_status_of_a_killed_run_is_interrupted_and_rerun_cleans_temp_files(make_toy_example) -> None:
    ex = Example(make_toy_example())
    stage = ToyPose(PoseConfig())
    run_stage(stage, ex)
    m = json.loads((ex.state_dir / "pose.json").read_text())
    m["status"] = "running"  # what a kill -9 mid-stage leaves behind
    (ex.state_dir / "pose.json").write_text(json.dumps(m))
    leftover = ex.state_dir / ".pose.tmp-999-1.npz"
    leftover.write_text("half written")
    assert example_status([stage], ex)[0] == (Status.INTERRUPTED, "the run was killed")
    assert run_stage(stage, ex).outcome is Outcome.RAN
    assert not leftover.exists()


def test_stage_that_forgets_an_output_fails(make_toy_example) -> None:
    class Lazy(ToyRender):
        def run(self, example: Example, ctx: StageContext) -> None:
            pass

    ex = Example(make_toy_example())
    run_stage(ToyPose(PoseConfig()), ex)
    out = run_stage(Lazy(RenderConfig()), ex)
    assert out.outcome is Outcome.FAILED
    assert out.reason == f"{ex.root}: render finished without writing rendered.mp4"


def test_hash_cache_is_saved_so_warm_status_reads_no_output_bytes(make_toy_example) -> None:
    ex = Example(make_toy_example())
    stages = _stages()
    hashes = HashCache(ex)
    for s in stages:
        run_stage(s, ex, hashes=hashes)
    hashes.save()
    cached = json.loads((ex.state_dir / "hashes.json").read_text())["files"]
    assert {"driving.mp4", ".scail/pose.npz", "rendered.mp4", "samples/toy.mp4", "ref.png"} <= set(cached)


def test_status_says_running_while_another_runner_holds_the_lock(make_toy_example) -> None:
    from scail.cache import example_lock

    ex = Example(make_toy_example())
    stage = ToyPose(PoseConfig())
    run_stage(stage, ex)
    m = json.loads((ex.state_dir / "pose.json").read_text())
    m["status"], m["pid"] = "running", 4242
    (ex.state_dir / "pose.json").write_text(json.dumps(m))
    with example_lock(ex):
        assert example_status([stage], ex)[0] == (Status.RUNNING, "pid 4242")
    assert example_status([stage], ex)[0][0] is Status.INTERRUPTED


def test_status_below_a_user_provided_stage_ignores_the_stages_above_it(make_toy_example) -> None:
    root = make_toy_example()
    (root / "driving.mp4").unlink()
    ex = Example(root)
    ex.rendered.write_text("hand-made")
    stages = _stages()
    run_stage(stages[2], ex)
    assert [s for s, _ in example_status(stages, ex)] == [Status.MISSING, Status.USER_PROVIDED, Status.FRESH]

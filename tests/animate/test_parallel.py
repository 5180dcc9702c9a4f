"""Sequence parallel (Ulysses) and CFG parallel: N gloo processes compute the single-process forward."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from scale_out_helpers import (
    TINY_PIPELINE,
    TOKENS,
    TOKENS_SCAIL2,
    forward_worker,
    inputs,
    make_examples,
    tiny_dit,
)
from tensor_checks import errors
from typer.testing import CliRunner

from scail.animate.parallel import Layout, check_split
from scail.cache import read_manifest
from scail.cli import app
from scail.example import Example


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# (cfg groups, rows in turn, compiled blocks, SCAIL-2 DiT) per process count; one spawn per count
# keeps the test quick
CASES = {
    2: [(1, False, False, False), (2, False, False, False), (1, False, True, False), (1, False, False, True)],
    4: [(1, True, False, False), (2, False, False, False), (1, False, False, True), (2, True, False, True)],
}


@pytest.mark.parametrize("world", [2, 4])
def test_parallel_forward_equals_one_process(tmp_path: Path, world: int) -> None:
    """Sequence parallel over `world` ranks (eager and compiled), and CFG parallel (2 groups of
    world/2), give the single-process forward of the CFG pair, padding, reference and pose tokens
    included; the same for the SCAIL-2 DiT (extra reference tokens, mask stream, history anchor,
    replacement RoPE)."""
    with torch.no_grad():  # (2, T, 16, h, w): the CFG pair batched in one process
        expected = {scail2: tiny_dit(scail2)(**inputs(scail2=scail2)) for scail2 in (False, True)}
    mp.spawn(forward_worker, args=(world, free_port(), str(tmp_path), CASES[world]), nprocs=world)
    for i, (cfg, _, _, scail2) in enumerate(CASES[world]):
        sp = world // cfg
        tokens = TOKENS_SCAIL2 if scail2 else TOKENS
        assert sp == 1 or tokens % sp, "the case must need padding (an odd token count per rank)"
        for rank in range(world):  # every rank ends with the whole output
            got = torch.load(tmp_path / f"rank{rank}-case{i}.pt", weights_only=True)
            _, rel = errors(got, expected[scail2])
            assert rel <= 1e-5, f"cfg {cfg} x sp {sp}, scail2 {scail2}, rank {rank}: relative error {rel:.2e}"


def test_layout_places_ranks() -> None:
    lay = [Layout(world=4, cfg=2, rank=r) for r in range(4)]
    assert [(x.cfg_rank, x.sp_rank) for x in lay] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert lay[0].sp == 2


@pytest.mark.parametrize(("heads", "gpus", "cfg", "sp"), [(40, 2, False, 2), (40, 5, False, 5), (40, 8, False, 8),
                                                           (40, 4, True, 2), (2, 1, False, 1)])
def test_check_split_accepts(heads: int, gpus: int, cfg: bool, sp: int) -> None:
    assert check_split(heads, gpus, cfg) == sp


def test_check_split_names_the_valid_counts() -> None:
    with pytest.raises(ValueError) as err:
        check_split(40, 3, False)
    assert str(err.value) == (
        "animate.parallel.gpus=3: the DiT's 40 attention heads do not split across 3 sequence-parallel "
        "ranks (heads % ranks must be 0); use one of 1, 2, 4, 5, 8, 10"
    )
    with pytest.raises(ValueError, match="even number of GPUs"):
        check_split(40, 3, True)


def _sample_with(root: Path, *args: str) -> dict:
    result = CliRunner().invoke(app, ["animate", str(root), "-p", str(root.parent / "tiny.yaml"), "-q", *args])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(Example(root), "animate")
    assert manifest is not None and manifest.status == "done"
    return manifest.notes


def test_animate_on_two_processes_equals_one(tmp_path: Path) -> None:
    """`scail animate --gpus 2 --device cpu` (sequence parallel over 2 gloo processes, then CFG
    parallel) writes the frames of the 1-process sample, bit for bit."""
    make_examples(tmp_path / "pristine", 2)
    one, two, cfg = (tmp_path / name for name in ("one", "two", "cfg"))
    (tmp_path / "tiny.yaml").write_text(TINY_PIPELINE)
    for dest in (one, two, cfg):
        shutil.copytree(tmp_path / "pristine" / "ex1", dest)  # ex1 has a prompt: the CFG pair runs
    expected = _sample_with(one)
    assert expected["cfg_branches"] == 2 and expected["gpus"] == 1
    got = _sample_with(two, "--gpus", "2", "--device", "cpu")
    assert got["gpus"] == 2 and got["frames_sha256"] == expected["frames_sha256"]
    got = _sample_with(cfg, "--gpus", "2", "--set", "animate.parallel.cfg=true")
    assert got["frames_sha256"] == expected["frames_sha256"]


def test_fast_mode_and_windows_on_two_processes_equal_one(tmp_path: Path) -> None:
    """Fast mode (FP8 arithmetic, the step cache whose skip decision rank 0 takes for all) and
    temporal windows, with sequence parallel: the 1-process frames, bit for bit."""
    make_examples(tmp_path / "pristine", 2, frames=21)
    (tmp_path / "tiny.yaml").write_text(TINY_PIPELINE)
    opts = ["--set", "animate.fast=true", "--set", "animate.window_frames=9", "--set", "animate.window_overlap=4"]
    one, two = tmp_path / "one", tmp_path / "two"
    for dest in (one, two):
        shutil.copytree(tmp_path / "pristine" / "ex1", dest)
    expected = _sample_with(one, *opts)
    assert expected["windows"] >= 2 and expected["cfg_branches"] == 2
    got = _sample_with(two, *opts, "--gpus", "2")
    assert got["frames_sha256"] == expected["frames_sha256"]


def test_an_interrupted_sample_leaves_the_group_ready_for_the_next(tmp_path: Path) -> None:
    """Ctrl-C on rank 0 mid-sample stops the other rank at the same step; the next sample runs, gives
    the 1-process latent, and close() ends the worker."""
    from scail.animate.build import build_pipeline, build_tiny_random
    from scail.config import AnimateConfig, ParallelConfig
    from scail.errors import Interrupted

    g = torch.Generator().manual_seed(3)
    ref, pose = torch.rand(3, 32, 64, generator=g) * 2 - 1, torch.rand(3, 5, 16, 32, generator=g) * 2 - 1
    single = build_tiny_random("cpu")
    expected = single.sample(single.prepare(ref, pose, "a dancer"), steps=3, seed=9)
    pipe = build_pipeline(AnimateConfig(model="tiny-random", device="cpu", parallel=ParallelConfig(gpus=2)))
    assert pipe.parallel is not None
    workers = list(pipe.parallel.workers)
    try:
        cond = pipe.prepare(ref, pose, "a dancer")

        def ctrl_c(done: int, total: int | None) -> None:
            raise Interrupted("stop")

        with pytest.raises(Interrupted):
            pipe.sample(cond, steps=3, seed=9, on_progress=ctrl_c)
        got = pipe.sample(cond, steps=3, seed=9)
        assert torch.equal(got, expected)
    finally:
        pipe.close()
    assert workers and not any(w.is_alive() for w in workers)
    assert [w.exitcode for w in workers] == [0] * len(workers)  # quit cleanly: not killed, no abort at exit


def test_ctrl_c_in_the_terminal_stops_every_rank(tmp_path: Path) -> None:
    """SIGINT to the whole process group (what Ctrl-C does) mid-denoising: rank 0 records the sample
    as interrupted and exits 130; the other rank ignores the signal, drops the sample and exits."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    make_examples(tmp_path / "examples", 1)
    (tmp_path / "tiny.yaml").write_text(TINY_PIPELINE.replace("steps: 3", "steps: 400"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "scail", "animate", str(tmp_path / "examples"), "-p", str(tmp_path / "tiny.yaml"),
         "--gpus", "2"], stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stderr is not None
    for line in proc.stderr:  # plain progress lines (no terminal)
        if "denoising" in line:
            break
    workers = psutil.Process(proc.pid).children(recursive=True)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    manifest = read_manifest(Example(tmp_path / "examples" / "ex0"), "animate")
    assert manifest is not None and manifest.status == "interrupted"
    _, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, [" ".join(w.cmdline()) for w in alive]


def test_a_gpu_count_that_does_not_split_the_heads_is_one_line(tmp_path: Path) -> None:
    make_examples(tmp_path / "examples", 1)
    (tmp_path / "tiny.yaml").write_text(TINY_PIPELINE)
    args = ["animate", str(tmp_path / "examples"), "-p", str(tmp_path / "tiny.yaml"), "--gpus", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "error: --gpus 3: the tiny-random DiT's 2 attention heads do not split across 3 sequence-parallel "
        "ranks; use one of 1, 2"
    )

"""Sequence parallel (Ulysses) and CFG parallel: N gloo processes compute the single-process forward."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from sp_helpers import TOKENS, forward_worker, inputs, tiny_dit
from tensor_checks import errors

from scail.animate.parallel import Layout, check_split


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# (cfg groups, rows in turn) per process count; one spawn per count keeps the test quick
CASES = {2: [(1, False), (2, False)], 4: [(1, True), (2, False)]}


@pytest.mark.parametrize("world", [2, 4])
def test_parallel_forward_equals_one_process(tmp_path: Path, world: int) -> None:
    """Sequence parallel over `world` ranks, and CFG parallel (2 groups of world/2), give the
    single-process forward of the CFG pair, padding and the reference and pose tokens included."""
    with torch.no_grad():
        expected = tiny_dit()(**inputs())  # (2, T, 16, h, w): the CFG pair batched in one process
    mp.spawn(forward_worker, args=(world, free_port(), str(tmp_path), CASES[world]), nprocs=world)
    for i, (cfg, _) in enumerate(CASES[world]):
        sp = world // cfg
        assert sp == 1 or TOKENS % sp, "the case must need padding (an odd token count per rank)"
        for rank in range(world):  # every rank ends with the whole output
            got = torch.load(tmp_path / f"rank{rank}-case{i}.pt", weights_only=True)
            _, rel = errors(got, expected)
            assert rel <= 1e-5, f"cfg {cfg} x sp {sp}, rank {rank}: relative error {rel:.2e}"


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

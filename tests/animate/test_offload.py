"""Block offload: the streamed model computes exactly what the resident one does."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from scail.animate.dit import DiT, DiTConfig
from scail.animate.offload import BlockOffload, offload_dit_blocks, offload_t5_blocks
from scail.animate.random_weights import random_dit
from scail.animate.t5 import T5Config, T5Encoder


def dit_inputs(b: int = 2, t: int = 3, h: int = 8, w: int = 12) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    return (
        torch.randn(b, t, 16, h, w, generator=gen), torch.tensor([700.0]), torch.randn(1, 7, 32, generator=gen),
        torch.randn(1, 1, 16, h, w, generator=gen), torch.randn(1, t, 16, h // 2, w // 2, generator=gen),
        torch.randn(1, 5, 32, generator=gen),
    )  # fmt: skip


def three_block_dit() -> DiT:
    return random_dit(dataclasses.replace(DiTConfig.tiny(), num_layers=3), torch.device("cpu"), torch.float32, 5)


def in_buffer(t: torch.Tensor, buf: torch.Tensor) -> bool:
    start = buf.data_ptr()
    return start <= t.data_ptr() < start + buf.numel()


@torch.no_grad()
def test_dit_offload_equals_resident_over_several_forwards() -> None:
    dit = three_block_dit()
    args = dit_inputs()
    expected = [dit(*args), dit(args[0] * 0.5, torch.tensor([300.0]), *args[2:])]
    streamer = offload_dit_blocks(dit, "cpu")
    got = [dit(*args), dit(args[0] * 0.5, torch.tensor([300.0]), *args[2:])]
    for g, e in zip(got, expected, strict=True):
        assert torch.equal(g, e)
    assert streamer.copies >= 2 * 3 - 1  # every block came through a slot on each forward (two stay warm)
    # between forwards every block parameter lives in its block's CPU buffer, none in a slot
    for i, block in enumerate(dit.blocks):
        assert all(in_buffer(p, streamer.cpu[i]) for p in block.parameters())


@torch.no_grad()
def test_offload_with_compiled_blocks() -> None:
    dit = three_block_dit()
    args = dit_inputs()
    expected = dit(*args)
    dit.compile_blocks(backend="aot_eager")
    offload_dit_blocks(dit, "cpu")
    assert torch.equal(dit(*args), expected)


@torch.no_grad()
def test_t5_offload_moves_inputs_and_release_frees_slots() -> None:
    torch.manual_seed(0)
    t5 = T5Encoder(dataclasses.replace(T5Config.tiny(), num_layers=3)).eval()
    ids = torch.randint(2, 64, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    expected = t5(ids, mask)
    streamer = offload_t5_blocks(t5, "cpu")
    assert torch.equal(t5(ids, mask), expected)
    assert streamer.gpu_bytes > 0
    streamer.release()
    assert streamer.gpu_bytes == 0
    assert torch.equal(t5(ids, mask), expected)  # slots come back on the next use


@torch.no_grad()
def test_single_block_and_remove() -> None:
    block = torch.nn.Linear(4, 4)
    x = torch.randn(3, 4)
    expected = block(x)
    streamer = BlockOffload([block], "cpu")
    assert torch.equal(block(x), expected) and torch.equal(block(x), expected)
    streamer.remove()
    assert torch.equal(block(x), expected)


@pytest.mark.gpu
@torch.no_grad()
def test_dit_offload_on_cuda_equals_resident() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    dit = three_block_dit().cuda()
    args = tuple(a.cuda() for a in dit_inputs())
    expected = dit(*args)
    dit.cpu()
    streamer = offload_dit_blocks(dit, "cuda")
    assert all(p.is_cuda for n, p in dit.named_parameters() if not n.startswith("blocks."))
    assert torch.equal(dit(*args), expected)
    assert streamer.gpu_bytes == 2 * streamer.slot_bytes

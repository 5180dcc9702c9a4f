"""Block offload: keep a model's transformer blocks in (pinned) CPU memory and stream each onto the
GPU just before it runs, for 24-48 GB cards.

    CPU (pinned)   block 0 | block 1 | block 2 | ...        one flat byte buffer per block
                      │ H2D copy on a side stream, one block ahead of the compute stream
    GPU            slot A  | slot B                          two flat byte buffers (double buffer)

Before block i runs, the compute stream waits for its copy, the block's parameters are pointed at
views into its slot, and the copy of block i+1 (wrapping to 0 for the next forward) is issued into
the other slot, which the side stream may overwrite only after the block that used it has finished
(an event recorded on the compute stream). After block i runs its parameters point back at the CPU
buffer. With a GPU the copies overlap the compute of the previous block; on the CPU the same
scheduling runs with plain copies (used by the tests).

Works with any list of modules (the DiT's 40 blocks, umT5's 24); the blocks are driven by forward
hooks, so a block's `forward` may be compiled (`DiT.compile_blocks`) without tracing the hooks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from scail.animate.dit import DiT
    from scail.animate.t5 import T5Encoder

log = logging.getLogger(__name__)

_ALIGN = 256  # bytes; every parameter view starts on this boundary


@dataclass(frozen=True)
class _Entry:
    module: nn.Module
    name: str
    shape: torch.Size
    dtype: torch.dtype
    offset: int
    nbytes: int


def _align(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def _view(buf: torch.Tensor, e: _Entry) -> torch.Tensor:
    return buf[e.offset : e.offset + e.nbytes].view(e.dtype).view(e.shape)


def arena_groups(sizes: list[int]) -> list[list[int]]:
    """Consecutive runs of `sizes` (bytes) to allocate together, so that the total allocated after
    rounding each run up to a power of two (what torch's pinned-memory allocator does) is smallest.

    Tries arena capacities of 256 MiB to 4 GiB (a larger arena would hold the host at up to twice the
    weights while the blocks move in), fills each greedily in order, and keeps the best (the smaller
    arenas on a tie):
    40 DiT blocks of 0.81 GB, one buffer each, would take 40 GiB for 32.3 GB; in runs of 5 (4 GiB
    arenas) they take 32 GiB.
    """
    aligned = [_align(n) for n in sizes]
    best: tuple[int, list[list[int]]] | None = None
    for k in range(28, 33):
        groups: list[list[int]] = []
        totals: list[int] = []
        for i, n in enumerate(aligned):
            if groups and totals[-1] + n <= 1 << k:
                groups[-1].append(i)
                totals[-1] += n
            else:
                groups.append([i])
                totals.append(n)
        allocated = sum(1 << (t - 1).bit_length() for t in totals)  # each run rounded up to a power of two
        if best is None or allocated < best[0]:
            best = (allocated, groups)
    return best[1] if best is not None else []


class BlockOffload:
    """Stream `blocks` from CPU memory to `device`, one block ahead (see the module docstring).

    Args:
        blocks: the modules to stream; their parameters are moved into one CPU buffer per block
            (pinned when `device` is CUDA). Buffers (none in the SCAIL models) are moved to `device`.
        device: where the blocks run.
        pin: pin the CPU buffers (needed for asynchronous copies; default: when device is CUDA).
        move_inputs: move tensor arguments of a block to `device` first (umT5: the embedding
            lookup stays on the CPU).

    Call `remove()` to drop the hooks (the parameters stay in CPU memory).
    """

    def __init__(
        self,
        blocks: Iterable[nn.Module],
        device: torch.device | str,
        pin: bool | None = None,
        move_inputs: bool = False,
    ) -> None:
        self.blocks = list(blocks)
        self.move_inputs = move_inputs
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        pin = cuda if pin is None else pin
        self.layouts: list[list[_Entry]] = []
        sizes: list[int] = []
        for block in self.blocks:
            entries: list[_Entry] = []
            offset = 0
            for module in block.modules():
                for name, p in module.named_parameters(recurse=False):
                    nbytes = p.numel() * p.element_size()
                    entries.append(_Entry(module, name, p.shape, p.dtype, offset, nbytes))
                    offset = _align(offset + nbytes)
                for bname, b in module.named_buffers(recurse=False):
                    if b is not None:
                        setattr(module, bname, b.to(self.device))
            self.layouts.append(entries)
            sizes.append(max(offset, 1))
        # one CPU buffer per block, carved out of a few arenas: the pinned-memory allocator rounds
        # each allocation up to a power of two, which for a 0.8 GB DiT block alone wastes a quarter
        self.cpu: list[torch.Tensor] = []
        for group in arena_groups(sizes):
            arena = torch.empty(sum(_align(sizes[i]) for i in group), dtype=torch.uint8, pin_memory=pin)
            start = 0
            for i in group:
                buf = arena[start : start + sizes[i]]
                for e in self.layouts[i]:
                    param = e.module._parameters[e.name]
                    assert param is not None
                    view = _view(buf, e)
                    view.copy_(param.data)
                    param.data = view  # the block now lives in `buf`; its old storage is freed
                self.cpu.append(buf)
                start += _align(sizes[i])
        self.slot_bytes = max(b.numel() for b in self.cpu) if self.cpu else 1
        self.slots: list[torch.Tensor] = []  # allocated at the first use (see `release`)
        self.stream = torch.cuda.Stream(self.device) if cuda else None
        self._ready: dict[int, Any] = {}  # block index -> event: its copy has landed
        self._slot_free: list[Any] = [None, None]  # slot -> event: the block that used it finished
        self._in_slot: list[int | None] = [None, None]  # which block each slot holds (or is loading)
        self._bound: dict[int, int] = {}  # block index -> slot while it runs
        self.copies = 0  # number of host-to-device block copies issued (for tests and logs)
        self._hooks = []
        for i, block in enumerate(self.blocks):
            self._hooks.append(block.register_forward_pre_hook(self._pre_hook(i)))
            self._hooks.append(block.register_forward_hook(self._post_hook(i)))
        log.info(
            "block offload: %d blocks, %.2f GiB on the CPU%s, 2 slots of %.2f GiB on %s",
            len(self.blocks),
            sum(b.numel() for b in self.cpu) / 2**30,
            " (pinned)" if pin else "",
            self.slot_bytes / 2**30,
            self.device,
        )

    # ------------------------------------------------------------------------------------------

    @property
    def gpu_bytes(self) -> int:
        """Device memory the streamed blocks use now: the two slots (0 after `release`)."""
        return sum(s.numel() for s in self.slots)

    def release(self) -> None:
        """Free the two device slots (e.g. umT5 between prompts); the next forward allocates them again."""
        if self.stream is not None:
            self.stream.synchronize()
            torch.cuda.current_stream(self.device).synchronize()
        self.slots = []
        self._ready.clear()
        self._slot_free = [None, None]
        self._in_slot = [None, None]

    def _slot_of(self, i: int) -> int | None:
        return next((s for s in (0, 1) if self._in_slot[s] == i), None)

    def _load(self, i: int, avoid: int | None) -> int:
        """Issue the copy of block i into a slot other than `avoid`; returns the slot."""
        slot = self._slot_of(i)
        if slot is not None:
            return slot
        if not self.slots:
            self.slots = [torch.empty(self.slot_bytes, dtype=torch.uint8, device=self.device) for _ in range(2)]
        slot = 1 - avoid if avoid is not None else 0
        self._in_slot[slot] = i
        src, dst = self.cpu[i], self.slots[slot][: self.cpu[i].numel()]
        if self.stream is None:
            dst.copy_(src)
        else:
            with torch.cuda.stream(self.stream):
                if self._slot_free[slot] is not None:
                    self.stream.wait_event(self._slot_free[slot])
                dst.copy_(src, non_blocking=True)
                event = torch.cuda.Event()
                event.record(self.stream)
                self._ready[i] = event
        self.copies += 1
        return slot

    def _pre_hook(self, i: int) -> Any:
        def hook(module: nn.Module, args: Any) -> Any:
            moved = None
            if self.move_inputs and any(isinstance(a, torch.Tensor) and a.device != self.device for a in args):
                moved = tuple(a.to(self.device) if isinstance(a, torch.Tensor) else a for a in args)
            slot = self._load(i, avoid=None)
            ready = self._ready.pop(i, None)  # None: already waited for (a single block)
            if ready is not None:
                torch.cuda.current_stream(self.device).wait_event(ready)
            for e in self.layouts[i]:
                p = e.module._parameters[e.name]
                assert p is not None
                p.data = _view(self.slots[slot], e)
            self._bound[i] = slot
            self._load((i + 1) % len(self.blocks), avoid=slot)  # prefetch the next block
            return moved

        return hook

    def _post_hook(self, i: int) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            slot = self._bound.pop(i)
            if self.stream is not None:
                event = torch.cuda.Event()
                event.record(torch.cuda.current_stream(self.device))
                self._slot_free[slot] = event
            for e in self.layouts[i]:
                p = e.module._parameters[e.name]
                assert p is not None
                p.data = _view(self.cpu[i], e)

        return hook

    def remove(self) -> None:
        """Remove the hooks; the blocks stay in CPU memory."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()


def offload_dit_blocks(dit: DiT, device: torch.device | str, pin: bool | None = None) -> BlockOffload:
    """Put everything of `dit` but its blocks on `device` and stream the blocks (see `BlockOffload`)."""
    device = torch.device(device)
    for name, child in dit.named_children():
        if name != "blocks":
            child.to(device)
    return BlockOffload(dit.blocks, device, pin)


def offload_t5_blocks(t5: T5Encoder, device: torch.device | str, pin: bool | None = None) -> BlockOffload:
    """umT5 with nothing resident on `device` but its final norm: the token embedding (2 GB) stays
    on the CPU (pass ids and mask on the CPU), the 24 blocks are streamed. Call `release()` after
    encoding to free the two slots."""
    device = torch.device(device)
    t5.token_embedding.to("cpu")
    t5.norm.to(device)
    return BlockOffload(t5.blocks, device, pin, move_inputs=True)


class Visitor:
    """Lend a module (umT5, CLIP) to `device` for one piece of work and take it back, cheaply.

    The weights live in CPU memory, pinned where the host allows, for the pipeline's life. A visit
    copies every parameter and buffer to `device` (non-blocking from pinned memory: umT5's 11 GB in
    about half a second on a PCIe 5 card) and leaving points them back at the CPU copies. The
    weights never change, so nothing travels back: `module.to("cpu")` copied 11 GB from the GPU into
    freshly allocated pageable memory on every clip (~10 s of a 60 s clip on an H100; see
    benchmarks/README.md).

    On the CPU, or with `offload=False` (the module stays where it is), a visit only makes sure the
    module is on `device`.
    """

    def __init__(self, module: nn.Module, device: torch.device | str, offload: bool = True) -> None:
        self.module = module
        self.device = torch.device(device)
        self.offload = offload and self.device.type != "cpu"
        self._home: list[_Home] | None = None
        self._settling: threading.Thread | None = None
        self._settle_error: BaseException | None = None

    def settle_in_background(self) -> None:
        """Give the weights their pinned CPU home on a thread now, so that the first visit does not wait
        for it. Pinning umT5's 11 GB took ~7 s of a cold clip's first text encoding (benchmarks/README.md);
        started while the DiT's file streams from disk, it costs the clip nothing. The module must not
        be used until the first visit (which waits for the thread). A no-op where nothing is pinned."""
        if not self.offload or self._home is not None or self._settling is not None:
            return

        def settle() -> None:
            try:
                self._home = self._settle()
            except BaseException as exc:  # re-raised by the first visit, in the caller's thread
                self._settle_error = exc

        self._settling = threading.Thread(target=settle, name=f"scail-pin-{type(self.module).__name__}", daemon=True)
        self._settling.start()

    def wait_settled(self) -> None:
        """Wait for `settle_in_background`'s thread (if any) and raise what it raised."""
        if self._settling is not None:
            self._settling.join()
            self._settling = None
        if self._settle_error is not None:
            exc, self._settle_error = self._settle_error, None
            raise exc

    def _settle(self) -> list[_Home]:
        """Give every tensor its CPU home once (a parameter shared by several modules: one home)."""
        homes: dict[object, _Home] = {}
        for owner in self.module.modules():
            for table, is_param in ((owner._parameters, True), (owner._buffers, False)):
                for name, t in table.items():
                    if t is None:
                        continue
                    key: object = id(t) if is_param else (id(owner), name)
                    if key in homes:
                        homes[key].owners.append((owner, name))
                    else:
                        homes[key] = _Home([(owner, name)], is_param, t.detach().to("cpu"))
        home = list(homes.values())
        for h in home:
            h.place(h.cpu)
        if self.device.type == "cuda":
            try:
                pack_homes(home, pin=True)
            except RuntimeError:  # the host would not lock more memory: pageable copies still work
                log.warning("could not pin %s's weights in host memory; its visits to the GPU copy from "
                            "pageable memory (slower)", type(self.module).__name__)
        return home

    def __enter__(self) -> None:
        if not self.offload:
            self.module.to(self.device)
            return
        self.wait_settled()
        if self._home is None:
            self._home = self._settle()
        for h in self._home:
            h.place(h.cpu.to(self.device, non_blocking=True))

    def __exit__(self, *exc: object) -> None:
        if not self.offload or self._home is None:
            return
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()  # the work that used the copies is done
        for h in self._home:
            h.place(h.cpu)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


@dataclass
class _Home:
    """One tensor of a visited module: where it sits (owner module, attribute name) and its CPU copy."""

    owners: list[tuple[nn.Module, str]]
    is_param: bool
    cpu: torch.Tensor

    def place(self, t: torch.Tensor) -> None:
        """Point the owners' parameter or buffer at `t` (the parameter object kept where the devices allow)."""
        if not self.is_param:
            for owner, name in self.owners:
                owner._buffers[name] = t
            return
        first, first_name = self.owners[0]
        param = first._parameters[first_name]
        if param is not None and torch._has_compatible_shallow_copy_type(param, t):
            param.data = t  # every owner holds this same Parameter object
            return
        new = nn.Parameter(t, requires_grad=False)  # e.g. CPU <-> meta: the tensor type differs
        for owner, name in self.owners:
            owner._parameters[name] = new


def pack_homes(homes: list[_Home], pin: bool) -> int:
    """Move the homes' CPU tensors into a few flat buffers (pinned if `pin`); returns how many.

    Pinned memory comes from torch's caching host allocator, which rounds every allocation up to a
    power of two: umT5's 32 MB attention matrices pinned one by one would take twice their size.
    Packed largest first into the arenas `arena_groups` chooses, the rounding wastes a few percent.
    Buffers are filled one at a time and their tensors replace the pageable originals at once, so
    the host holds at most one buffer more than the weights while this runs. An allocation error
    leaves the remaining tensors where they are (and is raised).
    """
    order = sorted(range(len(homes)), key=lambda i: -homes[i].cpu.nbytes)
    groups = arena_groups([max(homes[i].cpu.nbytes, 1) for i in order])
    for group in groups:
        items = [homes[order[g]] for g in group]
        buf = torch.empty(max(sum(_align(h.cpu.nbytes) for h in items), 1), dtype=torch.uint8, pin_memory=pin)
        offset = 0
        for h in items:
            n = h.cpu.nbytes
            view = buf[offset : offset + n].view(h.cpu.dtype).view(h.cpu.shape)
            view.copy_(h.cpu)
            h.cpu = view
            h.place(view)
            offset += _align(n)
    return len(groups)

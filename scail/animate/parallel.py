"""Sequence parallel (Ulysses) and CFG parallel for the DiT across processes (torch.distributed).

One sample's token sequence is split across the `sp` ranks of a sequence-parallel group; every rank
holds the whole DiT and runs every block on its own slice of tokens:

    tokens (B, L, D) ──pad to a multiple of sp──► rank r keeps tokens [r*Ls, (r+1)*Ls)     Ls = L_pad / sp
    per block:   norms, adaLN, q/k/v/o, cross-attention, FFN   on (B, Ls, D)   (token-wise: no traffic)
                 self-attention: q, k, v (B, Ls, N, Dh) ──all-to-all──► (B, L_pad, N/sp, Dh)
                                 drop the padding, attend over all L tokens with N/sp heads,
                                 pad, ──all-to-all──► (B, Ls, N, Dh)
    after the blocks: all-gather ──► (B, L_pad, D) ──► (B, L, D) on every rank

The [ref | video | pose] sequence is split as one sequence (the reference and pose tokens are
sharded like the video ones), and the RoPE tables are sliced with it. Ulysses needs the heads to
split evenly: `num_heads % sp == 0` (40 heads at 14B: sp in 2, 4, 5, 8). Padding tokens are zeros;
they are removed before attention, so they never act as keys, and their outputs are dropped.

CFG parallel: with `cfg = 2`, ranks [0, sp) run the unconditional row of a CFG pair and ranks
[sp, 2 sp) the conditional one, each as a sequence-parallel group; an all-gather between the two
groups puts the pair back together. A batch of one row (fast mode's reused guidance) runs on both
groups.

Hooked in at two places of the DiT, so its maths stays as written (`scail.animate.dit`):
`DiT.run_blocks` hands its tokens to `SequenceParallel.run_blocks`, and each `SelfAttention` calls
`SequenceParallel.attention` instead of the plain attention. `install(dit, sp)` sets both. Under
`torch.compile` the all-to-all attention is the opaque custom op ``scail::ulysses_attention``.
The processes themselves are started by `scail.animate.launch`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from scail.animate.attention import attention as plain_attention

if TYPE_CHECKING:
    from scail.animate.dit import Conditioning, DiT

log = logging.getLogger(__name__)

BlocksFn = Callable[[list[torch.Tensor], "Conditioning"], torch.Tensor]
"""The DiT's own loop over its blocks: (tokens handed over in a one-element list, conditioning) -> tokens."""


def check_split(num_heads: int, gpus: int, cfg: bool) -> int:
    """The sequence-parallel degree for `gpus` processes; ValueError with the valid counts otherwise."""
    groups = 2 if cfg else 1
    if gpus < 1 or gpus % groups:
        raise ValueError(f"animate.parallel.gpus={gpus}: CFG parallel needs an even number of GPUs (2 groups)")
    sp = gpus // groups
    if num_heads % sp:
        valid = [n * groups for n in range(1, min(num_heads, 64) + 1) if num_heads % n == 0]
        shown = ", ".join(str(n) for n in valid if n <= 16)
        raise ValueError(
            f"animate.parallel.gpus={gpus}: the DiT's {num_heads} attention heads do not split across {sp} "
            f"sequence-parallel ranks (heads % ranks must be 0); use one of {shown}"
        )
    return sp


@dataclass(frozen=True)
class Layout:
    """Where one rank sits: world = cfg * sp ranks; rank = cfg_rank * sp + sp_rank."""

    world: int
    cfg: int  # 1 or 2 CFG groups
    rank: int

    @property
    def sp(self) -> int:
        return self.world // self.cfg

    @property
    def sp_rank(self) -> int:
        return self.rank % self.sp

    @property
    def cfg_rank(self) -> int:
        return self.rank // self.sp


class SequenceParallel:
    """The collective side of the DiT on one rank (see the module docstring).

    Args:
        layout: this rank's place; `torch.distributed` must be initialised with `layout.world` ranks.
        sp_group, cfg_group: the process groups this rank belongs to (`make_groups`); None means
            the default (world) group, which is right when there is a single group of that kind.
    """

    def __init__(self, layout: Layout, sp_group: Any = None, cfg_group: Any = None) -> None:
        self.layout = layout
        self.sp_group = sp_group
        self.cfg_group = cfg_group
        self._valid_len = 0  # real tokens of the sequence being run (the rest of L_pad is padding)

    # ------------------------------------------------------------------------------------------
    # run_blocks: shard, run, gather
    # ------------------------------------------------------------------------------------------

    def run_blocks(self, blocks: BlocksFn, tokens: torch.Tensor | list[torch.Tensor], cond: Conditioning) -> torch.Tensor:
        """`blocks` on this rank's slice of `tokens` (B, L, D) float32; returns all (B, L, D) on every rank.

        Tokens handed over in a one-element list (as `DiT.run_blocks` takes them) are freed once this
        rank's slice is cut from them.
        """
        lay = self.layout
        if isinstance(tokens, list):
            tokens = tokens.pop()
        b, length, _ = tokens.shape
        split_cfg = lay.cfg == 2 and b == 2
        if split_cfg:  # this group's row of the CFG pair
            tokens, cond = tokens[lay.cfg_rank : lay.cfg_rank + 1], _row_of(cond, lay.cfg_rank)
        sp = lay.sp
        chunk = -(-length // sp)  # tokens per rank, padding included
        padded = chunk * sp
        start = lay.sp_rank * chunk
        local = _pad_tokens(tokens, padded)[:, start : start + chunk].clone()  # (b, Ls, D)
        del tokens  # the whole sequence is not needed again until the all-gather
        cos = _pad_rows(cond.rope_cos, padded, 1.0)[start : start + chunk]  # (Ls, Dh/2)
        sin = _pad_rows(cond.rope_sin, padded, 0.0)[start : start + chunk]
        local_cond = dataclasses.replace(cond, rope_cos=cos, rope_sin=sin)
        self._valid_len = length
        out = blocks([local], local_cond)  # (b, Ls, D)
        if sp > 1:
            parts = [torch.empty_like(out) for _ in range(sp)]
            dist.all_gather(parts, out.contiguous(), group=self.sp_group)
            out = torch.cat(parts, dim=1)  # (b, L_pad, D)
        out = out[:, :length]
        if split_cfg:
            rows = [torch.empty_like(out) for _ in range(2)]
            dist.all_gather(rows, out.contiguous(), group=self.cfg_group)
            out = torch.cat(rows, dim=0)  # (2, L, D): [uncond, cond]
        return out

    # ------------------------------------------------------------------------------------------
    # Ulysses attention
    # ------------------------------------------------------------------------------------------

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Self-attention of the whole sequence from this rank's slice: (B, Ls, N, Dh) x3 -> (B, Ls, N, Dh)."""
        if torch.compiler.is_compiling():
            return torch.ops.scail.ulysses_attention(q, k, v, self._valid_len)
        return self._attention_eager(q, k, v, self._valid_len)

    def _attention_eager(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid_len: int) -> torch.Tensor:
        sp = self.layout.sp
        b, chunk, n, dh = q.shape
        qkv = torch.stack([q, k, v]).unflatten(3, (sp, n // sp))  # (3, B, Ls, sp, N/sp, Dh)
        qkv = self._all_to_all(qkv.permute(3, 0, 1, 2, 4, 5))  # (sp: sequence chunk, 3, B, Ls, N/sp, Dh)
        qkv = qkv.permute(1, 2, 0, 3, 4, 5).flatten(2, 3)[:, :, :valid_len]  # (3, B, L, N/sp, Dh)
        out = plain_attention(qkv[0], qkv[1], qkv[2])  # (B, L, N/sp, Dh)
        out = _pad_tokens(out, chunk * sp).unflatten(1, (sp, chunk))  # (B, sp, Ls, N/sp, Dh)
        out = self._all_to_all(out.permute(1, 0, 2, 3, 4))  # (sp: head group, B, Ls, N/sp, Dh)
        return out.permute(1, 2, 0, 3, 4).reshape(b, chunk, n, dh)  # (B, Ls, N, Dh)

    def _all_to_all(self, x: torch.Tensor) -> torch.Tensor:
        """Send x[j] (first dim = sp) to rank j of the group; returns what each rank sent, in rank order."""
        if self.layout.sp == 1:
            return x
        x = x.contiguous()
        out = torch.empty_like(x)
        dist.all_to_all_single(out, x, group=self.sp_group)
        return out

    # ------------------------------------------------------------------------------------------

    def agree(self, value: float) -> float:
        """Rank 0's `value` on every rank (host-side decisions such as fast mode's step skipping must
        match on all ranks, or their collectives would no longer pair up)."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return float(box[0])


def _pad_tokens(x: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad dim 1 of x (B, L, ...) to `length`."""
    extra = length - x.shape[1]
    if extra == 0:
        return x
    return torch.cat([x, x.new_zeros(x.shape[0], extra, *x.shape[2:])], dim=1)


def _pad_rows(table: torch.Tensor, length: int, value: float) -> torch.Tensor:
    """Pad a RoPE table (L, P) to `length` rows with `value` (cos 1, sin 0: no rotation)."""
    return F.pad(table, (0, 0, 0, length - table.shape[0]), value=value)


def _row_of(cond: Conditioning, i: int) -> Conditioning:
    """Row i of every batched field of the conditioning (fields of batch 1 are shared)."""

    def row(t: torch.Tensor) -> torch.Tensor:
        return t if t.shape[0] == 1 else t[i : i + 1]

    return dataclasses.replace(cond, e=row(cond.e), e0=row(cond.e0), text=row(cond.text), image=row(cond.image))


# ----------------------------------------------------------------------------------------------
# Groups and installation
# ----------------------------------------------------------------------------------------------


def make_groups(world: int, cfg: int, rank: int) -> SequenceParallel:
    """Create the sequence- and CFG-parallel groups (collectively: every rank calls this) and return
    this rank's `SequenceParallel`. `torch.distributed` must be initialised with `world` ranks."""
    layout = Layout(world=world, cfg=cfg, rank=rank)
    sp = layout.sp
    sp_group = cfg_group = None
    if cfg == 2:
        # every rank takes part in creating every group, in the same order
        for c in range(2):
            group = dist.new_group([c * sp + i for i in range(sp)])
            if c == layout.cfg_rank:
                sp_group = group
        for i in range(sp):
            group = dist.new_group([i, sp + i])
            if i == layout.sp_rank:
                cfg_group = group
    return SequenceParallel(layout, sp_group, cfg_group)


def install(dit: DiT, sp: SequenceParallel | None) -> DiT:
    """Route `dit.run_blocks` and every self-attention through `sp` (None: back to the plain path)."""
    dit.parallel = sp
    for block in dit.blocks:
        block.self_attn.seq_parallel = None if sp is None else sp.attention  # type: ignore[union-attr]
    _ACTIVE[:] = [] if sp is None else [sp]
    if sp is not None:
        _register_custom_op()
    return dit


_ACTIVE: list[SequenceParallel] = []  # the installed SequenceParallel that the custom op dispatches to


def _register_custom_op() -> None:
    """``torch.ops.scail.ulysses_attention(q, k, v, valid_len)`` for compiled blocks (once per process)."""
    try:
        torch.ops.scail.ulysses_attention  # noqa: B018
        return
    except (AttributeError, RuntimeError):
        pass

    @torch.library.custom_op(
        "scail::ulysses_attention", mutates_args=(), schema="(Tensor q, Tensor k, Tensor v, int valid_len) -> Tensor"
    )
    def _op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid_len: int) -> torch.Tensor:
        return _ACTIVE[-1]._attention_eager(q, k, v, valid_len).contiguous()

    @_op.register_fake
    def _fake(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid_len: int) -> torch.Tensor:
        return q.new_empty(q.shape)

"""Resume a long animation mid-clip: the sampler's state, checkpointed to the example's .scail/.

A 14B sample of a long video takes hours; a Ctrl-C, a `kill -9` or a lost machine should cost
minutes, not the whole run. While sampling, `Checkpointer` writes the state every `every_s` seconds
of work (and on Ctrl-C): the sampler state between steps (`sampler.SamplerState`: the latent, the
step index and the solver's history) and, within a step, the windows already blended
(`windows.Partial`). The samplers draw no random numbers after the initial noise, so that is all
there is: a rerun continues from the checkpoint and gives, bit for bit on the CPU, the video of an
uninterrupted run (the same arithmetic in the same order on the same tensors).

The file is safetensors (tensors plus string metadata, no pickle), written to a temp name, fsynced
and renamed over the previous one, so a kill while writing leaves the last good checkpoint. It is
keyed by the animate stage's fingerprint (settings, prompt and input file hashes): a checkpoint
from other settings or inputs is discarded, never used. It is deleted once the sample is written.

Fast mode's caches (the step cache's residuals, the reused guidance) are not saved: a resumed fast
run restarts them cold (its first step computes everything), which is valid but not bit-exact; fast
mode is not bit-exact to the official model anyway.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from scail.animate.sampler import SamplerState
from scail.animate.windows import Partial
from scail.atomic import atomic_path

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "animate-resume.safetensors"
"""In the example's .scail/ folder."""
FORMAT = "1"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the sampler state and, when it stopped within a step, that step's windows."""

    state: SamplerState
    partial: Partial | None


def save_checkpoint(path: Path, key: str, state: SamplerState, partial: Partial | None) -> None:
    """Write the state atomically (temp file, fsync, rename). `partial` is kept only if it belongs
    to `state`'s step."""
    from safetensors.torch import save_file

    tensors = {"x": state.x}
    for i, h in enumerate(state.history):
        tensors[f"history.{i}"] = h
    if state.last_x is not None:
        tensors["last_x"] = state.last_x
    meta = {"format": FORMAT, "key": key, "step": str(state.step), "history": str(len(state.history))}
    if partial is not None and partial.step == state.step and partial.done > 0:
        tensors["partial.acc"] = partial.acc
        if partial.prev_x0 is not None:
            tensors["partial.prev_x0"] = partial.prev_x0
        meta["partial_done"] = str(partial.done)
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_checkpoint(path: Path, key: str, shape: tuple[int, ...], device: torch.device | str) -> Checkpoint | None:
    """The checkpoint at `path` if it was written for `key` and a latent of `shape`, else None.

    A checkpoint of other settings, or an unreadable one, is deleted (logged), never used.
    """
    if not path.is_file():
        return None
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        _discard(path, f"unreadable ({exc})")
        return None
    if meta.get("format") != FORMAT or meta.get("key") != key:
        _discard(path, "written for other settings or inputs")
        return None
    if tuple(tensors["x"].shape) != tuple(shape):
        _discard(path, f"latent {tuple(tensors['x'].shape)} instead of {tuple(shape)}")
        return None
    history = tuple(tensors[f"history.{i}"] for i in range(int(meta["history"])))
    state = SamplerState(int(meta["step"]), tensors["x"], history, tensors.get("last_x"))
    partial = None
    if "partial_done" in meta:
        partial = Partial(state.step, int(meta["partial_done"]), tensors["partial.acc"], tensors.get("partial.prev_x0"))
    log.info("%s: resuming at step %d%s", path, state.step,
             f", window {partial.done}" if partial is not None else "")
    return Checkpoint(state, partial)


def _discard(path: Path, why: str) -> None:
    log.info("%s: discarding the sampling checkpoint: %s", path, why)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class Checkpointer:
    """Saves the sampling state to `path` every `every_s` seconds of work, and on demand.

    Give `on_step` to the sampler (it tracks the state between steps) and call `tick()` after each
    unit of work (a window); `partial()` returns the current step's windows done. `every_s` 0
    saves after every unit (tests); None never saves on time (only `save()`).
    """

    def __init__(
        self,
        path: Path,
        key: str,
        every_s: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path, self.key, self.every_s, self.clock = path, key, every_s, clock
        self.state: SamplerState | None = None
        self.partial: Callable[[], Partial | None] = lambda: None
        self.saves = 0
        self._last = clock()

    def load(self, shape: tuple[int, ...], device: torch.device | str) -> Checkpoint | None:
        return load_checkpoint(self.path, self.key, shape, device)

    def on_step(self, state: SamplerState) -> None:
        self.state = state

    def tick(self) -> None:
        """After a unit of work: save when `every_s` seconds have passed since the last save."""
        if self.every_s is not None and self.clock() - self._last >= self.every_s:
            self.save()

    def save(self) -> None:
        """Write the current state now (no-op before the sampler started)."""
        if self.state is None:
            return
        save_checkpoint(self.path, self.key, self.state, self.partial())
        self.saves += 1
        self._last = self.clock()

    def discard(self) -> None:
        """Delete the checkpoint (the sample is written)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

"""The typed contract between the stage engine and the three stages.

A stage is a small object built from its config block. The engine (scail/engine.py) asks it which
files it reads and writes, fingerprints those, and calls `run` only when the stage is stale. A
stage object lives for a whole batch, so it can keep heavy models loaded between examples (load
once, stream examples); `close()` frees them.

Stages never print: they report through `ctx.progress(...)` and the `ctx.log` logger, and write
every output through `ctx.atomic_output(path)` so a killed run never leaves a file that looks done.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from scail.atomic import atomic_path
from scail.errors import Interrupted
from scail.example import Example

ProgressFn = Callable[[int, "int | None"], None]
"""on_progress(done, total): the callback that model-level code (renderer, sampler) accepts."""

PhaseFn = Callable[[str], None]
"""on_phase(label): model-level code names an uncounted phase ("loading weights", "VAE encode")."""

PHASE = "phase"
"""The unit of a `ProgressEvent` that names a phase without a count (`StageContext.phase`)."""


@dataclass
class ProgressEvent:
    """One progress report of one stage on one example (what progress bars and --json consume)."""

    example: str
    stage: str
    done: int
    total: int | None
    unit: str = "frames"
    desc: str = ""


@dataclass
class StageContext:
    """What a running stage may use: progress, logging, cancellation, atomic writes, manifest notes."""

    example: Example
    stage: str
    on_event: Callable[[ProgressEvent], None] = lambda e: None
    cancel: threading.Event = field(default_factory=threading.Event)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("scail.stage"))
    notes: dict[str, Any] = field(default_factory=dict)
    """Extra facts for the manifest (backend chosen, seed, resolved sizes, ...)."""
    fingerprint: str = ""
    """The engine's fingerprint of this run: it names `KeepsEveryOutput` outputs and keys state a rerun may resume from."""

    def progress(self, done: int, total: int | None, unit: str = "frames", desc: str = "") -> None:
        """Report progress; raises `Interrupted` if the run was cancelled (Ctrl-C)."""
        self.check_cancelled()
        self.on_event(ProgressEvent(self.example.name, self.stage, done, total, unit, desc))

    def phase(self, label: str) -> None:
        """Name what the stage does now when there is nothing to count ("loading weights", "VAE
        decode"): every phase that may take more than a second gets one, so the display never
        sits on a silent bar. Raises `Interrupted` if the run was cancelled."""
        self.progress(0, None, PHASE, label)

    def progress_fn(self, unit: str = "frames", desc: str = "") -> ProgressFn:
        """An `on_progress(done, total)` callback for model-level code."""
        return lambda done, total: self.progress(done, total, unit, desc)

    def check_cancelled(self) -> None:
        if self.cancel.is_set():
            raise Interrupted(f"{self.example.root}: {self.stage} interrupted")

    def note(self, **facts: Any) -> None:
        """Record JSON-serialisable facts in this stage's manifest."""
        self.notes.update(facts)

    @contextlib.contextmanager
    def atomic_output(self, path: Path) -> Iterator[Path]:
        """Yield a temp path beside `path`; rename it into place only if the block succeeds.

        The temp name (scail/atomic.py) keeps the suffix (`.rendered.tmp-<tag>.mp4`) so writers that
        pick a format from the extension still work.
        """
        with atomic_path(path) as tmp:
            yield tmp
            if not tmp.exists():
                raise RuntimeError(f"stage {self.stage} did not write {tmp}")


class Stage(Protocol):
    """One pipeline stage. Implementations: PoseStage, RenderStage, AnimateStage."""

    name: ClassVar[str]
    """"pose", "render" or "animate"."""
    version: ClassVar[str]
    """Bump when the stage's outputs change for the same inputs and params (invalidates caches)."""

    def params(self) -> BaseModel:
        """The resolved parameters that enter the fingerprint (and the manifest)."""
        ...

    def inputs(self, example: Example) -> list[Path]:
        """Files whose content hashes enter the fingerprint (inputs and upstream outputs).

        Raises `InputError` when a required input is missing.
        """
        ...

    def outputs(self, example: Example) -> list[Path]:
        """Files this stage writes for this example (all must exist after `run`)."""
        ...

    def run(self, example: Example, ctx: StageContext) -> None:
        """Produce `outputs(example)` via `ctx.atomic_output`; raise `ScailError` on expected failures."""
        ...

    def close(self) -> None:
        """Free heavy resources (models, worker processes) at the end of a batch."""
        ...


@runtime_checkable
class KeepsEveryOutput(Protocol):
    """A stage whose outputs are named by the fingerprint that made them (animate's samples).

    Runs with other settings add files instead of replacing the last one, so no result is lost;
    the engine asks `outputs_for` instead of `outputs`, never treats such files as user-provided,
    and after each run (or fresh skip) points the stable names that `pointers` gives
    (`<name>_latest.mp4`) at them.
    """

    def outputs_for(self, example: Example, fingerprint: str) -> list[Path]:
        """The files a run with this fingerprint writes."""
        ...

    def pointers(self, example: Example, outputs: list[Path]) -> list[tuple[Path, Path]]:
        """(stable name, the output it stands for) pairs; the engine writes them (scail/outputs.py)."""
        ...


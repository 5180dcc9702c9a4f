"""The processes of one sequence-parallel group, started by scail itself (`animate.parallel.gpus`).

    rank 0 (this process: the CLI, the batch, the animate stage)      ranks 1..N-1 (spawned here)
      reads inputs, runs VAE / umT5 / CLIP once                         load the DiT only
      broadcast SampleJob (SCAIL-2: SegmentJob) ─────────────────────►   receive the job
      denoise (the DiT on its slice of the tokens)   ◄── collectives ──►   denoise (the same loop)
      after each (window) step: progress, Ctrl-C ── continue/stop ───►   follow
      VAE decode, writes the video and the manifest                     wait for the next job

Every rank runs the same sampling loop (`pipeline.run_sampling`: sampler, CFG, fast mode's step
cache; SCAIL-2: `pipeline2.run_segment` once per segment, rank 0 encoding each segment's inputs and
anchor) on the same broadcast inputs, so the DiT's collectives pair up; only rank 0 reads or writes
files and reports progress. Host decisions that could differ between ranks are taken by rank 0 and
broadcast (`SequenceParallel.agree`). NCCL on CUDA devices (rank r on cuda:<first + r>), gloo on
the CPU. A worker is killed with its parent (Linux parent-death signal), and a rank that stops
answering fails the others after `animate.parallel.timeout_s`.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import logging
import multiprocessing as mp
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from scail.animate.parallel import SequenceParallel, check_split, install, make_groups
from scail.errors import ScailError

if TYPE_CHECKING:
    from scail.animate.dit import DiT
    from scail.animate.pipeline import SampleJob
    from scail.animate.pipeline2 import SegmentJob
    from scail.config import AnimateConfig

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, "int | None"], None]


class _Abandoned(Exception):
    """Rank 0 stopped the sample (Ctrl-C, a failed progress report): the workers drop it too."""


@dataclass(frozen=True)
class GroupSpec:
    """What every rank needs to join the group (plain, picklable data)."""

    animate: dict[str, Any]  # the AnimateConfig as JSON data
    world: int
    cfg: int  # 1, or 2 for CFG parallel
    address: str  # tcp://127.0.0.1:PORT of rank 0's rendezvous
    backend: str  # "nccl" or "gloo"
    device: str  # rank 0's device: "cpu" or "cuda:<i>"
    timeout_s: float
    cpu_threads: int  # a CPU rank's torch threads: rank 0's thread count shared between the ranks

    def device_of(self, rank: int) -> torch.device:
        base = torch.device(self.device)
        if base.type != "cuda":
            return base
        return torch.device("cuda", (base.index or 0) + rank)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def check_devices(gpus: int, device: torch.device) -> None:
    """One-line error when `gpus` ranks do not fit the visible CUDA devices."""
    if device.type != "cuda":
        return
    first = device.index or 0
    count = torch.cuda.device_count()
    if first + gpus > count:
        raise ScailError(
            f"animate.parallel.gpus={gpus} from {device}: only {count} CUDA device(s) visible; "
            f"use --gpus {max(1, count - first)} or fewer (or CUDA_VISIBLE_DEVICES)"
        )


class ParallelGroup:
    """Rank 0's handle on a started group: broadcast jobs, follow steps, stop the workers.

    Args:
        config: the animate config (the workers build their DiT from it).
        dit: rank 0's DiT; `SequenceParallel` is installed on it here.
        device: rank 0's device.

    `close()` stops the workers and leaves `torch.distributed`; this process can then start
    another group.
    """

    def __init__(self, config: AnimateConfig, dit: DiT, device: torch.device) -> None:
        par = config.parallel
        cfg = 2 if par.cfg else 1
        try:
            check_split(dit.config.num_heads, par.gpus, par.cfg)
        except ValueError as exc:
            raise ScailError(str(exc)) from None
        check_devices(par.gpus, device)
        if dist.is_initialized():
            raise ScailError("sequence parallel: this process already belongs to a torch.distributed group; "
                             "run one parallel animate config per process")
        self.spec = GroupSpec(
            animate=config.model_dump(mode="json"), world=par.gpus, cfg=cfg,
            address=f"tcp://127.0.0.1:{_free_port()}", backend=backend_for(device), device=str(device),
            timeout_s=par.timeout_s, cpu_threads=max(1, torch.get_num_threads() // par.gpus),
        )
        self.dit = dit
        ctx = mp.get_context("spawn")
        self.workers = [ctx.Process(target=_worker_main, args=(rank, self.spec), daemon=True,
                                    name=f"scail-sp-rank{rank}") for rank in range(1, par.gpus)]
        for w in self.workers:
            w.start()
        try:
            self.sp = _join(0, self.spec)
        except Exception:
            self._kill()
            raise
        install(dit, self.sp)
        log.info("sequence parallel: %d ranks (%d x %d sequence-parallel, %s) on %s",
                 par.gpus, cfg, par.gpus // cfg, self.spec.backend, device)

    @property
    def world(self) -> int:
        return self.spec.world

    def start(self, job: SampleJob | SegmentJob) -> None:
        """Send the next sample's (or SCAIL-2 segment's) inputs to every worker (they start its sampling loop)."""
        dead = [f"rank {i + 1} (exit code {w.exitcode})" for i, w in enumerate(self.workers) if not w.is_alive()]
        if dead:
            raise ScailError(f"sequence parallel: {', '.join(dead)} exited; rerun to start the group again")
        self._send(("sample", job.to("cpu")))

    def progress_fn(self, user: ProgressFn | None) -> ProgressFn:
        """Rank 0's on_progress: calls `user`, then tells the workers to go on or to drop the sample
        (when `user` raised, e.g. Ctrl-C), so every rank leaves the loop at the same step."""

        def report(done: int, total: int | None) -> None:
            error: BaseException | None = None
            try:
                if user is not None:
                    user(done, total)
            except BaseException as exc:  # Interrupted, KeyboardInterrupt: the workers must hear it
                error = exc
            self._send(("stop" if error is not None else "go", None))
            if error is not None:
                raise error

        return report

    def close(self) -> None:
        """Stop the workers and leave the group (idempotent)."""
        if not self.workers and not dist.is_initialized():
            return
        with contextlib.suppress(Exception):
            if all(w.is_alive() for w in self.workers):
                self._send(("quit", None))
        for w in self.workers:
            w.join(timeout=30)
        self._kill()
        install(self.dit, None)
        with contextlib.suppress(Exception):
            dist.destroy_process_group()

    def _kill(self) -> None:
        for w in self.workers:
            if w.is_alive():
                w.kill()
                w.join(timeout=10)
        self.workers = []

    def _send(self, message: tuple[str, Any]) -> None:
        try:
            dist.broadcast_object_list([message], src=0)
        except Exception as exc:
            raise ScailError(f"sequence parallel: a rank stopped answering ({type(exc).__name__}); "
                             "see its error above") from exc


def _join(rank: int, spec: GroupSpec) -> SequenceParallel:
    """Join the process group as `rank` and create the sequence- and CFG-parallel groups."""
    device = spec.device_of(rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        spec.backend, init_method=spec.address, rank=rank, world_size=spec.world,
        timeout=datetime.timedelta(seconds=spec.timeout_s),
        device_id=device if device.type == "cuda" else None,
    )
    return make_groups(spec.world, spec.cfg, rank)


def _receive() -> tuple[str, Any]:
    box: list[Any] = [None]
    dist.broadcast_object_list(box, src=0)
    kind, payload = box[0]
    return str(kind), payload


def _follow(done: int, total: int | None) -> None:
    """A worker's on_progress: rank 0 says whether the sample goes on."""
    kind, _ = _receive()
    if kind != "go":
        raise _Abandoned


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (a worker never outlives scail)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _worker_main(rank: int, spec: GroupSpec) -> None:
    """Entry point of ranks 1..N-1: load the DiT, then run every broadcast sample until told to quit."""
    _die_with_parent()
    # Ctrl-C in the terminal reaches every process of the group: rank 0 handles it and tells the others
    # to drop the sample at the step's end (`progress_fn`); a worker killed mid-collective would fail it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format=f"rank {rank}: %(levelname)s %(message)s")
    from scail.animate.build import build_dit_models
    from scail.animate.pipeline import run_sampling
    from scail.animate.pipeline2 import SegmentJob, run_segment
    from scail.config import AnimateConfig

    device = spec.device_of(rank)
    if device.type == "cpu":  # share rank 0's threads (OMP_NUM_THREADS, torch.set_num_threads) between the ranks
        torch.set_num_threads(spec.cpu_threads)
    sp = _join(rank, spec)
    config = AnimateConfig.model_validate(spec.animate)
    models = build_dit_models(config, device)
    install(models.dit, sp)
    try:
        while True:
            kind, job = _receive()
            if kind == "quit":
                break
            if kind != "sample":
                continue
            runner = run_segment if isinstance(job, SegmentJob) else run_sampling
            with contextlib.suppress(_Abandoned), torch.no_grad():
                runner(models, job.to(device), on_progress=_follow)
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    exit_rank()


def exit_rank() -> None:
    """End a rank that has finished and left its group, skipping interpreter finalization.

    During finalization gloo's threads can still free tensors that need the GIL and abort the process
    ("terminate called without an active exception", SIGABRT) after a run that went well.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

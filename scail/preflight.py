"""Checks that run before any example starts, so a global problem is one message, not N failures.

`check_batch(jobs)` raises one `ScailError` (the CLI prints it and exits 1) when the run cannot
work for any example:

- the device: `--device cuda` on a machine without CUDA (before this check it failed only after
  the pose stage had run, once per example);
- the weights: present and complete for the chosen model (a missing or truncated checkpoint was
  reported once per example: 25 times in a 25-example batch);
- the pose environment: already built, or buildable here (venv/ensurepip or uv, a writable cache);
- the pose model: MediaPipe's heavy landmark model installed, placed by hand or downloadable;
- the disk: enough free space for the outputs the run will write.

A check counts only for stages that will run for at least one example: a batch whose samples
are all fresh does not need the weights. Which stages will run is the engine's own answer
(`example_status`), computed only when a check fails, so a healthy batch pays nothing for it.

`example_problem(job, example)` is the per-example part (a prompt file that is not UTF-8): the
batch calls it before the example's first stage, so the example fails with one line naming the
file before pose runs, and the others go on.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scail.errors import CheckpointError, InputError, ScailError
from scail.example import Example, read_prompt_file

if TYPE_CHECKING:
    from scail.batch import ExampleJob
    from scail.config import PipelineConfig
    from scail.engine import Status
    from scail.gpu_speed import GpuInfo
    from scail.stage import Stage

log = logging.getLogger(__name__)

MiB = 1 << 20
OUTPUT_BYTES_PER_EXAMPLE = 64 * MiB
"""Room kept per example with work to do: two skeleton videos and a sample (typically 5-20 MiB)."""
POSE_ENV_BYTES = 2048 * MiB
"""Room to build the pose env (about 1.7 GB installed)."""

DiskFree = Callable[[Path], int]


@dataclass(frozen=True)
class Problem:
    """One global problem: the stage it blocks and the one-line message."""

    stage: str
    message: str


# ----------------------------------------------------------------------------------------------
# The checks
# ----------------------------------------------------------------------------------------------


def check_device(stage: str, device: str) -> str:
    """'' when `device` can be used here, else the reason (imports torch only for a non-CPU device)."""
    if device in ("cpu", "auto"):
        return ""
    from scail.device import resolve_device

    try:
        resolve_device(device, what=f"{stage}.device (--device)")
    except InputError as exc:
        return str(exc)
    return ""


def check_weights(config: PipelineConfig) -> str:
    """'' when the animate model's weight files are all there and not truncated, else the reason."""
    cfg = config.animate
    extra = [p for p in (cfg.dit_file, *(lora.path for lora in cfg.loras)) if p is not None]
    for path in extra:
        if not Path(path).is_file():
            return f"{path}: file not found (animate.dit_file / --lora); check the path"
        why = truncated(Path(path))
        if why:
            return f"{path}: {why}; copy or download it again"
    if cfg.model.startswith("tiny-random"):
        return ""
    from scail.animate.build import weights_dir
    from scail.animate.weights import download_command, resolve

    root = weights_dir(cfg)  # SCAIL-2: its own folder
    try:
        paths = resolve(root, need_dit=cfg.dit_file is None, model=cfg.model)
    except CheckpointError as exc:
        return str(exc)
    for path in ([paths.dit] if cfg.dit_file is None else []) + [paths.vae, paths.t5, paths.clip]:
        why = truncated(path)
        if why:
            return f"{path}: {why}; download it again (`{download_command(root, cfg.model)}`)"
    return ""


def truncated(path: Path) -> str:
    """Why a checkpoint file is incomplete ('' when it looks whole), reading only its ends.

    torch.save files are zip archives whose directory sits at the very end: a download cut short
    loses it. A safetensors file states its tensors' total length in its header.
    """
    import zipfile

    try:
        size = path.stat().st_size
        if size == 0:
            return "empty file"
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if head[:4] == b"PK\x03\x04":
        return "" if zipfile.is_zipfile(path) else "truncated (its zip directory is missing)"
    if path.suffix == ".safetensors":
        return _safetensors_truncated(path, size, head)
    return ""


def _safetensors_truncated(path: Path, size: int, head: bytes) -> str:
    import json

    n = int.from_bytes(head, "little") if len(head) == 8 else -1
    if n <= 0 or 8 + n > size:
        return "truncated (its header is cut)"
    with open(path, "rb") as fh:
        fh.seek(8)
        try:
            header = json.loads(fh.read(n))
        except ValueError:
            return "not a safetensors file (unreadable header)"
    end = max((int(v["data_offsets"][1]) for k, v in header.items()
               if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v), default=0)
    return "" if 8 + n + end <= size else f"truncated ({size} bytes, the header describes {8 + n + end})"


def check_pose_env(config: PipelineConfig, disk_free: DiskFree) -> str:
    """'' when the pose env is ready or can be built here, else the reason."""
    if config.pose.in_process:
        return ""
    from scail.config import Settings
    from scail.pose.venv import env_path, is_ready

    cache = Settings.from_env().cache_dir
    env = env_path(cache)
    if is_ready(env):
        return ""
    if shutil.which("uv") is None:
        import importlib.util

        missing = [m for m in ("venv", "ensurepip") if importlib.util.find_spec(m) is None]
        if missing:
            return (f"pose env {env}: cannot be created: this Python has no {' or '.join(missing)} module "
                    "(on Debian/Ubuntu: apt install python3-venv) and uv is not installed")
    folder = _existing_parent(env)
    if not os.access(folder, os.W_OK):
        return f"pose env {env}: {folder} is not writable; set $SCAIL_CACHE_DIR to a writable folder"
    free = disk_free(folder)
    if free < POSE_ENV_BYTES:
        return (f"pose env {env}: {_size(free)} free in {folder}, building it needs about {_size(POSE_ENV_BYTES)}; "
                "free some space or set $SCAIL_CACHE_DIR")
    return ""


def check_pose_model(config: PipelineConfig) -> str:
    """'' unless the mediapipe backend with its heavy model will run and that model is neither in the
    pose env, nor placed by hand, nor downloadable here (scail/pose/landmark_model.py)."""
    if config.pose.mediapipe_model != "heavy" or config.pose.backend == "nlf":
        return ""
    from scail.config import Settings
    from scail.pose import landmark_model
    from scail.pose.backends import resolve_backend
    from scail.pose.venv import env_path

    settings = Settings.from_env()
    if resolve_backend(config.pose.backend, settings.weights_dir)[0] != "mediapipe":
        return ""
    return landmark_model.problem(None if config.pose.in_process else env_path(settings.cache_dir),
                                  settings.weights_dir)


def check_disk(root: Path, examples_with_work: int, disk_free: DiskFree) -> str:
    """'' when the examples' folder has room for the outputs, else the reason."""
    if examples_with_work == 0:
        return ""
    need = examples_with_work * OUTPUT_BYTES_PER_EXAMPLE
    free = disk_free(_existing_parent(root))
    if free >= need:
        return ""
    return (f"{root}: {_size(free)} free, this run writes up to about {_size(need)} ({examples_with_work} "
            f"example(s) x {_size(OUTPUT_BYTES_PER_EXAMPLE)}); free some space or run fewer examples")


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _size(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / MiB:.0f} MiB"


def _disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


# ----------------------------------------------------------------------------------------------
# The batch
# ----------------------------------------------------------------------------------------------


def stages_to_run(job: ExampleJob, stages: Sequence[Stage]) -> tuple[list[tuple[Status, str]], set[str]]:
    """(each stage's status and reason, the names of the stages a run of `job` will execute).

    The engine's answer (`example_status`): stages above the last user-provided one are not run,
    forced ones are, and so is every stage that is not fresh. `scail plan` shows the same.
    """
    from scail.engine import Status, example_status

    both = example_status(stages, Example(job.root))
    statuses = [s for s, _ in both]
    first = max((i for i, s in enumerate(statuses) if s is Status.USER_PROVIDED), default=0)
    todo = {stage.name for stage, status in zip(stages[first:], statuses[first:], strict=True)
            if stage.name in job.force or status not in (Status.FRESH, Status.USER_PROVIDED)}
    return both, todo


def _stages_with_work(jobs: Sequence[ExampleJob], stages: Sequence[Stage]) -> tuple[set[str], int]:
    """(names of the stages that will run for some example, how many examples have work)."""
    busy: set[str] = set()
    examples = 0
    for job in jobs:
        todo = stages_to_run(job, stages)[1]
        busy |= todo
        examples += bool(todo)
    return busy, examples


def check_batch(jobs: Sequence[ExampleJob], root: Path, *, disk_free: DiskFree = _disk_free) -> None:
    """Raise one `ScailError` when a global problem would make the run fail for every example.

    `root`: the folder the run writes into (PATH of `scail run`). Jobs may carry different configs
    (an example's scail.yaml); each distinct one is checked once.
    """
    groups: dict[str, list[ExampleJob]] = {}
    for job in jobs:
        groups.setdefault(job.config.model_dump_json(), []).append(job)
    problems: list[tuple[Problem, list[ExampleJob]]] = []
    for group in groups.values():
        problems += [(p, group) for p in _config_problems(group[0].config, group[0].stages, disk_free)]
    short = check_disk(root, len(jobs), disk_free)
    if not problems and not short:
        return
    from scail.batch import build_stages

    with_work = 0
    for group in groups.values():
        job = group[0]
        busy, n = _stages_with_work(group, build_stages(job.config, job.stages, job.prompt))
        with_work += n
        for problem, owners in problems:
            if owners is group and problem.stage in busy:
                raise ScailError(problem.message)
    why = check_disk(root, with_work, disk_free)
    if why:
        raise ScailError(why)


def _config_problems(config: PipelineConfig, names: Sequence[str], disk_free: DiskFree) -> list[Problem]:
    problems: list[Problem] = []
    for name in ("render", "animate"):
        if name in names:
            why = check_device(name, getattr(config, name).device)
            if why:
                problems.append(Problem(name, why))
    if "animate" in names:
        why = check_weights(config)
        if why:
            problems.append(Problem("animate", why))
    if "pose" in names:
        why = check_pose_env(config, disk_free) or check_pose_model(config)
        if why:
            problems.append(Problem("pose", why))
    return problems


def example_problem(job: ExampleJob, example: Example) -> tuple[str, str] | None:
    """(stage, one-line reason) when this example cannot run at all, before any stage starts."""
    if job.problem:
        return job.stages[0], job.problem
    if "animate" in job.stages and job.prompt is None and example.prompt_file.is_file():
        try:
            read_prompt_file(example.prompt_file)
        except InputError as exc:
            return "animate", str(exc)
    return None



def check_memory(jobs: Sequence[ExampleJob], pipeline: str, gpu: GpuInfo | None = None) -> None:
    """Refuse the run (one `ScailError`, before any example starts) when an example whose animate
    stage will run cannot fit this machine's GPU (or `gpu`) with its settings; the message names the
    setting that would make it fit. The estimate is `scail plan`'s (scail/plan.py). Nothing is
    checked for CPU runs, so a CPU batch pays nothing for it."""
    devices = sorted({j.config.animate.device for j in jobs if "animate" in j.stages} - {"cpu"})
    if not devices:
        return
    from scail.gpu_speed import detect_gpu
    from scail.plan import check_fit, default_table, fits_any_example, plan_batch

    gpu = gpu or detect_gpu(devices[0])
    if gpu.memory_gib is None:
        return
    table = default_table(None)
    bounded: dict[str, bool] = {}  # per distinct config: does its largest window fit?
    doubtful = []
    for job in jobs:
        if "animate" not in job.stages or job.config.animate.device == "cpu":
            continue
        key = job.config.animate.model_dump_json()
        if key not in bounded:
            bounded[key] = fits_any_example(job.config.animate, table, gpu)
        if not bounded[key]:
            doubtful.append(job)
    if doubtful:  # the exact answer needs each example's frames and which stages will run
        check_fit(plan_batch(doubtful, table, gpu, pipeline))

"""Per-clip speed and memory of the animate stage, measured through the product itself.

Each mode resolves a preset exactly as `scail run --pipeline NAME --set ...` does (`config.load_pipeline`),
builds the `AnimateStage` `scail run` builds (its pipeline through `build.build_pipeline`), and runs a
batch of `--clips` synthetic examples (a random reference image, an 81-frame pose video, a prompt) with
the product's batch runner (`batch.run_batch`, the same engine, manifests and MP4 writer), so the
numbers are what a user gets: same dtypes, tiling, encoder placement, compile, LoRA merge, fast mode.

Weights: random networks at the released sizes with the real key names (`random_weights.RandomWeights`,
drawn on the GPU in seconds, through the loaders' own assign path), or with `--weights-dir DIR` the files
of a weights folder (`--write-weights DIR` writes random ones in the release layout, ~45 GB at 14B);
`--cold` drops the page cache first (root; else evicts the weight files) and then measures a fresh process,
so clip 1 loads from disk: launch (after the drop) -> finished MP4.
Distilled presets get a random rank-64 LoRA with the lightx2v key names (`lora.write_random_lora`).

Modes: exact (the default preset, bf16), fast (scail-preview-fast), offload (the default preset with
animate.offload=blocks), distill-6, distill-6-fast, distill-4, distill-4-fast. The 50-step presets run
`--steps` steps (default 3) so a clip takes a minute; the distilled ones run their recipe.

One JSON line per clip, then a Markdown row per clip:
* s/step: wall time between the ends of the 2nd and last steps / (steps - 1) (the first step compiles);
* peak GiB: torch.cuda.max_memory_allocated over the clip (encoders, sampling, decode, write; not the load);
* load, text encoder, CLIP, VAE encode, denoise, VAE decode, write: seconds (the stage's manifest timings,
  device-synchronised); clip s: the example's wall time; total s: load + clip for the clip that loaded;
  launch->mp4 s: from this process's start to the first clip's finished MP4.

    PYTHONPATH=. python benchmarks/bench_animate.py --modes exact:1,distill-6:2,distill-6-fast:2,distill-4-fast:2
    PYTHONPATH=. python benchmarks/bench_animate.py --modes fast,offload --steps 3
    PYTHONPATH=. python benchmarks/bench_animate.py --write-weights /root/w
    PYTHONPATH=. python benchmarks/bench_animate.py --cold --weights-dir /root/w --modes distill-6:2
    PYTHONPATH=. python benchmarks/bench_animate.py --write-weights /root/w8 --dit-format fp8_e4m3fn_scaled
    PYTHONPATH=. python benchmarks/bench_animate.py --size tiny --device cpu --shapes 64x128x9

Results and the commands that made them: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from scail.animate.random_weights import RandomWeights
    from scail.config import PipelineConfig
    from scail.stage import ProgressEvent, Stage

GIB = 2**30
LORA_NAME = "random-lightx2v-distill-r64.safetensors"
PROMPT = "a person dancing in a bright room, full body, smooth motion"


@dataclass(frozen=True)
class Mode:
    preset: str
    overrides: dict[str, object] = field(default_factory=dict)
    lora: bool = False
    """A step-distilled recipe: it needs a distill LoRA (random, rank 64, lightx2v names)."""
    full_steps: bool = False
    """Run the preset's own step count (distilled recipes), not --steps."""


MODES: dict[str, Mode] = {
    "exact": Mode("scail-preview-512p"),
    "fast": Mode("scail-preview-fast"),
    "offload": Mode("scail-preview-512p", {"animate.offload": "blocks"}),
    "distill-6": Mode("scail-distill-6", lora=True, full_steps=True),
    "distill-6-fast": Mode("scail-distill-6", {"animate.fast": True}, lora=True, full_steps=True),
    "distill-4": Mode("scail-distill-4", lora=True, full_steps=True),
    "distill-4-fast": Mode("scail-distill-4", {"animate.fast": True}, lora=True, full_steps=True),
}


@dataclass
class Row:
    """One clip of one mode."""

    mode: str
    clip: int
    steps: int
    s_per_step: float = float("nan")
    peak_gib: float = float("nan")
    load_s: float = float("nan")
    text_encoder_s: float = float("nan")
    clip_s: float = float("nan")
    vae_encode_s: float = float("nan")
    denoise_s: float = float("nan")
    vae_decode_s: float = float("nan")
    write_s: float = float("nan")
    clip_wall_s: float = float("nan")
    total_s: float = float("nan")
    launch_to_mp4_s: float = float("nan")
    preset: str = ""
    preset_steps: int = 0
    weights: str = "random"
    cold: bool = False
    status: str = ""
    error: str = ""
    size: str = ""
    card: str = ""
    commit: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


COLUMNS = (
    ("mode", "mode", "{}"), ("size", "shape", "{}"), ("clip", "clip", "{}"), ("steps", "steps", "{}"), ("s_per_step", "s/step", "{:.2f}"),
    ("peak_gib", "peak GiB", "{:.1f}"), ("load_s", "load s", "{:.1f}"), ("text_encoder_s", "T5 s", "{:.2f}"),
    ("clip_s", "CLIP s", "{:.2f}"), ("vae_encode_s", "VAE enc s", "{:.2f}"), ("denoise_s", "denoise s", "{:.1f}"),
    ("vae_decode_s", "VAE dec s", "{:.2f}"), ("write_s", "write s", "{:.2f}"), ("clip_wall_s", "clip s", "{:.1f}"),
    ("total_s", "total s", "{:.1f}"), ("launch_to_mp4_s", "launch->mp4 s", "{:.1f}"), ("card", "card", "{}"),
    ("commit", "commit", "{}"),
)  # fmt: skip


def _cell(value: object, fmt: str) -> str:
    if isinstance(value, float) and value != value:  # NaN: not measured
        return "-"
    return fmt.format(value)


def table_header() -> str:
    titles = [title for _, title, _ in COLUMNS]
    return "| " + " | ".join(titles) + " |\n|" + "---|" * len(titles)


def table_row(row: Row) -> str:
    return "| " + " | ".join(_cell(getattr(row, key), fmt) for key, _, fmt in COLUMNS) + " |"


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def process_start() -> float:
    """Epoch seconds at which this process started (Linux /proc), else now."""
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()


_DROPPED = "SCAIL_BENCH_PAGE_CACHE_DROPPED"
"""Set for the measured process of --cold: how its parent emptied the page cache."""


def drop_page_cache(weights_dir: Path) -> str:
    """Make the next reads of the weights come from disk; returns how.

    `sync; echo 3 > /proc/sys/vm/drop_caches` as root (the whole page cache: torch's own files too, a
    first launch after boot); where /proc/sys is read-only (a container), each weight file's pages
    are evicted with posix_fadvise(DONTNEED) instead (the weights only).
    """
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n", encoding="ascii")
        return "drop_caches"
    except OSError as exc:
        reason = exc.strerror
    files = [p for p in Path(weights_dir).rglob("*") if p.is_file()]
    try:
        for path in files:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    except (OSError, AttributeError) as exc:
        raise SystemExit(f"--cold: cannot drop the page cache ({reason}) nor evict {weights_dir}'s files ({exc}); "
                         "leave out --cold") from None
    return f"fadvise DONTNEED on {len(files)} weight files (drop_caches: {reason})"


def write_example(folder: Path, size_hw: tuple[int, int], frames: int, seed: int) -> Path:
    """An example folder the animate stage takes: ref.png, rendered.mp4 (the pose video) and prompt.txt."""
    import numpy as np
    from PIL import Image

    from scail.video import VideoWriter

    h, w = size_hw
    if (folder / "prompt.txt").is_file():  # written ahead of the measured process (--cold)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / "ref.png")
    x = np.arange(w)
    with VideoWriter(folder / "rendered.mp4", fps=16) as writer:
        for t in range(frames):  # a bar sweeping across a dark frame, as a rendered skeleton is sparse
            frame = np.zeros((h, w, 3), np.uint8)
            centre = (t * w // max(frames, 1)) % w
            frame[:, np.abs(x - centre) < max(w // 32, 2)] = (40, 200, 255)
            writer.write(frame)
    # a prompt of its own per clip: a warm clip then pays for umT5 as a batch of different prompts does
    # (the pipeline reuses the features of a prompt it has seen: the shared negative prompt)
    (folder / "prompt.txt").write_text(f"{PROMPT} Take {seed}.\n", encoding="utf-8")
    return folder


def tiny_architectures() -> Any:
    from scail.animate.clip import CLIPConfig
    from scail.animate.dit import DiTConfig
    from scail.animate.t5 import T5Config
    from scail.animate.vae import VAEConfig
    from scail.animate.weights import Architectures

    return Architectures(DiTConfig.tiny(), VAEConfig.tiny(), T5Config.tiny(), CLIPConfig.tiny())


# ----------------------------------------------------------------------------------------------
# Measuring one batch
# ----------------------------------------------------------------------------------------------


class Meter:
    """The batch observer: clip boundaries, step ends and peak memory, device-synchronised."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.started: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.steps: dict[str, list[float]] = {}
        self.peak_gib: dict[str, float] = {}

    def _sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def batch_started(self, total_examples: int) -> None: ...
    def stage_started(self, example: str, stage: str) -> None: ...
    def stage_finished(self, example: str, stage: str, status: str, duration_s: float) -> None: ...

    def log(self, msg: str) -> None:
        print(f"# {msg}", file=sys.stderr, flush=True)

    def example_started(self, name: str) -> None:
        import torch

        self._sync()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.steps[name] = []
        self.started[name] = time.time()

    def on_event(self, event: ProgressEvent) -> None:
        if event.unit in ("steps", "window steps"):
            self._sync()
            self.steps.setdefault(event.example, []).append(time.time())

    def example_finished(self, name: str, ok: bool) -> None:
        import torch

        self._sync()
        self.finished[name] = time.time()
        if self.device.type == "cuda":
            self.peak_gib[name] = torch.cuda.max_memory_allocated(self.device) / GIB


@dataclass
class Run:
    """What one invocation measures with (shared by its modes)."""

    workdir: Path
    device: str
    size: str
    shapes: list[tuple[int, int, int]]
    """(H, W, frames) of the examples; one batch (one load) per H x W."""
    steps: int
    weights_dir: Path | None
    cold: bool
    seed: int
    t_launch: float
    evicted: str = ""
    """How --cold emptied the page cache (`drop_page_cache`)."""
    card: str = ""
    commit: str = ""
    first_mp4: list[float] = field(default_factory=list)
    batches: int = 0
    """Batches run so far (each loads the models once)."""


def mode_config(run: Run, name: str, size_hw: tuple[int, int], lora: Path | None) -> PipelineConfig:
    """The preset with the mode's overrides, resolved as `scail run --pipeline ... --set ...` resolves it."""
    from scail.config import load_pipeline

    mode = MODES[name]
    frames = max(t for h, w, t in run.shapes if (h, w) == size_hw)
    overrides: dict[str, object] = {"animate.device": run.device, "animate.size_hw": list(size_hw),
                                    "animate.max_frames": frames, **mode.overrides}
    if not mode.full_steps:
        overrides["animate.steps"] = run.steps
    if mode.lora:
        assert lora is not None
        overrides["animate.loras"] = [{"path": str(lora), "strength": 1.0}]
    if run.weights_dir is not None:
        overrides["animate.weights_dir"] = str(run.weights_dir)
    return load_pipeline(mode.preset, overrides)


def preset_steps(name: str, config: PipelineConfig) -> int:
    """The step count of the mode's preset as a user runs it (`config`: the mode's resolved config)."""
    from scail.config import load_pipeline

    if MODES[name].full_steps:
        return config.animate.steps
    return load_pipeline(MODES[name].preset).animate.steps


def run_mode(run: Run, name: str, clips: int, lora: Path | None, weights: RandomWeights | None) -> list[Row]:
    """Per output size, a batch of `clips` examples of each frame count through the product's batch
    runner with one loaded pipeline."""
    rows: list[Row] = []
    for size_hw in dict.fromkeys((h, w) for h, w, _ in run.shapes):
        frames = [t for h, w, t in run.shapes if (h, w) == size_hw]
        try:
            rows += run_batch_of(run, name, size_hw, frames, clips, lora, weights)
        except Exception as exc:  # a mode that cannot even load (out of memory, ...) must not cost the others
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            rows.append(Row(mode=name, clip=0, steps=0, status="failed", error=f"{type(exc).__name__}: {first}",
                            size="x".join(map(str, size_hw)), card=run.card, commit=run.commit))
            _release()
    return rows


def _release() -> None:
    """Free what a finished (or failed) mode held, as the end of a process would."""
    import gc

    import torch

    from scail.animate import attention

    attention.set_fp8(False)  # fast mode's process-wide switch: the next mode (or caller) starts plain
    gc.collect()
    torch._dynamo.reset()  # the next mode builds another DiT: no compiled code keeps this one alive
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def batch_examples(workdir: Path, name: str, size_hw: tuple[int, int], frames: list[int], clips: int,
                   seed: int) -> list[tuple[Path, tuple[int, int, int], int]]:
    """(folder, shape, seed) of each example of one batch (`run_batch_of`)."""
    shapes = [(size_hw[0], size_hw[1], t) for t in frames for _ in range(clips)]
    return [(workdir / name / f"{h}x{w}x{t}-clip{i + 1:02d}", (h, w, t), seed + i) for i, (h, w, t) in enumerate(shapes)]


def write_all_examples(workdir: Path, modes: list[tuple[str, int]], shapes: list[tuple[int, int, int]],
                       seed: int) -> None:
    """Every example folder the modes will run, written ahead (--cold: a user's inputs exist before launch)."""
    for name, clips in modes:
        for size_hw in dict.fromkeys((h, w) for h, w, _ in shapes):
            frames = [t for h, w, t in shapes if (h, w) == size_hw]
            for folder, (h, w, t), s in batch_examples(workdir, name, size_hw, frames, clips, seed):
                write_example(folder, (h, w), t, s)


def run_batch_of(run: Run, name: str, size_hw: tuple[int, int], frames: list[int], clips: int, lora: Path | None,
                 weights: RandomWeights | None) -> list[Row]:
    """One batch: `clips` examples of each frame count at `size_hw`, one loaded pipeline."""
    import torch

    from scail.animate import attention
    from scail.animate.stage import AnimateStage
    from scail.batch import SerialExecutor, make_jobs, run_batch
    from scail.cache import read_manifest
    from scail.example import Example

    config = mode_config(run, name, size_hw, lora)
    device = torch.device("cuda" if run.device.startswith("cuda") else run.device)
    attention.set_fp8(False)  # as in a fresh process: an earlier fast mode switched FP8 attention on
    shapes = [(size_hw[0], size_hw[1], t) for t in frames for _ in range(clips)]
    examples = [Example(write_example(folder, (h, w), t, seed)) for folder, (h, w, t), seed
                in batch_examples(run.workdir, name, size_hw, frames, clips, run.seed)]
    load: dict[str, float] = {}

    def factory(cfg: PipelineConfig, names: Sequence[str], prompt: str | None) -> list[Stage]:
        stage = AnimateStage(cfg.animate, prompt_override=prompt, preset=cfg.name, weights=weights)
        t0 = time.time()
        stage.pipeline()  # the load `scail run` does on its first example, timed on its own
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        load["s"] = time.time() - t0
        return [stage]

    meter = Meter(device)
    jobs = make_jobs(examples, config, ["animate"])
    run_batch(jobs, executor=SerialExecutor(factory=factory), observer=meter)
    rows = []
    for i, example in enumerate(examples):
        row = _row(run, name, config, i, example, meter, read_manifest(example, "animate"))
        row.size = "x".join(map(str, shapes[i]))
        if i == 0:
            row.load_s = load.get("s", float("nan"))
            row.total_s = row.load_s + row.clip_wall_s
            row.cold = run.cold and run.batches == 0  # later batches read the files from a warm page cache
            if row.cold:
                row.extra["page_cache"] = run.evicted
            if not run.first_mp4 and row.status == "done":
                run.first_mp4.append(meter.finished[example.name])
                row.launch_to_mp4_s = meter.finished[example.name] - run.t_launch
        else:
            row.total_s = row.clip_wall_s
        rows.append(row)
    run.batches += 1
    _release()
    return rows


def _row(run: Run, name: str, config: PipelineConfig, i: int, example: Any, meter: Meter, manifest: Any) -> Row:
    steps = meter.steps.get(example.name, [])
    started, finished = meter.started.get(example.name), meter.finished.get(example.name)
    row = Row(mode=name, clip=i + 1, steps=config.animate.steps, preset=config.name,
              preset_steps=preset_steps(name, config),
              weights="files" if run.weights_dir is not None else "random",
              card=run.card, commit=run.commit)
    if len(steps) >= 2:
        row.s_per_step = (steps[-1] - steps[0]) / (len(steps) - 1)
    row.peak_gib = meter.peak_gib.get(example.name, float("nan"))
    if started is not None and finished is not None:
        row.clip_wall_s = finished - started
    if manifest is None:
        row.status, row.error = "not run", "no manifest"
        return row
    row.status, row.error = manifest.status, manifest.error or ""
    t = manifest.notes.get("timings_s", {})
    for key, src in (("text_encoder_s", "text_encoder_s"), ("clip_s", "clip_s"), ("vae_encode_s", "vae_encode_s"),
                     ("denoise_s", "sampling_s"), ("vae_decode_s", "vae_decode_s"), ("write_s", "write_s")):
        if src in t:
            setattr(row, key, float(t[src]))
    row.extra = {k: v for k, v in t.items() if k not in ("text_encoder_s", "clip_s", "vae_encode_s", "sampling_s",
                                                         "vae_decode_s", "write_s", "encoders_s")}
    if "attention" in manifest.notes:
        row.extra["attention"] = manifest.notes["attention"]
    if row.steps != row.preset_steps and row.s_per_step == row.s_per_step:
        # the same clip at the preset's own step count, warm (the first step compiles: not counted)
        row.extra["est_clip_s_at_preset_steps"] = row.clip_wall_s + (row.preset_steps - row.steps) * row.s_per_step
    return row


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _card(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device)).removeprefix("NVIDIA ")
    return "cpu"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--modes", default="exact", help=f"comma-separated, each NAME or NAME:CLIPS: {', '.join(MODES)}")
    p.add_argument("--clips", type=int, default=1, help="examples per mode through one loaded pipeline (NAME:CLIPS wins)")
    p.add_argument("--steps", type=int, default=3, help="steps of the 50-step presets (distilled ones run theirs)")
    p.add_argument("--size", choices=("14b", "tiny"), default="14b", help="random networks' size (tiny: CPU test)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--shapes", default="512x896x81",
                   help="comma-separated HxWxT: output size (multiples of 32) and pose video frames; one load per HxW")
    p.add_argument("--weights-dir", type=Path, default=None, help="load this weights folder's files, not random ones")
    p.add_argument("--write-weights", type=Path, default=None,
                   help="write random weights (release layout) and the distill LoRA into this folder, then exit")
    p.add_argument("--dit-format", choices=("sat", "fp8_e4m3fn_scaled"), default="sat",
                   help="with --write-weights: the DiT as the release's SAT file or as ComfyUI's scaled fp8 file")
    p.add_argument("--cold", action="store_true", help="drop the page cache first (root; needs --weights-dir)")
    p.add_argument("--workdir", type=Path, default=None, help="where the examples go (default: a temp folder, removed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", type=Path, default=None, help="also write the JSON lines to this file")
    p.add_argument("--commit", default="", help="the commit to record (default: git rev-parse HEAD here)")
    args = p.parse_args(argv)
    modes: list[tuple[str, int]] = []
    for item in (m for m in args.modes.split(",") if m):
        name, _, count = item.partition(":")
        if name not in MODES:
            p.error(f"--modes: unknown {name}; choose from {', '.join(MODES)}")
        if count and not (count.isdigit() and int(count) >= 1):
            p.error(f"--modes {item}: CLIPS must be a whole number >= 1")
        modes.append((name, int(count) if count else args.clips))
    args.mode_list = modes
    args.shape_list = []
    for text in (t for t in args.shapes.split(",") if t):
        try:
            h, w, t = (int(v) for v in text.lower().split("x"))
        except ValueError:
            p.error(f"--shapes {text!r}: write it as HxWxT, e.g. 512x896x81")
        if h % 32 or w % 32 or t < 1 or (t - 1) % 4:
            p.error(f"--shapes {text!r}: H and W must be multiples of 32, T = 4k + 1 frames")
        args.shape_list.append((h, w, t))
    if args.cold and args.weights_dir is None:
        p.error("--cold loads files: give --weights-dir (write one with --write-weights DIR)")
    if args.clips < 1 or args.steps < 1 or not args.shape_list:
        p.error("--clips and --steps must be >= 1, --shapes not empty")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    evicted = os.environ.pop(_DROPPED, "")
    if args.cold and not evicted:
        # the inputs first (a user's exist before launch), then empty the page cache and measure a fresh
        # process: the clock starts after the sync and the drop, and that process reads python, torch,
        # the inputs and the weights from disk
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-animate-"))
        write_all_examples(workdir, args.mode_list, args.shape_list, args.seed)
        evicted = drop_page_cache(args.weights_dir)
        print(f"# --cold: {evicted}", flush=True)
        child = [sys.executable, sys.argv[0], *(argv if argv is not None else sys.argv[1:]), "--workdir", str(workdir)]
        try:
            return subprocess.run(child, env={**os.environ, _DROPPED: evicted}, check=False).returncode
        finally:
            if args.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)
    t_launch = process_start()

    from scail.animate.random_weights import RandomWeights

    random = RandomWeights(args.seed, tiny_architectures() if args.size == "tiny" else None)
    if args.write_weights is not None:
        from scail.animate.lora import write_random_lora
        from scail.animate.random_weights import write_weights_folder

        t0 = time.time()
        write_weights_folder(args.write_weights, random, dit_format=args.dit_format)
        write_random_lora(args.write_weights / LORA_NAME, random.arch("scail-preview-14b").dit, rank=64, seed=args.seed)
        print(f"# wrote random weights and {LORA_NAME} into {args.write_weights} in {time.time() - t0:.0f}s", flush=True)
        return 0

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-animate-"))
    workdir.mkdir(parents=True, exist_ok=True)
    run = Run(workdir=workdir, device=args.device, size=args.size, shapes=args.shape_list,
              steps=args.steps, weights_dir=args.weights_dir, cold=args.cold, evicted=evicted, seed=args.seed,
              t_launch=t_launch, card=_card(args.device), commit=args.commit or _commit())
    lora = None
    if any(MODES[m].lora for m, _ in args.mode_list):
        lora = args.weights_dir / LORA_NAME if args.weights_dir is not None else None
        if lora is None or not lora.is_file():
            from scail.animate.lora import write_random_lora

            lora = write_random_lora(workdir / LORA_NAME, random.arch("scail-preview-14b").dit, rank=64, seed=args.seed)
    out = args.json_out.open("w", encoding="utf-8") if args.json_out is not None else None
    rows: list[Row] = []
    try:
        for name, clips in args.mode_list:
            for row in run_mode(run, name, clips, lora, None if args.weights_dir is not None else random):
                line = json.dumps(asdict(row))
                print(line, flush=True)
                if out is not None:
                    out.write(line + "\n")
                    out.flush()
                rows.append(row)
    finally:
        if out is not None:
            out.close()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table_header())
    for row in rows:
        print(table_row(row))
    failed = [r for r in rows if r.status != "done"]
    for r in failed:
        print(f"# {r.mode} clip {r.clip}: {r.status}: {r.error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The `scail` command: one thin function per command, built on scail.batch / scail.engine.

Nothing heavy is imported at start-up (no torch, cv2, decord, av): `scail --help` stays instant.
Every expected failure is a `ScailError`, printed once as `error: <msg>` with an exit code
(0 ok, 1 error, 2 some examples failed, 130 Ctrl-C) by the one error boundary, `ScailGroup.invoke`,
for every command and sub-app; `--traceback` (anywhere on the line) shows the Python traceback.

How options reach the config
  The options that run/pose/render/animate/status share are the fields of `Options`, declared once;
  `@shared_options` gives each command those parameters and hands it one typed `Options` object.
  `CONFIG_FLAGS` maps the flags that set config fields; `resolve_config` applies them over the
  preset and `--set`, and an invalid value is reported as the user typed it (`--steps 0`).

Adding a flag
  - Shared by the five commands: one field on `Options` (an `Annotated[..., typer.Option(...)]`
    with its default). If it sets config fields, one entry in `CONFIG_FLAGS`:
        seed: Annotated[int | None, typer.Option("--seed", help="...")] = None
        CONFIG_FLAGS["seed"] = ("animate.seed",)
  - For one command only: a parameter of that command's function, as `until` is for `run`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import sys
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_type_hints

import typer
from typer.core import TyperGroup

from scail.errors import ExitCode, Interrupted, ScailError

if TYPE_CHECKING:
    from rich.console import Console

    from scail.batch import ExampleJob, Executor
    from scail.config import PipelineConfig
    from scail.progress import ProgressDisplay

# ----------------------------------------------------------------------------------------------
# The error boundary
# ----------------------------------------------------------------------------------------------

TRACEBACK_FLAG = "--traceback"
_TRACEBACK_KEY = "scail.traceback"


class ScailGroup(TyperGroup):
    """The root group: `--traceback` is accepted anywhere, and every command's errors end here."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        """Move `--traceback` (before any `--`) to the front, where the root callback reads it.

        So `scail weights download --traceback` works although the sub-app does not declare it.
        """
        end = args.index("--") if "--" in args else len(args)
        if TRACEBACK_FLAG in args[:end]:
            args = [TRACEBACK_FLAG, *(a for a in args[:end] if a != TRACEBACK_FLAG), *args[end:]]
        return super().parse_args(ctx, args)

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        """Run the command; a `ScailError` or Ctrl-C becomes one line on stderr and an exit code."""
        try:
            return super().invoke(ctx)
        except (ScailError, KeyboardInterrupt) as exc:
            if ctx.meta.get(_TRACEBACK_KEY):
                raise
            if isinstance(exc, ScailError) and not isinstance(exc, Interrupted):
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(int(ExitCode.ERROR)) from None
            typer.echo(f"interrupted: {exc}" if str(exc) else "interrupted", err=True)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None


app = typer.Typer(
    name="scail",
    cls=ScailGroup,
    help="Studio-grade character animation with SCAIL: driving video + reference image -> animation.\n\n"
    "An example folder holds driving.mp4, ref.jpg and optionally prompt.txt. Three cached stages run on it: "
    "pose (.scail/pose.npz) -> render (rendered.mp4) -> animate (samples/*.mp4). Fresh stages are skipped; "
    "a changed option reruns only the stages below it. PATH is one example folder or a folder of them.\n\n"
    "Start with: [bold]scail doctor[/], then [bold]scail demo[/] (offline, tiny random model) or "
    "[bold]scail run examples/[/].",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    ctx: typer.Context,
    traceback: Annotated[bool, typer.Option(
        TRACEBACK_FLAG, help="Show the Python traceback of an error (accepted anywhere on the command line).")] = False,
) -> None:
    ctx.meta[_TRACEBACK_KEY] = traceback


# ----------------------------------------------------------------------------------------------
# Option types
# ----------------------------------------------------------------------------------------------


class StageChoice(str, Enum):
    pose = "pose"
    render = "render"
    animate = "animate"


class ExecutorChoice(str, Enum):
    local = "local"
    ray = "ray"


class ForceChoice(str, Enum):
    all = "all"
    pose = "pose"
    render = "render"
    animate = "animate"


class PoseBackendChoice(str, Enum):
    """`--pose-backend`: the values of `PoseConfig.backend` (a test keeps the two equal)."""

    auto = "auto"
    mediapipe = "mediapipe"
    nlf = "nlf"


def _device_option(text: str) -> str:
    """`--device` is checked while the command line is parsed, before any work."""
    from scail.device import parse_device

    try:
        return parse_device(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


PathArg = Annotated[Path, typer.Argument(
    exists=True, file_okay=False, dir_okay=True, show_default=False,
    help="An example folder (driving.mp4 + ref.jpg) or a folder of example folders.")]
PipelineOpt = Annotated[str | None, typer.Option(
    "--pipeline", "-p", metavar="NAME|FILE",
    help="Preset name from pipelines/ (scail-preview-512p, scail-wan-unipc, scail-2, tiny-random, ...) or a YAML file. "
         "Default: scail-preview-512p.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars; errors only.")]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output (-v info, -vv debug).")]
ForceOpt = Annotated[list[ForceChoice] | None, typer.Option(
    "--force", metavar="[STAGE]",
    help="Redo STAGE even when fresh or user-provided; --force alone redoes every stage. Repeatable.")]


@dataclasses.dataclass(frozen=True)
class Options:
    """The options shared by run/pose/render/animate/status, as typed; one field is one flag.

    Built by `@shared_options` from the command line, or directly from Python:
    `resolve_config(Options(path, steps=4))` is what `scail run PATH --steps 4` runs with.
    """

    path: PathArg
    pipeline: PipelineOpt = None
    sets: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KEY=VALUE",
        help="Override any preset value, repeatable: --set animate.steps=4 --set render.overlay=false")] = None
    prompt: Annotated[str | None, typer.Option(
        "--prompt", show_default=False,
        help="Text prompt for every example (overrides prompt.txt; default: prompt.txt, else empty).")] = None
    seed: Annotated[int | None, typer.Option("--seed", help="Sampling seed (animate.seed).", show_default=False)] = None
    steps: Annotated[int | None, typer.Option(
        "--steps", help="Denoising steps (animate.steps).", show_default=False)] = None
    person: Annotated[int | None, typer.Option(
        "--person", min=0, show_default=False,
        help="Animate only this tracked person (render.person; ids and frame coverage are in the pose "
             "summary; raises pose.max_people to N+1). Default: everyone tracked.")] = None
    device: Annotated[str | None, typer.Option(
        "--device", parser=_device_option, metavar="auto|cpu|cuda|cuda:N", show_default=False,
        help="Torch device for render and animate: auto (cuda when available), cpu, cuda or cuda:N.")] = None
    weights_dir: Annotated[Path | None, typer.Option(
        "--weights-dir", file_okay=False, show_default=False,
        help="Folder of the SCAIL-Preview weights (animate.weights_dir; default $SCAIL_WEIGHTS_DIR).")] = None
    pose_backend: Annotated[PoseBackendChoice | None, typer.Option(
        "--pose-backend", help="Pose model (pose.backend).", show_default=False)] = None
    lora: Annotated[list[str] | None, typer.Option(
        "--lora", metavar="PATH[:STRENGTH]", show_default=False,
        help="LoRA for the DiT, repeatable (animate.loras, which it replaces); STRENGTH defaults to 1.0: "
             "--lora lightx2v_rank64.safetensors:0.8")] = None
    gpus: Annotated[int | None, typer.Option(
        "--gpus", metavar="N", show_default=False,
        help="GPUs that animate one sample together (sequence parallel; animate.parallel.gpus): "
             "2, 4, 5 or 8 for the 14B model. scail starts the processes.")] = None
    previews: Annotated[bool | None, typer.Option(
        "--previews/--no-previews", show_default=False,
        help="Write previews/ (contact sheet, skeleton overlay, 3D turntable, side-by-side) beside the "
             "outputs (previews.enabled; default on). Never part of a fingerprint.")] = None
    json_mode: Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary on stdout.")] = False
    quiet: QuietOpt = False
    verbose: VerboseOpt = 0


CONFIG_FLAGS: dict[str, tuple[str, ...]] = {
    # `Options` field -> the config fields its flag sets (over the preset and --set).
    "steps": ("animate.steps",),
    "seed": ("animate.seed",),
    "person": ("render.person",),
    "device": ("animate.device", "render.device"),
    "weights_dir": ("animate.weights_dir",),
    "pose_backend": ("pose.backend",),
    "lora": ("animate.loras",),
    "gpus": ("animate.parallel.gpus",),
    "previews": ("previews.enabled",),
}


def flag_name(field: str) -> str:
    """The flag a user types for an `Options` field (`weights_dir` -> `--weights-dir`)."""
    info = get_type_hints(Options, include_extras=True)[field].__metadata__[0]
    decls = [d for d in (info.default, *(info.param_decls or ())) if isinstance(d, str) and d.startswith("--")]
    return decls[0] if decls else "--" + field.replace("_", "-")


def config_overrides(opts: Options) -> tuple[dict[str, Any], dict[str, str]]:
    """The dotted overrides of `opts` (--set, then flags) and, per key, how the user typed it."""
    from scail.config import parse_override

    overrides: dict[str, Any] = {}
    typed: dict[str, str] = {}
    for text in opts.sets or []:
        key, value = parse_override(text)
        overrides[key], typed[key] = value, f"--set {key}={text.partition('=')[2]}"
    for field, keys in CONFIG_FLAGS.items():
        value = getattr(opts, field)
        if value is None:
            continue
        value = value.value if isinstance(value, Enum) else str(value) if isinstance(value, Path) else value
        shown = " ".join(f"{flag_name(field)} {v}" for v in value) if isinstance(value, list) else (
            f"{flag_name(field)} {value}")
        for key in keys:
            overrides[key], typed[key] = value, shown
    return overrides, typed


def resolve_config(opts: Options) -> PipelineConfig:
    """Preset < --set values < first-class flags, validated into a `PipelineConfig`.

    An invalid value is reported as the user typed it: `--steps 0: ...` or `--set animate.steps=0: ...`.
    """
    from scail.config import load_pipeline

    overrides, typed = config_overrides(opts)
    return load_pipeline(opts.pipeline, overrides, typed)


def shared_options(fn: Callable[..., None]) -> Callable[..., None]:
    """Give a command `fn(opts: Options, **own)` the CLI parameters of `Options` plus its own.

    Typer reads a command's parameters from its signature; this builds that signature from the
    fields of `Options` (first) and `fn`'s own parameters after `opts`, and calls `fn` with one
    `Options` object, so the shared options are declared only on `Options`.
    """
    hints = get_type_hints(Options, include_extras=True)
    fields = dataclasses.fields(Options)
    shared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name],
                                default=inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default)
              for f in fields]
    own_sig = inspect.signature(fn, eval_str=True)
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in list(own_sig.parameters.values())[1:]]
    names = {f.name for f in fields}

    @functools.wraps(fn)
    def command(**kwargs: Any) -> None:
        opts = Options(**{k: kwargs.pop(k) for k in names})
        fn(opts, **kwargs)

    del command.__wrapped__  # typer must read the signature below, not fn's
    command.__signature__ = inspect.Signature([*shared, *own])  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in (*shared, *own)}
    return command


# ----------------------------------------------------------------------------------------------
# What the commands share
# ----------------------------------------------------------------------------------------------


def _consoles() -> tuple[Console, Console]:
    """(stdout console for results, stderr console for bars and logs)."""
    from rich.console import Console

    return Console(), Console(stderr=True)


def _display(quiet: bool, json_mode: bool, err: Console) -> ProgressDisplay:
    """The Rich progress display (scail/progress.py): bars on a terminal, plain lines otherwise."""
    from scail.progress import ProgressDisplay

    return ProgressDisplay(console=err, quiet=quiet, json_mode=json_mode)


def _jobs(opts: Options, stages: Sequence[str], force: list[ForceChoice] | None,
          lock_wait_s: float = 0.0) -> tuple[PipelineConfig, list[ExampleJob]]:
    """The resolved config and one job per example of PATH (what `_run` and `_plan` both start from)."""
    from scail.batch import make_jobs
    from scail.example import discover

    config = resolve_config(opts)
    forced = {f.value for f in force or []}
    forced = set(stages) if "all" in forced else forced & set(stages)
    cli_keys = config_overrides(opts)[0].keys()  # the command line beats each example's scail.yaml
    return config, make_jobs(discover(opts.path), config, stages, forced, opts.prompt, lock_wait_s,
                             flag_keys=cli_keys)


def _run(opts: Options, stages: Sequence[str], *, force: list[ForceChoice] | None = None,
         json_out: Path | None = None, lock_wait_s: float = 0.0,
         make_executor: Callable[[PipelineConfig], Executor] | None = None, report: bool = False) -> None:
    """What `run`, `pose`, `render`, `animate` and `demo` share: resolve, run the batch, report, exit.

    With `report`, the HTML report (scail/report.py) is written to PATH; a failure to write it is a
    warning, never the run's failure.
    """
    from scail.batch import SUMMARY_NAME, run_batch
    from scail.logs import setup_logging
    from scail.preflight import check_batch, check_memory
    from scail.summary import batch_table, output_lines

    out, err = _consoles()
    setup_logging(opts.verbose, opts.quiet, console=err)
    config, jobs = _jobs(opts, stages, force, lock_wait_s)
    check_batch(jobs, opts.path)  # a global problem: one line and exit 1, before any example starts
    if make_executor is None:  # Ray workers' GPUs are not necessarily this machine's
        check_memory(jobs, config.name)  # an example that cannot fit the GPU: one line naming the fix
    executor = make_executor(config) if make_executor is not None else None
    with _display(opts.quiet, opts.json_mode, err) as display:
        summary = run_batch(jobs, executor=executor, observer=display, json_out=json_out or opts.path / SUMMARY_NAME)
    doc = summary.to_dict()
    report_path = _write_report(opts.path, doc) if report else None
    if opts.json_mode:
        typer.echo(json.dumps({**doc, "report": str(report_path) if report_path else None}, indent=2))
    elif not opts.quiet or summary.exit_code:
        out.print(batch_table(summary))
        if not opts.quiet:
            for line in output_lines(summary):
                typer.echo(line)
            if report_path is not None:
                typer.echo(f"report: {report_path}")
    if summary.exit_code:
        raise typer.Exit(int(summary.exit_code))


def _write_report(path: Path, summary: dict[str, Any]) -> Path | None:
    """The batch's HTML report, or None with a warning: a report never makes a run fail."""
    from scail.report import write_report

    try:
        return write_report(path, summary=summary)
    except Exception as exc:  # whatever breaks the page, the run's own result stands
        typer.echo(f"warning: could not write the report in {path}: {exc}", err=True)
        return None


GpuOpt = Annotated[str | None, typer.Option(
    "--gpu", metavar="NAME", show_default=False,
    help="Plan for this GPU model of the speed table (H200, H100, ...) instead of this machine's.")]
GpuTableOpt = Annotated[Path | None, typer.Option(
    "--gpu-table", metavar="FILE", dir_okay=False, show_default=False,
    help="A YAML file of measured GPU speeds added to scail/gpu_table.yaml (default: $SCAIL_GPU_TABLE).")]


def _plan(opts: Options, stages: Sequence[str], *, force: list[ForceChoice] | None = None,
          gpu: str | None = None, gpu_table: Path | None = None) -> None:
    """What `plan` and `run --dry-run` share: the batch plan, printed; exit 1 when an example cannot fit."""
    from scail.gpu_speed import detect_gpu, named_gpu
    from scail.plan import default_table, plan_batch
    from scail.plan_text import format_plan

    config, jobs = _jobs(opts, stages, force)
    table = default_table(gpu_table)
    info = named_gpu(gpu, table) if gpu is not None else detect_gpu(config.animate.device)
    plan = plan_batch(jobs, table, info, config.name)
    if opts.json_mode:
        typer.echo(json.dumps(plan.to_dict(), indent=2))
    else:
        typer.echo(format_plan(plan))
    if plan.unfit:
        from scail.plan import check_fit

        check_fit(plan)


# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------


@app.command()
@shared_options
def run(
    opts: Options,
    until: Annotated[StageChoice | None, typer.Option(help="Stop after this stage.", show_default=False)] = None,
    force: ForceOpt = None,
    json_out: Annotated[Path | None, typer.Option(
        "--json-out", help="Where to write the JSON summary (default: PATH/.scail-summary.json).",
        show_default=False)] = None,
    lock_wait: Annotated[float, typer.Option(
        "--lock-wait", metavar="SECONDS",
        help="How long to wait for an example another runner holds before reporting it as locked.")] = 0.0,
    executor: Annotated[ExecutorChoice, typer.Option(
        "--executor", help="local: this process, one example after the other; ray: Ray actors, one per GPU "
                           "(or per --gpus N group), models resident (pip install 'scail\\[ray]').")] = ExecutorChoice.local,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", metavar="ADDR", show_default=False,
        help="Ray cluster to use with --executor ray (auto, HOST:PORT, ray://HOST:10001); default: start a local Ray.")] = None,
    ray_workers: Annotated[int | None, typer.Option(
        "--ray-workers", metavar="N", min=1, show_default=False,
        help="Ray actors with --executor ray (default: one per GPU, or per --gpus N GPUs; 1 on the CPU).")] = None,
    no_report: Annotated[bool, typer.Option(
        "--no-report", help="Do not write PATH/scail-report.html (the batch's HTML page) at the end.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Run nothing: print the plan (what would run, frames, time, memory) as `scail plan` does.")] = False,
    gpu: GpuOpt = None,
    gpu_table: GpuTableOpt = None,
) -> None:
    """Run pose -> render -> animate on every example; fresh stages are skipped.

    A rerun resumes where the last run stopped. One failing example is recorded (with its reason in .scail/<stage>.json) and the batch goes on. Exit code: 0 all ok, 2 some failed, 130 Ctrl-C.

    Examples:
      scail run examples/ --pipeline tiny-random
      scail run examples/001 --prompt "a woman dancing" --steps 40 --seed 7
      scail run examples/ --until render          # pose and skeleton videos only
      scail run examples/ --force animate --set animate.guide_scale=5
      scail run examples/ --executor ray            # every GPU of this machine (or --ray-address ADDR)
      scail run examples/ --dry-run               # run nothing: the plan (time, memory), as `scail plan`

    At the end: where each example's result is, and PATH/scail-report.html (the batch's page; --no-report: none).
    """
    from scail.config import STAGES

    stages = STAGES[: STAGES.index(until.value) + 1] if until else STAGES
    if dry_run:
        _plan(opts, stages, force=force, gpu=gpu, gpu_table=gpu_table)
        return
    if gpu is not None or gpu_table is not None:
        raise ScailError("--gpu and --gpu-table are for `scail plan` and `scail run --dry-run`")
    make = None
    if executor is ExecutorChoice.ray:
        def make(config: PipelineConfig) -> Executor:
            from scail.ray_executor import RayExecutor, RayOptions

            device = config.animate.device
            return RayExecutor(RayOptions(
                address=ray_address, workers=ray_workers,
                gpus_per_worker=0 if device == "cpu" else config.animate.parallel.gpus,
                require_gpus=device.startswith("cuda")))
    elif ray_address is not None or ray_workers is not None:
        raise ScailError("--ray-address and --ray-workers need --executor ray")
    _run(opts, stages, force=force, json_out=json_out, lock_wait_s=lock_wait, make_executor=make,
         report=not no_report)


@app.command()
@shared_options
def plan(
    opts: Options,
    until: Annotated[StageChoice | None, typer.Option(help="Plan up to this stage.", show_default=False)] = None,
    force: ForceOpt = None,
    gpu: GpuOpt = None,
    gpu_table: GpuTableOpt = None,
) -> None:
    """Show what `scail run` would do, without running it: per example the stages that will run, the frames, windows, size, steps, and the estimated time and peak GPU memory.

    Estimates scale this GPU's measured speed (scail/gpu_table.yaml; --gpu-table FILE adds rows) by FLOPs. Takes the options of `scail run`. Exit 1 when an example cannot fit the GPU's memory, naming the setting that would make it fit.

    Examples:
      scail plan examples/
      scail plan examples/ --pipeline scail-preview-fast --json
      scail plan examples/ --gpu H100          # plan for another GPU model
    """
    from scail.config import STAGES

    stages = STAGES[: STAGES.index(until.value) + 1] if until else STAGES
    _plan(opts, stages, force=force, gpu=gpu, gpu_table=gpu_table)


@app.command()
@shared_options
def pose(opts: Options, force: ForceOpt = None) -> None:
    """Extract 3D + 2D pose from driving.mp4 and the reference image into .scail/pose.npz."""
    _run(opts, ("pose",), force=force)


@app.command()
@shared_options
def render(opts: Options, force: ForceOpt = None) -> None:
    """Draw the skeleton videos (rendered.mp4, rendered_aligned.mp4) from .scail/pose.npz."""
    _run(opts, ("render",), force=force)


@app.command()
@shared_options
def animate(opts: Options, force: ForceOpt = None) -> None:
    """Generate samples/*.mp4 from the skeleton video, the reference image and the prompt.

    Works on a hand-made rendered.mp4 too: drop it in the example folder and run only this command.
    """
    _run(opts, ("animate",), force=force)


@app.command()
@shared_options
def status(opts: Options) -> None:
    """Show each example's stages: fresh, stale, failed, missing, user-provided, interrupted, running.

    Nothing runs and nothing heavy loads. Pass the same options as the run (--pipeline, --set, --steps, ...), since stages are compared by fingerprint.
    """
    from scail.batch import build_stages
    from scail.config import STAGES
    from scail.engine import Status, example_status
    from scail.errors import InputError
    from scail.example import discover
    from scail.example_settings import config_for_example
    from scail.outputs import sample_info
    from scail.summary import status_json, status_table

    out, _ = _consoles()
    config = resolve_config(opts)
    cli_keys = frozenset(config_overrides(opts)[0])
    built: dict[str, Any] = {}  # stages per distinct config (an example's scail.yaml may change it)
    rows = []
    examples = discover(opts.path)
    for ex in examples:
        try:
            cfg = config_for_example(config, ex.root, cli_keys)
        except InputError as exc:  # a bad scail.yaml: that example's row says why, the others are shown
            rows.append((ex.name, [(Status.FAILED, str(exc))] * len(STAGES)))
            continue
        key = cfg.model_dump_json()
        if key not in built:
            built[key] = build_stages(cfg, STAGES, opts.prompt)
        rows.append((ex.name, example_status(built[key], ex)))
    samples = [sample_info(ex) for ex in examples]
    if opts.json_mode:
        typer.echo(json.dumps(status_json(STAGES, rows, samples), indent=2))
    else:
        out.print(status_table(STAGES, rows, samples))


@app.command()
def clean(
    path: PathArg,
    stage: Annotated[StageChoice | None, typer.Option(help="Only this stage (default: all).",
                                                      show_default=False)] = None,
) -> None:
    """Delete what scail wrote (recorded outputs, manifests, temp files); user-provided files stay."""
    from scail.config import STAGES
    from scail.engine import clean_example
    from scail.example import discover

    names = (stage.value,) if stage else STAGES
    removed = [p for ex in discover(path) for p in clean_example(ex, names)]
    typer.echo(f"removed {len(removed)} file(s)")


@app.command()
def report(
    path: PathArg,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", metavar="FILE", show_default=False,
        help="Where to write the page (default: PATH/scail-report.html); media paths are relative to it.")] = None,
) -> None:
    """Write one HTML page for a batch: each example's result, previews, videos, stage status and times, settings, and the reason of failures.

    The page works from disk (no network), sorts and filters by status, and links the videos by relative paths, so the folder can be moved with it. `scail run` writes it at the end (unless --no-report).
    """
    from scail.report import write_report

    typer.echo(str(write_report(path, out)))


@app.command()
def doctor() -> None:
    """Check python, torch, GPUs, the H.264 encoder, decord, the pose environment and the weights."""
    from scail.doctor import collect
    from scail.summary import doctor_table

    out, _ = _consoles()
    checks = collect()
    out.print(doctor_table(checks))
    if any(c.level == "fail" for c in checks):
        raise typer.Exit(int(ExitCode.ERROR))


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Argument(help="Where to write the demo example and its outputs.")] = Path(
        "scail-demo"),
    pipeline: PipelineOpt = "tiny-random",
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Write the bundled synthetic example to OUT_DIR and run the pipeline on it (offline).

    With the default tiny-random preset the video is noise: it proves the plumbing, not the model. The pose data comes from the generator's own 3D motion (user-provided), so no pose model is needed.
    """
    from scail.config import STAGES
    from scail.demo import write_demo_example

    example = write_demo_example(out_dir / "dance")
    typer.echo(f"wrote {example}", err=True)
    _run(Options(out_dir, pipeline=pipeline, quiet=quiet, verbose=verbose), STAGES, report=True)


# ----------------------------------------------------------------------------------------------
# Optional sub-apps and the entry point
# ----------------------------------------------------------------------------------------------


def _mount_optional_apps() -> None:
    """`scail weights` lives with its feature; a missing one is left out."""
    try:
        from scail.animate.weights_cli import weights_app
    except ImportError:
        pass
    else:
        app.add_typer(weights_app, name="weights")


_mount_optional_apps()

_STAGE_VALUES = {c.value for c in ForceChoice}


def normalize_argv(argv: list[str]) -> list[str]:
    """Let `--force` stand alone: `--force` not followed by a stage name means `--force all`."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg == "--force" and (i + 1 == len(argv) or argv[i + 1] not in _STAGE_VALUES):
            out.append("all")
    return out


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (`scail`)."""
    args = normalize_argv(list(sys.argv[1:] if argv is None else argv))
    app(args=args, prog_name="scail")

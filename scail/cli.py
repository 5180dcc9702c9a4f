"""The `scail` command: one thin function per command, built on scail.batch / scail.engine.

Nothing heavy is imported at start-up (no torch, cv2, decord, av): `scail --help` stays instant.
Every expected failure is a `ScailError`, printed once as `error: <msg>` with an exit code
(0 ok, 1 error, 2 some examples failed, 130 Ctrl-C); `--traceback` shows the Python traceback.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from scail.errors import ExitCode, ScailError

if TYPE_CHECKING:
    from rich.console import Console

    from scail.config import PipelineConfig
    from scail.progress import ProgressDisplay

app = typer.Typer(
    name="scail",
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


class StageChoice(str, Enum):
    pose = "pose"
    render = "render"
    animate = "animate"


class ForceChoice(str, Enum):
    all = "all"
    pose = "pose"
    render = "render"
    animate = "animate"


# ----------------------------------------------------------------------------------------------
# Shared options
# ----------------------------------------------------------------------------------------------

PathArg = Annotated[Path, typer.Argument(
    exists=True, file_okay=False, dir_okay=True, show_default=False,
    help="An example folder (driving.mp4 + ref.jpg) or a folder of example folders.")]
PipelineOpt = Annotated[str | None, typer.Option(
    "--pipeline", "-p", metavar="NAME|FILE",
    help="Preset name from pipelines/ (scail-preview-512p, scail-wan-unipc, tiny-random) or a YAML file. "
         "Default: scail-preview-512p.")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", metavar="KEY=VALUE",
    help="Override any preset value, repeatable: --set animate.steps=4 --set render.overlay=false")]
StepsOpt = Annotated[int | None, typer.Option(help="Denoising steps (animate.steps).", show_default=False)]
SeedOpt = Annotated[int | None, typer.Option(help="Sampling seed (animate.seed).", show_default=False)]
DeviceOpt = Annotated[str | None, typer.Option(
    help="Torch device for render and animate: cpu, cuda, cuda:1 or auto.", show_default=False)]
WeightsOpt = Annotated[Path | None, typer.Option(
    "--weights-dir", help="Folder of the SCAIL-Preview weights (animate.weights_dir).", show_default=False)]
PoseBackendOpt = Annotated[str | None, typer.Option(
    "--pose-backend", help="auto, mediapipe or nlf (pose.backend).", show_default=False)]
PromptOpt = Annotated[str | None, typer.Option(
    help="Text prompt for every example (overrides prompt.txt; default: prompt.txt, else empty).",
    show_default=False)]
ForceOpt = Annotated[list[ForceChoice] | None, typer.Option(
    "--force", metavar="[STAGE]",
    help="Redo STAGE even when fresh or user-provided; --force alone redoes every stage. Repeatable.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary on stdout.")]
JsonOutOpt = Annotated[Path | None, typer.Option(
    "--json-out", help="Where to write the JSON summary (default: PATH/.scail-summary.json).",
    show_default=False)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars; errors only.")]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output (-v info, -vv debug).")]
TracebackOpt = Annotated[bool, typer.Option("--traceback", help="Show the Python traceback of an error.")]
LockWaitOpt = Annotated[float, typer.Option(
    "--lock-wait", metavar="SECONDS",
    help="How long to wait for an example another runner holds before reporting it as locked.")]


def _consoles() -> tuple[Console, Console]:
    """(stdout console for results, stderr console for bars and logs)."""
    from rich.console import Console

    return Console(), Console(stderr=True)


@contextlib.contextmanager
def _errors(show_traceback: bool) -> Iterator[None]:
    """The one place a `ScailError` becomes `error: <msg>` on stderr and an exit code."""
    from scail.errors import Interrupted

    try:
        yield
    except Interrupted as exc:
        if show_traceback:
            raise
        typer.echo(f"interrupted: {exc}", err=True)
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    except ScailError as exc:
        if show_traceback:
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(int(ExitCode.ERROR)) from None
    except KeyboardInterrupt:
        if show_traceback:
            raise
        typer.echo("interrupted", err=True)
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None


def resolve_config(pipeline: str | None, sets: list[str] | None, *, steps: int | None = None,
                   seed: int | None = None, device: str | None = None, weights_dir: Path | None = None,
                   pose_backend: str | None = None) -> PipelineConfig:
    """Preset < --set values < first-class flags, validated into a `PipelineConfig`."""
    from scail.config import load_pipeline, parse_override

    overrides: dict[str, Any] = dict(parse_override(s) for s in sets or [])
    flags = {"animate.steps": steps, "animate.seed": seed, "animate.device": device,
             "render.device": device, "animate.weights_dir": str(weights_dir) if weights_dir else None,
             "pose.backend": pose_backend}
    overrides.update({k: v for k, v in flags.items() if v is not None})
    return load_pipeline(pipeline, overrides)


def _display(quiet: bool, json_mode: bool, err: Console) -> ProgressDisplay:
    """The Rich progress display (scail/progress.py): bars on a terminal, plain lines otherwise."""
    from scail.progress import ProgressDisplay

    return ProgressDisplay(console=err, quiet=quiet, json_mode=json_mode)


def _run(path: Path, stages: tuple[str, ...], *, prompt: str | None, pipeline: str | None,
         sets: list[str] | None, force: list[ForceChoice] | None, json_mode: bool, json_out: Path | None,
         quiet: bool, verbose: int, show_traceback: bool, lock_wait_s: float = 0.0,
         **flags: Any) -> None:
    """What `run`, `pose`, `render` and `animate` share: resolve, run the batch, report, exit."""
    from scail.batch import SUMMARY_NAME, make_jobs, run_batch
    from scail.example import discover
    from scail.logs import setup_logging
    from scail.summary import batch_table

    out, err = _consoles()
    with _errors(show_traceback):
        setup_logging(verbose, quiet, console=err)
        config = resolve_config(pipeline, sets, **flags)
        forced = {f.value for f in force or []}
        forced = set(stages) if "all" in forced else forced & set(stages)
        examples = discover(path)
        jobs = make_jobs(examples, config, stages, forced, prompt, lock_wait_s)
        with _display(quiet, json_mode, err) as display:
            summary = run_batch(jobs, observer=display, json_out=json_out or path / SUMMARY_NAME)
        if json_mode:
            typer.echo(json.dumps(summary.to_dict(), indent=2))
        elif not quiet or summary.exit_code:
            out.print(batch_table(summary))
        if summary.exit_code:
            raise typer.Exit(int(summary.exit_code))


# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------


@app.command()
def run(
    path: PathArg,
    prompt: PromptOpt = None,
    pipeline: PipelineOpt = None,
    until: Annotated[StageChoice | None, typer.Option(help="Stop after this stage.", show_default=False)] = None,
    force: ForceOpt = None,
    set_: SetOpt = None,
    steps: StepsOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    weights_dir: WeightsOpt = None,
    pose_backend: PoseBackendOpt = None,
    json_mode: JsonOpt = False,
    json_out: JsonOutOpt = None,
    lock_wait: LockWaitOpt = 0.0,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
    traceback: TracebackOpt = False,
) -> None:
    """Run pose -> render -> animate on every example; fresh stages are skipped.

    A rerun resumes where the last run stopped. One failing example is recorded (with its reason in .scail/<stage>.json) and the batch goes on. Exit code: 0 all ok, 2 some failed, 130 Ctrl-C.

    Examples:
      scail run examples/ --pipeline tiny-random
      scail run examples/001 --prompt "a woman dancing" --steps 40 --seed 7
      scail run examples/ --until render          # pose and skeleton videos only
      scail run examples/ --force animate --set animate.guide_scale=5
    """
    from scail.config import STAGES

    stages = STAGES[: STAGES.index(until.value) + 1] if until else STAGES
    _run(path, stages, prompt=prompt, pipeline=pipeline, sets=set_, force=force, json_mode=json_mode,
         json_out=json_out, quiet=quiet, verbose=verbose, show_traceback=traceback, lock_wait_s=lock_wait,
         steps=steps, seed=seed, device=device, weights_dir=weights_dir, pose_backend=pose_backend)


@app.command()
def pose(
    path: PathArg,
    pipeline: PipelineOpt = None,
    force: ForceOpt = None,
    set_: SetOpt = None,
    pose_backend: PoseBackendOpt = None,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
    traceback: TracebackOpt = False,
) -> None:
    """Extract 3D + 2D pose from driving.mp4 and the reference image into .scail/pose.npz."""
    _run(path, ("pose",), prompt=None, pipeline=pipeline, sets=set_, force=force, json_mode=json_mode,
         json_out=None, quiet=quiet, verbose=verbose, show_traceback=traceback, pose_backend=pose_backend)


@app.command()
def render(
    path: PathArg,
    pipeline: PipelineOpt = None,
    force: ForceOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
    traceback: TracebackOpt = False,
) -> None:
    """Draw the skeleton videos (rendered.mp4, rendered_aligned.mp4) from .scail/pose.npz."""
    _run(path, ("render",), prompt=None, pipeline=pipeline, sets=set_, force=force, json_mode=json_mode,
         json_out=None, quiet=quiet, verbose=verbose, show_traceback=traceback, device=device)


@app.command()
def animate(
    path: PathArg,
    prompt: PromptOpt = None,
    pipeline: PipelineOpt = None,
    force: ForceOpt = None,
    set_: SetOpt = None,
    steps: StepsOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    weights_dir: WeightsOpt = None,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
    traceback: TracebackOpt = False,
) -> None:
    """Generate samples/*.mp4 from the skeleton video, the reference image and the prompt.

    Works on a hand-made rendered.mp4 too: drop it in the example folder and run only this command.
    """
    _run(path, ("animate",), prompt=prompt, pipeline=pipeline, sets=set_, force=force, json_mode=json_mode,
         json_out=None, quiet=quiet, verbose=verbose, show_traceback=traceback, steps=steps, seed=seed,
         device=device, weights_dir=weights_dir)


@app.command()
def status(
    path: PathArg,
    pipeline: PipelineOpt = None,
    set_: SetOpt = None,
    json_mode: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """Show each example's stages: fresh, stale, failed, missing, user-provided, interrupted, running.

    Nothing runs and nothing heavy loads. Pass the same --pipeline/--set as the run, since stages are compared by fingerprint.
    """
    from scail.batch import build_stages
    from scail.config import STAGES
    from scail.engine import example_status
    from scail.example import discover
    from scail.summary import status_json, status_table

    out, _ = _consoles()
    with _errors(traceback):
        config = resolve_config(pipeline, set_)
        stages = build_stages(config, STAGES)
        rows = [(ex.name, example_status(stages, ex)) for ex in discover(path)]
        if json_mode:
            typer.echo(json.dumps(status_json(STAGES, rows), indent=2))
        else:
            out.print(status_table(STAGES, rows))


@app.command()
def clean(
    path: PathArg,
    stage: Annotated[StageChoice | None, typer.Option(help="Only this stage (default: all).",
                                                      show_default=False)] = None,
    traceback: TracebackOpt = False,
) -> None:
    """Delete what scail wrote (recorded outputs, manifests, temp files); user-provided files stay."""
    from scail.config import STAGES
    from scail.engine import clean_example
    from scail.example import discover

    with _errors(traceback):
        names = (stage.value,) if stage else STAGES
        removed = [p for ex in discover(path) for p in clean_example(ex, names)]
        typer.echo(f"removed {len(removed)} file(s)")


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
    traceback: TracebackOpt = False,
) -> None:
    """Write the bundled synthetic example to OUT_DIR and run the pipeline on it (offline).

    With the default tiny-random preset the video is noise: it proves the plumbing, not the model. The pose data comes from the generator's own 3D motion (user-provided), so no pose model is needed.
    """
    from scail.demo import write_demo_example

    with _errors(traceback):
        example = write_demo_example(out_dir / "dance")
        typer.echo(f"wrote {example}", err=True)
    from scail.config import STAGES

    _run(out_dir, STAGES, prompt=None, pipeline=pipeline, sets=None, force=None, json_mode=False,
         json_out=None, quiet=quiet, verbose=verbose, show_traceback=traceback)


# ----------------------------------------------------------------------------------------------
# Optional sub-apps and the entry point
# ----------------------------------------------------------------------------------------------


def _mount_optional_apps() -> None:
    """`scail weights` and `scail bench` live with their features; a missing one is left out."""
    try:
        from scail.animate.weights_cli import weights_app
    except ImportError:
        pass
    else:
        app.add_typer(weights_app, name="weights")
    try:
        from scail.bench_cli import bench_app
    except ImportError:
        pass
    else:
        app.add_typer(bench_app, name="bench")


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

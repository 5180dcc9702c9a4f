"""`scail bench animate`: the animate-stage benchmark (see `scail.animate.bench`).

Mounted by scail/cli.py as `scail bench`. On a GPU box without the CLI's dependencies the same
benchmark runs as `python -m scail.animate.bench` with the same options.
"""

from __future__ import annotations

from typing import Annotated

import typer

bench_app = typer.Typer(
    name="bench",
    help="Benchmarks: s/step, TFLOP/s, peak memory and time split of the animate stage.",
    no_args_is_help=True,
)


@bench_app.callback()
def _group() -> None:
    """Benchmarks of scail's stages (GPU numbers and command lines: NOTES-gpu.md)."""


@bench_app.command("animate")
def animate_cmd(
    preset: Annotated[str, typer.Option(help="14b (full size, random weights) or tiny (CPU check).")] = "14b",
    device: Annotated[str, typer.Option(help="cuda, cuda:N or cpu.")] = "cuda",
    shapes: Annotated[str, typer.Option(help="HxWxT, comma-separated (default: 512x896x81,896x512x81).")] = "",
    steps: Annotated[int, typer.Option(help="Denoising steps per timed sample.")] = 3,
    modes: Annotated[str, typer.Option(help="Comma-separated: resident, offload, fast.")] = "resident,offload,fast",
    compile: Annotated[bool, typer.Option("--compile/--no-compile", help="torch.compile the DiT blocks.")] = True,
    attention: Annotated[str, typer.Option(help="auto, sdpa_cudnn, sdpa_flash, sdpa, flash_attn_3, ...")] = "auto",
    cache_threshold: Annotated[str, typer.Option(help="Fast-mode step-cache threshold(s), comma-separated.")] = "0.1",
    quality_steps: Annotated[int, typer.Option(help="Steps of the bf16-vs-fast comparison (0: off).")] = 0,
    tile: Annotated[int, typer.Option(help="VAE decode tile side in latent pixels (0: untiled).")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of weights, inputs and noise.")] = 0,
    json_path: Annotated[str, typer.Option("--json", help="Also write the rows to this JSON file.")] = "",
) -> None:
    """Run the animate benchmark and print its table (random weights; the numbers are speed, not quality)."""
    from scail.animate.bench import main
    from scail.errors import ScailError

    argv = [
        "--preset", preset, "--device", device, "--shapes", shapes, "--steps", str(steps), "--modes", modes,
        "--attention", attention, "--cache-threshold", cache_threshold, "--quality-steps", str(quality_steps),
        "--tile", str(tile), "--seed", str(seed), "--json", json_path,
    ]  # fmt: skip
    if not compile:
        argv.append("--no-compile")
    try:
        main(argv)
    except (ValueError, RuntimeError) as exc:
        raise ScailError(f"scail bench animate: {str(exc).splitlines()[0]}") from exc

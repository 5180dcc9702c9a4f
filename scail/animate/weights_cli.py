"""`scail weights download|verify [--model scail-2]`: fetch and check a model's weights folder.

Mounted by scail/cli.py as `scail weights`. Failures raise `ScailError`; the main CLI prints them
as one line and exits 1.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

weights_app = typer.Typer(
    name="weights",
    help="Download and check the SCAIL-Preview (default) or SCAIL-2 model weights (about 50 GB each).",
    no_args_is_help=True,
)

DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="Weights folder. Default: $SCAIL_WEIGHTS_DIR, else ~/.cache/scail/weights.",
        file_okay=False,
    ),
]


class Model(str, Enum):
    scail_preview = "scail-preview"
    scail_2 = "scail-2"


ModelOption = Annotated[
    Model,
    typer.Option(
        "--model",
        help="Which model: scail-preview (zai-org/SCAIL-Preview) or scail-2 (zai-org/SCAIL-2, default folder "
        "<weights dir>/scail-2).",
        case_sensitive=False,
    ),
]


def _root(folder: Path | None, model: Model) -> Path:
    """--dir, else the model's default folder under $SCAIL_WEIGHTS_DIR / ~/.cache/scail/weights."""
    from scail.animate import weights
    from scail.config import resolve_weights_dir

    return resolve_weights_dir(folder) if folder is not None else weights.model_dir(resolve_weights_dir(), model.value)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


@weights_app.command("download")
def download_cmd(folder: DirOption = None, model: ModelOption = Model.scail_preview) -> None:
    """Download zai-org/SCAIL-Preview (or --model scail-2: zai-org/SCAIL-2) from Hugging Face (resumes)."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from scail.animate import weights

    root = _root(folder, model)
    console = Console(stderr=True)
    console.print(f"downloading {weights.repo_id(model.value)} into {root}", soft_wrap=True)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console
    ) as progress:
        task = progress.add_task("weights", total=None)

        def on_progress(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        path = weights.download(root, on_progress=on_progress, model=model.value)
    typer.echo(str(path))
    flag = " --model scail-2" if model is Model.scail_2 else ""
    console.print(f"done; check the files with: scail weights verify{flag} --dir {root}", soft_wrap=True)


@weights_app.command("verify")
def verify_cmd(
    folder: DirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    dit: Annotated[Path | None, typer.Option(
        "--dit", dir_okay=False, help="Check this DiT file instead of the folder's (animate.dit_file): SAT, "
        "safetensors, ComfyUI/kijai fp8_e4m3fn_scaled, comfy-quant fp8/int8; the row says which format.")] = None,
    model: ModelOption = Model.scail_preview,
) -> None:
    """Check that every weight file is present and loadable (keys and shapes, read memory-mapped)."""
    from rich.console import Console
    from rich.table import Table

    from scail.animate import weights

    root = _root(folder, model)
    rows = weights.verify(root, dit_file=dit, model=model.value)
    ok = all(r.ok for r in rows)
    if as_json:
        payload = {
            "dir": str(root),
            "ok": ok,
            "files": [
                {"component": r.component, "path": str(r.path) if r.path else None, "ok": r.ok,
                 "size_bytes": r.size_bytes, "detail": r.detail}
                for r in rows
            ],
        }
        typer.echo(json.dumps(payload, indent=2))
    else:
        table = Table(title=f"SCAIL weights in {root}")
        for col in ("component", "status", "size", "path", "detail"):
            table.add_column(col, overflow="fold")
        for r in rows:
            rel = str(r.path.relative_to(root)) if r.path and r.path.is_relative_to(root) else str(r.path or "-")
            status = "[green]ok[/green]" if r.ok else "[red]FAIL[/red]"
            table.add_row(r.component, status, _human(r.size_bytes) if r.size_bytes else "-", rel, r.detail)
        Console(width=160).print(table)
    if not ok:
        Console(stderr=True).print(
            f"some weight files are missing or broken; run: {weights.download_command(root, model.value)}", soft_wrap=True
        )
        raise typer.Exit(code=1)

"""The SCAIL-Preview weights folder: where each file lives, download, and a cheap integrity check.

Layout of the `zai-org/SCAIL-Preview` download (research/scail-model.md §5):

    <dir>/model/latest                                    text file naming the checkpoint folder ("1")
    <dir>/model/<n>/mp_rank_00_model_states.pt            the DiT (SAT layout)
    <dir>/Wan2.1_VAE.pth                                  the Wan VAE
    <dir>/umt5-xxl/models_t5_umt5-xxl-enc-bf16.pth        the umT5-XXL encoder
    <dir>/umt5-xxl/                                       its tokenizer (tokenizer.json / spiece.model)
    <dir>/models_clip_open-clip-xlm-roberta-large-vit-huge-14-onlyvisual.pth   CLIP ViT-H/14

SCAIL-2 (`zai-org/SCAIL-2`, `--model scail-2`, default folder `<weights dir>/scail-2`) has the same
layout with the DiT at `model/<n>/fsdp2_rank_0000_checkpoint.pt` (research/scail2-model.md §5);
a wan-named conversion (`SCAIL-2.safetensors` from the official convert.py, ComfyUI's
`wan2.1_14B_SCAIL_2_fp16.safetensors`, also under `diffusion_models/`) is found too, and the CLIP
file, which the SCAIL-2 repository may not carry, is also looked for in the SCAIL-Preview folder
above it (the two models share T5, VAE and CLIP).

Also accepted: the full Wan CLIP file (`...-vit-huge-14.pth`) and a `google/umt5-xxl/` tokenizer
folder (Wan2.1's layout). `verify` opens every checkpoint memory-mapped and compares its keys and
shapes with the model built on the meta device, so it checks 40 GB of files in seconds without
reading them.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scail.errors import CheckpointError, ScailError, expand_user

if TYPE_CHECKING:
    import torch

    from scail.stage import ProgressFn

log = logging.getLogger(__name__)

REPO_ID = "zai-org/SCAIL-Preview"
DIT_DIR = "model"
SAT_FILE = "mp_rank_00_model_states.pt"
SCAIL2_REPO_ID = "zai-org/SCAIL-2"
SCAIL2_SAT_FILE = "fsdp2_rank_0000_checkpoint.pt"
SAT_FILES = (SAT_FILE, SCAIL2_SAT_FILE)
SCAIL2_DIR = "scail-2"
"""The SCAIL-2 download's default folder under the weights folder."""
WAN_DIT_GLOBS = ("model/*.safetensors", "*SCAIL*.safetensors", "diffusion_models/*SCAIL*.safetensors")
"""Wan-named DiT conversions: convert.py's output, ComfyUI's repacks (`wan2.1_14B_SCAIL_2_fp16.safetensors`)."""
MODELS = ("scail-preview", "scail-2")


def is_scail2(model: str) -> bool:
    """`scail-2` (weights CLI) and `scail-2-14b` (animate.model) name SCAIL-2."""
    return model.startswith("scail-2")


def repo_id(model: str = "scail-preview") -> str:
    return SCAIL2_REPO_ID if is_scail2(model) else REPO_ID


def model_dir(weights_root: Path, model: str) -> Path:
    """The default folder of `model` under the weights folder: SCAIL-Preview there, SCAIL-2 in `scail-2/`."""
    return weights_root / SCAIL2_DIR if is_scail2(model) else weights_root
VAE_FILE = "Wan2.1_VAE.pth"
T5_FILE = "umt5-xxl/models_t5_umt5-xxl-enc-bf16.pth"
TOKENIZER_DIRS = ("umt5-xxl", "google/umt5-xxl")
CLIP_FILES = (
    "models_clip_open-clip-xlm-roberta-large-vit-huge-14-onlyvisual.pth",
    "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
)



def download_command(root: Path, model: str = "scail-preview") -> str:
    """The exact command that fetches the weights into `root`."""
    flag = " --model scail-2" if is_scail2(model) else ""
    return f"scail weights download{flag} --dir {root}"


@dataclass(frozen=True)
class WeightPaths:
    """Resolved paths of every file the real pipeline loads."""

    root: Path
    dit: Path
    """The SAT checkpoint file (model/<n>/mp_rank_00_model_states.pt) or a safetensors conversion."""
    vae: Path
    t5: Path
    tokenizer: Path
    clip: Path


def _sat_checkpoint(root: Path) -> Path | None:
    """model/latest -> model/<n>/mp_rank_00_model_states.pt; else the only model/*/…pt; else model/*.safetensors."""
    model_dir = root / DIT_DIR
    latest = model_dir / "latest"
    if latest.is_file():
        for name in SAT_FILES:
            candidate = model_dir / latest.read_text(encoding="utf-8").strip() / name
            if candidate.is_file():
                return candidate
    found = [p for name in SAT_FILES for p in sorted(model_dir.glob(f"*/{name}"))] if model_dir.is_dir() else []
    if len(found) == 1:
        return found[0]
    converted = sorted({p for pattern in WAN_DIT_GLOBS for p in root.glob(pattern)})
    return converted[0] if len(converted) == 1 else None


def _first(root: Path, names: tuple[str, ...], is_dir: bool = False) -> Path | None:
    for name in names:
        p = root / name
        if (p.is_dir() if is_dir else p.is_file()):
            return p
    return None


def locate(root: Path) -> dict[str, Path | None]:
    """Every component's path under `root`, or None where it is missing."""
    root = expand_user(root, "weights folder")
    return {
        "dit": _sat_checkpoint(root),
        "vae": _first(root, (VAE_FILE,)),
        "t5": _first(root, (T5_FILE,)),
        "tokenizer": _first(root, TOKENIZER_DIRS, is_dir=True),
        # SCAIL-2 shares SCAIL-Preview's CLIP, which its repository may not carry
        "clip": _first(root, CLIP_FILES) or (_first(root.parent, CLIP_FILES) if root.name == SCAIL2_DIR else None),
    }


_EXPECTED = {
    "dit": f"{DIT_DIR}/latest + {DIT_DIR}/<n>/{SAT_FILE}",
    "vae": VAE_FILE,
    "t5": T5_FILE,
    "tokenizer": f"{TOKENIZER_DIRS[0]}/ (tokenizer.json or spiece.model)",
    "clip": CLIP_FILES[0],
}


def resolve(root: Path, need_dit: bool = True, *, model: str = "scail-preview") -> WeightPaths:
    """The weight files under `root`; a one-line `CheckpointError` with the fix if any is missing.

    `need_dit=False` (a DiT file given elsewhere, `animate.dit_file`): a missing DiT is no error and
    `dit` is then the folder's `model` path, unused. `model`: scail-preview or scail-2 (the messages).
    """
    root = expand_user(root, "weights folder")
    if not root.is_dir():
        raise CheckpointError(f"{root}: SCAIL weights folder not found; run `{download_command(root, model)}`")
    found = locate(root)
    if not need_dit and found["dit"] is None:
        found["dit"] = root / DIT_DIR
    missing = [name for name, path in found.items() if path is None]
    if missing:
        what = ", ".join(f"{name} ({_expected(name, model)})" for name in missing)
        raise CheckpointError(f"{root}: missing {what}; run `{download_command(root, model)}`")
    return WeightPaths(root=root, **{k: v for k, v in found.items() if v is not None})


def _expected(name: str, model: str) -> str:
    if name == "dit" and is_scail2(model):
        return f"{DIT_DIR}/latest + {DIT_DIR}/<n>/{SCAIL2_SAT_FILE}, or SCAIL-2.safetensors"
    return _EXPECTED[name]


# ----------------------------------------------------------------------------------------------
# Download
# ----------------------------------------------------------------------------------------------


def _progress_class(on_progress: ProgressFn) -> type:
    """A tqdm class that draws nothing and forwards the snapshot's byte counter to `on_progress`."""
    from tqdm.std import tqdm

    class _Forward(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs["file"] = io.StringIO()
            kwargs["disable"] = False
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            out = super().update(n)
            desc = str(self.desc or "")
            if self.unit == "B" and not desc.startswith("Downloading bytes"):  # bytes written to disk
                on_progress(int(self.n), int(self.total) if self.total else None)
            return out

    return _Forward


def download(
    root: Path, on_progress: ProgressFn | None = None, revision: str | None = None, model: str = "scail-preview"
) -> Path:
    """Download (or resume) `zai-org/SCAIL-Preview` (`model` scail-2: `zai-org/SCAIL-2`) into `root`.

    Files already complete are skipped; partial files resume. Raises a one-line `ScailError` when
    the hub is unreachable or offline (HF_HUB_OFFLINE=1).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    repo = repo_id(model)
    root = expand_user(root, "weights folder")
    root.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s into %s", repo, root)
    try:
        path = snapshot_download(
            repo,
            revision=revision,
            local_dir=root,
            tqdm_class=_progress_class(on_progress) if on_progress is not None else None,
        )
    except (OfflineModeIsEnabled, LocalEntryNotFoundError) as exc:
        raise ScailError(
            f"cannot download {repo} into {root}: the Hugging Face hub is unreachable or offline mode is on "
            f"(HF_HUB_OFFLINE); connect to the internet, or copy the {repo.split('/')[1]} files there and run "
            f"`{download_command(root, model).replace(' download', ' verify')}`"
        ) from exc
    except HfHubHTTPError as exc:
        raise ScailError(f"cannot download {repo}: {str(exc).splitlines()[0]}") from exc
    except OSError as exc:  # disk full, permissions, connection errors
        raise ScailError(f"cannot download {repo} into {root}: {exc}") from exc
    return Path(path)


# ----------------------------------------------------------------------------------------------
# Verify
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """One row of `scail weights verify`."""

    component: str
    path: Path | None
    ok: bool
    size_bytes: int
    detail: str


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


@dataclass(frozen=True)
class Architectures:
    """The model configurations `verify` checks the files against (default: the released sizes)."""

    dit: Any = None
    vae: Any = None
    t5: Any = None
    clip: Any = None

    @classmethod
    def released(cls, model: str = "scail-preview") -> Architectures:
        from scail.animate.clip import CLIPConfig
        from scail.animate.dit import DiTConfig
        from scail.animate.dit2 import SCAIL2Config
        from scail.animate.t5 import T5Config
        from scail.animate.vae import VAEConfig

        dit = SCAIL2Config.scail_14b() if is_scail2(model) else DiTConfig.scail_14b()
        return cls(dit, VAEConfig.wan21(), T5Config.umt5_xxl(), CLIPConfig.vit_h_14())


def _summary(tensors: dict[str, torch.Tensor]) -> str:
    """"985 tensors, bfloat16, 32.8 GB of data" (read from the tensor headers, nothing is loaded)."""
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in tensors.values()})
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    return f"{len(tensors)} tensors, {'/'.join(dtypes)}, {nbytes / 1e9:.2f} GB of data"


def _check_dit(path: Path, arch: Architectures) -> str:
    from scail.animate.dit_files import describe_dit_file

    return describe_dit_file(path, arch.dit)  # any supported format, memory-mapped


def _check_vae(path: Path, arch: Architectures) -> str:
    import torch

    from scail.animate.checkpoint import check_state_dict, read_state_dict
    from scail.animate.vae import WAN_VAE, VideoVAE

    state = read_state_dict(path)
    with torch.device("meta"):
        model = VideoVAE(arch.vae)
    check_state_dict(model, state, path, WAN_VAE)
    return f"{_summary(state)}; keys and shapes match the Wan VAE"


def _check_t5(path: Path, arch: Architectures) -> str:
    from scail.animate.t5 import read_t5_state

    return f"{_summary(read_t5_state(path, arch.t5))}; keys and shapes match the umT5 encoder"


def _check_clip(path: Path, arch: Architectures) -> str:
    from scail.animate.clip import read_clip_state

    return f"{_summary(read_clip_state(path, arch.clip))} used; keys and shapes match the CLIP vision tower"


def _check_tokenizer(path: Path, arch: Architectures) -> str:
    from scail.animate.tokenizer import UMT5Tokenizer

    tok = UMT5Tokenizer.from_dir(path)
    _, mask = tok(["a person dancing"])
    return f"loads; 'a person dancing' -> {int(mask.sum())} tokens incl. </s>"


_CHECKS: dict[str, Callable[[Path, Architectures], str]] = {
    "dit": _check_dit,
    "vae": _check_vae,
    "t5": _check_t5,
    "tokenizer": _check_tokenizer,
    "clip": _check_clip,
}


def verify(
    root: Path, architectures: Architectures | None = None, dit_file: Path | None = None, model: str = "scail-preview"
) -> list[CheckResult]:
    """Check presence, size and loadability (keys and shapes, memory-mapped) of every weight file.

    Args:
        root: the weights folder.
        architectures: the model sizes to check against; default the released `model`'s.
        dit_file: check this DiT file (any supported format, `animate.dit_file`) instead of the folder's.
        model: scail-preview or scail-2.
    """
    root = expand_user(root, "weights folder")
    arch = architectures or Architectures.released(model)
    found = locate(root) if root.is_dir() else dict.fromkeys(_CHECKS)
    if dit_file is not None:
        found["dit"] = expand_user(dit_file, "animate.dit_file")
    rows = []
    for name, check in _CHECKS.items():
        path = found[name]
        if path is None:
            rows.append(CheckResult(name, None, False, 0, f"missing: {_expected(name, model)}"))
            continue
        size = _size(path)
        if size == 0:
            rows.append(CheckResult(name, path, False, 0, "empty file; download it again"))
            continue
        try:
            detail = check(path, arch)
            rows.append(CheckResult(name, path, True, size, detail))
        except ScailError as exc:  # the row names the file already: drop the message's path prefix
            rows.append(CheckResult(name, path, False, size, str(exc).removeprefix(f"{path}: ")))
        except Exception as exc:  # a foreign failure in a check is a failed row, never a crash
            log.debug("verify %s failed", name, exc_info=True)
            rows.append(CheckResult(name, path, False, size, f"{type(exc).__name__}: {exc}"))
    return rows

"""Tiny model files in the official weights layouts, shared by the Preview and SCAIL-2 weights tests.

Imported by plain name (pyproject.toml puts tests/ on pytest's path).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from scail.animate import weights
from scail.animate.weights import Architectures

if TYPE_CHECKING:
    from scail.animate.dit import DiTConfig


def tiny_architectures(dit: DiTConfig) -> Architectures:
    """`dit` with the tiny VAE, umT5 and CLIP configs."""
    from scail.animate.clip import CLIPConfig
    from scail.animate.t5 import T5Config
    from scail.animate.vae import VAEConfig

    return Architectures(dit, VAEConfig.tiny(), T5Config.tiny(), CLIPConfig.tiny())


def write_tokenizer(folder: Path) -> None:
    """A word-level tokenizer.json in `folder` (created) for the prompt "a person dancing"."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "person": 4, "dancing": 5}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))


def write_encoders(root: Path, arch: Architectures) -> dict[str, torch.Tensor]:
    """Random VAE and umT5 files (and the tokenizer) in `root` as the official folders hold them;
    returns a random CLIP's state dict under its file's `visual.` names, for the caller to place."""
    from scail.animate.clip import CLIPVisionTower
    from scail.animate.t5 import T5Encoder
    from scail.animate.vae import VideoVAE

    torch.save(VideoVAE(arch.vae).state_dict(), root / weights.VAE_FILE)
    (root / "umt5-xxl").mkdir()
    torch.save(T5Encoder(arch.t5).state_dict(), root / weights.T5_FILE)
    write_tokenizer(root / "umt5-xxl")
    return {f"visual.{k}": v for k, v in CLIPVisionTower(arch.clip).state_dict().items()}

"""The animate stage: SCAIL DiT, Wan VAE, umT5, CLIP, sampler, checkpoint loaders, pipeline.

Importing `scail.animate` is cheap: `scail --help`, `scail status` and `scail doctor` import light
modules of this package (weights, weights_cli, stage) without loading torch. The public names below
are imported on first use (PEP 562); to export one, add it to `__all__`, to the `TYPE_CHECKING`
imports and to a branch of `__getattr__`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scail.animate.build import build_pipeline
    from scail.animate.clip import load_clip
    from scail.animate.dit import DiT, DiTConfig
    from scail.animate.dit_loader import load_dit
    from scail.animate.pipeline import AnimatePipeline
    from scail.animate.stage import AnimateStage
    from scail.animate.t5 import TextEncoder, load_t5
    from scail.animate.vae import WanVAE, load_vae

__all__ = ["AnimatePipeline", "AnimateStage", "DiT", "DiTConfig", "TextEncoder", "WanVAE", "build_pipeline",
           "load_clip", "load_dit", "load_t5", "load_vae"]


def __getattr__(name: str) -> Any:
    """Import the module of a public name when it is first used (torch loads only then)."""
    if name in ("DiT", "DiTConfig"):
        from scail.animate import dit

        return getattr(dit, name)
    if name == "load_dit":
        from scail.animate import dit_loader

        return getattr(dit_loader, name)
    if name == "AnimatePipeline":
        from scail.animate import pipeline

        return getattr(pipeline, name)
    if name == "AnimateStage":
        from scail.animate import stage

        return getattr(stage, name)
    if name == "build_pipeline":
        from scail.animate import build

        return getattr(build, name)
    if name in ("WanVAE", "load_vae"):
        from scail.animate import vae

        return getattr(vae, name)
    if name in ("TextEncoder", "load_t5"):
        from scail.animate import t5

        return getattr(t5, name)
    if name == "load_clip":
        from scail.animate import clip

        return getattr(clip, name)
    raise AttributeError(f"module 'scail.animate' has no attribute {name!r}")

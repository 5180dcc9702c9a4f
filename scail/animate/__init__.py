"""The animate stage: SCAIL DiT, Wan VAE, umT5, CLIP, sampler, checkpoint loaders, pipeline.

Importing `scail.animate` is cheap: names are resolved lazily (PEP 562), so torch is imported only
when a model class or loader is first used. To export a name, add one line to `_EXPORTS`:
``"public_name": "scail.animate.<module>"``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "DiT": "scail.animate.dit",
    "DiTConfig": "scail.animate.dit",
    "load_dit": "scail.animate.dit_loader",
    "AnimatePipeline": "scail.animate.pipeline",
    "AnimateStage": "scail.animate.stage",
    "build_pipeline": "scail.animate.build",
    "WanVAE": "scail.animate.vae",
    "load_vae": "scail.animate.vae",
    "TextEncoder": "scail.animate.t5",
    "load_t5": "scail.animate.t5",
    "load_clip": "scail.animate.clip",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'scail.animate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

"""Pose backends: `mediapipe` (embedded, offline) and `nlf` (official NLF + DWPose, downloads weights).

`resolve_backend("auto", ...)` picks `nlf` when its weights are present or downloadable, else
`mediapipe`, and says why (the reason goes to the progress output and the manifest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def resolve_backend(requested: str, weights_dir: Path) -> tuple[str, str]:
    """(backend name, one-line reason)."""
    if requested != "auto":
        return requested, f"--pose-backend {requested}"
    from scail.pose.backends import nlf_weights

    missing = nlf_weights.missing_files(weights_dir)
    if not missing:
        return "nlf", f"auto: nlf weights found in {nlf_weights.pose_weights_dir(weights_dir)}"
    if nlf_weights.downloadable():
        return "nlf", "auto: nlf weights are downloadable; they go to the weights cache on first use"
    return "mediapipe", (f"auto: nlf weights not found ({missing[0].name}) and not downloadable here; "
                         "using the embedded mediapipe backend")


def make_backend(name: str, weights_dir: Path, cache_dir: Path, device: str, mediapipe_model: str = "heavy") -> Any:
    """Build (load) a backend by name. Heavy imports happen here, inside the worker."""
    from scail.pose.backends.detector import offline_ultralytics_env

    offline_ultralytics_env(cache_dir / "ultralytics")
    if name == "mediapipe":
        from scail.pose.backends.mediapipe_backend import MediapipeBackend

        return MediapipeBackend(device=device, model=mediapipe_model)
    if name == "nlf":
        from scail.pose.backends.nlf_backend import NLFBackend

        return NLFBackend(weights_dir=weights_dir, device=device)
    from scail.errors import ScailError

    raise ScailError(f"unknown pose backend '{name}'; use auto, mediapipe or nlf")

"""Runtime configuration: pydantic models for the three stages and the pipeline presets.

Precedence: model defaults < preset (`pipelines/*.yaml`) < CLI flags. The resolved
`PipelineConfig` is what the stage cache fingerprints and what each manifest records.
Each stage fingerprints only its own block, so changing an animate option never reruns pose.

This is the only module that reads environment variables (see `Settings`).

Ownership: each stage's block below is owned by that stage (scail/pose, scail/render,
scail/animate); add fields there, with a docstring line saying what the field changes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    """Unknown keys are errors, so a misspelled preset key never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------------------------
# Pose stage (owned by scail/pose)
# ----------------------------------------------------------------------------------------------


class PoseConfig(_Strict):
    """How the driving video and the reference image become pose data (.scail/pose.npz)."""

    backend: Literal["auto", "mediapipe", "nlf"] = "auto"
    """`auto` picks `nlf` when its weights are present or downloadable, else `mediapipe`."""
    fps: float = Field(16.0, gt=0)
    """Frame rate the driving video is resampled to (by timestamps). The model was trained at 16."""
    max_people: int = Field(1, ge=1, le=8)
    """How many people are tracked and rendered."""
    smoothing: bool = True
    """Temporal One-Euro smoothing of 3D and 2D points (the official pipeline has none)."""
    max_frames: int | None = Field(None, ge=1)
    """Keep at most this many frames of the driving video (after resampling)."""
    in_process: bool = False
    """Run the pose worker in this interpreter instead of the isolated pose venv."""
    timeout_s: float = Field(3600.0, gt=0)
    """Kill the pose worker if one example takes longer than this."""


# ----------------------------------------------------------------------------------------------
# Render stage (owned by scail/render)
# ----------------------------------------------------------------------------------------------


class RenderConfig(_Strict):
    """How pose data becomes the skeleton videos (rendered.mp4, rendered_aligned.mp4)."""

    radius_mm: float = Field(21.5, gt=0)
    """Capsule radius. The model was trained on 21.5 mm; other values are out of distribution."""
    overlay: bool = True
    """Paint the 2D face dots, hand lines and head lines over the 3D skeleton."""
    align: bool = True
    """Also write rendered_aligned.mp4, fitted to the reference image's pose (official alignment)."""
    retarget: bool = False
    """Re-pose the driving skeleton with the reference person's bone lengths."""
    device: str = "cpu"
    """Torch device for the ray-capsule renderer ("cpu", "cuda", "cuda:1", or "auto")."""


# ----------------------------------------------------------------------------------------------
# Animate stage (owned by scail/animate)
# ----------------------------------------------------------------------------------------------


class AnimateConfig(_Strict):
    """How the skeleton video, reference image and prompt become the animation (samples/*.mp4)."""

    model: Literal["scail-preview-14b", "tiny-random"] = "scail-preview-14b"
    """Which model. `tiny-random` is a small random network for tests and the offline demo: its output is noise."""
    weights_dir: Path | None = None
    """Folder of the SCAIL-Preview download; default from $SCAIL_WEIGHTS_DIR or ~/.cache/scail/weights."""
    solver: Literal["euler", "unipc", "dpm++"] = "euler"
    """`euler` is the official SAT sampler; `unipc` and `dpm++` are the wan branch's solvers."""
    steps: int = Field(50, ge=1, le=1000)
    shift: float = Field(5.0, gt=0)
    guide_scale: float = Field(4.0, ge=0)
    """Classifier-free guidance on the text (1 disables the unconditional branch)."""
    negative_prompt: str = ""
    seed: int = 42
    max_frames: int | None = Field(81, ge=1)
    """Use at most this many pose frames (the model's RoPE tables stop at 81 = 4*20+1)."""
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    device: str = "auto"
    """Torch device: "auto" picks cuda when available, else cpu."""
    offload: Literal["none", "encoders", "blocks"] = "encoders"
    """`encoders`: T5 and CLIP leave the GPU after encoding; `blocks`: DiT blocks stream from CPU too."""


# ----------------------------------------------------------------------------------------------
# The whole pipeline
# ----------------------------------------------------------------------------------------------

StageName = Literal["pose", "render", "animate"]
STAGES: tuple[StageName, ...] = ("pose", "render", "animate")


class PipelineConfig(_Strict):
    """A named preset: one block per stage. Loaded from `pipelines/<name>.yaml`."""

    name: str = "default"
    description: str = ""
    pose: PoseConfig = PoseConfig()
    render: RenderConfig = RenderConfig()
    animate: AnimateConfig = AnimateConfig()


class Settings(_Strict):
    """Machine-level settings from the environment (the only place scail reads env vars)."""

    weights_dir: Path
    cache_dir: Path

    @classmethod
    def from_env(cls) -> Settings:
        cache = Path(os.environ.get("SCAIL_CACHE_DIR", Path.home() / ".cache" / "scail")).expanduser()
        weights = Path(os.environ.get("SCAIL_WEIGHTS_DIR", cache / "weights")).expanduser()
        return cls(weights_dir=weights, cache_dir=cache)

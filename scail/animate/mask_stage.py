"""Parent side of the SCAIL-2 mask backends: user masks first, else run `mask_worker` in the pose env.

`ensure_masks` is called before a SCAIL-2 example is loaded. Masks the user put in the folder
(`rendered_mask_v2.mp4` / `replace_mask.mp4`, `ref_mask.png|jpg`) are always used as they are.
Missing ones are made from the pose stage's tracks (`.scail/pose.npz`, `.scail/ref_pose.npz`) by
the configured segmenter (`embedded`: MediaPipe BlazePose segmentation, offline on CPU; `sam`:
ultralytics SAM with a weights file the user supplies); `none` makes nothing and the loader names
the missing files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Literal

from scail.errors import InputError, ScailError
from scail.example import Example

log = logging.getLogger(__name__)

MaskBackend = Literal["none", "embedded", "sam"]


def ensure_masks(
    example: Example,
    driving: Path,
    replace: bool,
    backend: MaskBackend,
    *,
    pose_fps: float | None = None,
    sam_weights: Path | None = None,
    device: str = "cpu",
    cache_dir: Path | None = None,
) -> dict[str, object] | None:
    """Make the example's missing identity masks; None when nothing was missing or backend is none.

    Args:
        driving: the video the masks must follow frame by frame (the DiT's driving video).
        replace: replacement mode (white-background driving mask, black-background reference mask).
        pose_fps: read `driving` at this rate (a skeleton render at the pose fps); None: every frame.
    """
    from scail.animate.inputs2 import ANIMATION_MASK, REF_MASK_NAMES, REPLACE_MASK

    root = example.root
    mask_video = root / (REPLACE_MASK if replace else ANIMATION_MASK)
    need_video = not mask_video.is_file()
    need_ref = not any((root / n).is_file() for n in REF_MASK_NAMES)
    if backend == "none" or not (need_video or need_ref):
        return None
    pose, ref_pose = example.pose_data, example.ref_pose_data
    if not pose.is_file():
        raise InputError(
            f"{root}: making SCAIL-2 masks needs the pose stage's tracks ({pose}); run the pose stage "
            f"first, or add {mask_video.name} and ref_mask.png yourself"
        )
    if backend == "sam" and (sam_weights is None or not sam_weights.is_file()):
        raise InputError(f"animate.mask_sam_weights {sam_weights}: file not found; download SAM / SAM 2 / MobileSAM "
                         "weights in ultralytics' format (e.g. sam2.1_b.pt) and give their path")
    from scail.animate.mask_worker import MaskJob

    # the video mask is made whenever one of the two is missing: the reference's colours follow
    # the driving video's people, so a lone reference mask would have nothing to match
    job = MaskJob(
        driving=driving,
        pose=pose,
        out_driving_mask=mask_video if need_video else example.state_dir / f"unused_{mask_video.name}",
        reference=example.reference() if need_ref and ref_pose.is_file() else None,
        ref_pose=ref_pose if need_ref and ref_pose.is_file() else None,
        out_ref_mask=root / "ref_mask.png" if need_ref else None,
        replace=replace,
        fps=pose_fps,
        segmenter=backend,
        sam_weights=sam_weights,
        device=device,
    )
    if need_ref and job.reference is None:
        raise InputError(f"{root}: no reference tracks ({ref_pose}) to make ref_mask.png from; add ref_mask.png")
    summary = run_job(job, example.state_dir, cache_dir)
    log.info("%s: SCAIL-2 masks made (%s): %s", example.name, backend, summary)
    if summary.get("missed_person_frames"):
        log.warning("%s: the %s segmenter found no body in %s person-frames (no mask there)",
                    example.name, backend, summary["missed_person_frames"])  # fmt: skip
    return summary


def run_job(job: object, state_dir: Path, cache_dir: Path | None) -> dict[str, object]:
    """Run a `MaskJob` in the pose env; its one-line error becomes a ScailError."""
    from scail.pose.client import _package_link_dir, worker_python

    python = worker_python(False, cache_dir)
    assert python is not None
    state_dir.mkdir(parents=True, exist_ok=True)
    job_file = state_dir / "mask_job.json"
    job_file.write_text(job.model_dump_json(indent=1))  # type: ignore[attr-defined]
    link = _package_link_dir()
    try:
        env = {**os.environ, "PYTHONPATH": str(link)}
        proc = subprocess.run([str(python), "-m", "scail.animate.mask_worker", str(job_file)],
                              capture_output=True, text=True, env=env, check=False)  # fmt: skip
    finally:
        shutil.rmtree(link, ignore_errors=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"event": "error", "message": proc.stderr.strip()[-500:]}
    if result.get("event") != "done":
        raise ScailError(f"mask worker failed: {result.get('message')}")
    return {k: v for k, v in result.items() if k != "event"}

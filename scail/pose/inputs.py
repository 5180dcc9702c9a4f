"""Inputs the pose stage refuses before any work, each with a one-line reason naming the file.

Checked in the parent before the pose worker starts, so a refused example costs a probe, never
leaves pose data behind, and gets a message about the input rather than a crash deep in a model:

* a reference that is not an image (a text file, a video, a truncated JPEG);
* a reference too small to find a person in (under `MIN_REFERENCE_SIDE` pixels on a side);
* a driving "video" that is a still image (a JPEG renamed .mp4 decodes as one frame);
* a driving video shorter than the model needs (`MIN_DRIVING_FRAMES` at the pose frame rate).
"""

from __future__ import annotations

from pathlib import Path

from scail.errors import InputError

MIN_REFERENCE_SIDE = 64
"""Pixels on the shorter side: the person detector sees the image at 640 px, and a person needs
some tens of pixels to be found; smaller references only give empty or random poses."""
MIN_DRIVING_FRAMES = 5
"""The Wan VAE encodes a first frame and then chunks of 4, so 5 frames is the shortest clip the
model animates (the official examples have 65 or 81)."""
_IMAGE_CODECS = {"mjpeg", "png", "bmp", "gif", "webp", "tiff", "jpeg2000", "jpegls", "pam", "ppm", "pgm"}


def check_reference(path: Path) -> None:
    """Refuse a reference that is not a readable image or is too small (raises `InputError`)."""
    from scail.images import read_image

    h, w = read_image(path).shape[:2]  # decodes it all: a truncated file fails here, not in the worker
    if min(h, w) < MIN_REFERENCE_SIDE:
        raise InputError(f"{path}: the reference image is {w}x{h} px, too small to find a person in "
                         f"(at least {MIN_REFERENCE_SIDE} px per side); use a larger photo of the character")


def check_driving(path: Path, fps: float, start_s: float = 0.0, end_s: float | None = None) -> None:
    """Refuse a still image posing as a video, and a clip (or the chosen part of it) shorter than
    the model needs."""
    from scail import video

    info = video.probe(path)  # unreadable files: already one line naming the file and the fix
    if info.num_frames <= 1 and info.codec in _IMAGE_CODECS:
        raise InputError(f"{path}: a still image ({info.codec}), not a video (a renamed picture?); "
                         "give a video of the motion (an MP4)")
    total = round(info.duration_s * fps) if info.duration_s > 0 else info.num_frames
    if start_s > 0 and round(start_s * fps) >= total:
        raise InputError(f"{path}: start {start_s:g} s is past the end of the video ({info.duration_s:.2f} s); "
                         "fix `start` in scail.yaml (or pose.start_s)")
    end = min(total, round(end_s * fps)) if end_s is not None else total
    frames = end - round(start_s * fps)
    if frames < MIN_DRIVING_FRAMES:
        part = "" if (start_s, end_s) == (0.0, None) else f" between {start_s:g} s and {end_s or info.duration_s:g} s"
        raise InputError(f"{path}: the driving video has {frames} frame(s){part} at {fps:g} fps; SCAIL needs at "
                         f"least {MIN_DRIVING_FRAMES} ({MIN_DRIVING_FRAMES / fps:.2f} s): use a longer clip")

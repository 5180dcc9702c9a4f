"""Reading still images (reference photos): one helper, so every stage sees the same upright pixels.

Phone cameras store the sensor's pixels and an EXIF Orientation tag that says how to turn them
for display. A reader that ignores the tag sees a portrait photo lying on its side: the pose stage
finds the person lying down, the alignment hits its bounds and the animation comes out sideways.
`read_image` applies the tag (Pillow's `ImageOps.exif_transpose`), so pose, render alignment (via
the reference pose) and animate all read the image as the user sees it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scail.errors import InputError

IMAGE_HINT = "use a JPEG or PNG photo"


def open_upright(path: Path) -> object:
    """The image at `path` as a Pillow RGB image, turned as its EXIF Orientation tag says.

    Raises `InputError` (one line naming the file) when the file is not a readable image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image file not found; check the path")
    try:
        with Image.open(path) as im:
            im.load()
            upright = ImageOps.exif_transpose(im)
            return (upright if upright is not None else im).convert("RGB")
    except UnidentifiedImageError as exc:
        raise InputError(f"{path}: not an image file; {IMAGE_HINT}") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:  # truncated, corrupt, bad EXIF
        raise InputError(f"{path}: unreadable image ({_first_line(exc, path)}); {IMAGE_HINT}") from exc


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB, upright (EXIF orientation applied), writable. See `open_upright`."""
    return np.array(open_upright(path))


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) as displayed (EXIF orientation applied) without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except UnidentifiedImageError as exc:
        raise InputError(f"{path}: not an image file; {IMAGE_HINT}") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: unreadable image ({_first_line(exc, path)}); {IMAGE_HINT}") from exc
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)  # 5-8 turn by 90 degrees


def _first_line(exc: BaseException, path: Path) -> str:
    """The first line of a Pillow error without the path it may echo."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.replace(f"'{path}'", "the file").replace(str(path), "the file")

"""scail/images.py: reference images are read upright (EXIF orientation) and bad files are one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scail.errors import InputError
from scail.images import image_size, read_image


def write_rotated_jpeg(upright: Image.Image, path: Path, orientation: int = 6) -> None:
    """Store `upright` as a phone would: pixels turned, plus the EXIF tag that turns them back."""
    stored = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}
    exif = Image.Exif()
    exif[0x0112] = orientation
    upright.transpose(stored[orientation]).save(path, quality=95, exif=exif)


def _picture(h: int = 96, w: int = 64) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // w, y * 255 // h, np.where(y < h // 3, 255, 0)], -1).astype(np.uint8)
    return Image.fromarray(rgb)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int) -> None:
    pic = _picture()
    pic.save(tmp_path / "upright.jpg", quality=95)
    write_rotated_jpeg(pic, tmp_path / "phone.jpg", orientation)
    with Image.open(tmp_path / "phone.jpg") as raw:
        assert raw.size != pic.size or orientation == 3  # stored sideways
    upright, phone = read_image(tmp_path / "upright.jpg"), read_image(tmp_path / "phone.jpg")
    assert phone.shape == upright.shape == (96, 64, 3)
    assert np.abs(phone.astype(int) - upright.astype(int)).mean() < 3
    assert image_size(tmp_path / "phone.jpg") == (96, 64)
    phone[0, 0] = 0  # writable


def test_animate_reads_the_reference_upright(tmp_path: Path) -> None:
    from scail.animate.preprocess import load_reference

    pic = _picture()
    pic.save(tmp_path / "upright.jpg", quality=95)
    write_rotated_jpeg(pic, tmp_path / "phone.jpg")
    a, b = load_reference(tmp_path / "upright.jpg"), load_reference(tmp_path / "phone.jpg")
    assert a.shape == b.shape == (3, 96, 64)
    assert float((a - b).abs().mean()) < 0.03


def test_pose_reads_the_reference_upright(tmp_path: Path) -> None:
    from scail.pose.normalize import load_reference

    pic = _picture()
    pic.save(tmp_path / "upright.jpg", quality=95)
    write_rotated_jpeg(pic, tmp_path / "phone.jpg")
    a, b = load_reference(tmp_path / "upright.jpg", (96, 64)), load_reference(tmp_path / "phone.jpg", (96, 64))
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 3


@pytest.mark.parametrize("content, message", [
    (b"hello, I am text", "not an image file"),
    (b"", "not an image file"),
])
def test_not_an_image(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "ref.jpg"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as err:
        read_image(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_truncated_jpeg(tmp_path: Path) -> None:
    _picture(400, 300).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "ref.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="unreadable image") as err:
        read_image(tmp_path / "ref.jpg")
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "nope.jpg")

"""SCAIL-2 example folders: which files make which mode, clear errors, the official preprocessing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from scail2_cases import H, W, make_example, person_masks

from scail.animate.inputs2 import detect_mode, load_inputs2, locate
from scail.animate.preprocess2 import compress_mask, driving_mask_latent
from scail.errors import InputError
from scail.video import write_video


def test_mode_follows_the_files(tmp_path: Path) -> None:
    assert locate(make_example(tmp_path / "a")).mode == "end-to-end"
    files = locate(make_example(tmp_path / "r", replace=True))
    assert files.mode == "replacement" and files.replace and files.driving_mask.name == "replace_mask.mp4"
    # an official folder: rendered_v2.mp4 only (no driving.mp4)
    files = locate(make_example(tmp_path / "o", raw=False, v2=True))
    assert files.mode == "end-to-end" and files.driving.name == "rendered_v2.mp4"
    # pose-driven: rendered_v2.mp4 (the official skeleton render) wins over the raw video
    files = locate(make_example(tmp_path / "p", v2=True), "pose")
    assert files.driving.name == "rendered_v2.mp4"
    # scail's own skeleton render when there is no rendered_v2.mp4
    ex = make_example(tmp_path / "s")
    (ex.root / "rendered.mp4").write_bytes((ex.root / "driving.mp4").read_bytes())
    assert locate(ex, "pose").driving.name == "rendered.mp4"
    assert detect_mode(ex.root) == "end-to-end"
    files = locate(make_example(tmp_path / "m", extra=2))
    assert [p.name for pair in files.extra_refs for p in pair] == [
        "extra_ref_1.png", "extra_ref_mask_1.png", "extra_ref_2.png", "extra_ref_mask_2.png",
    ]  # fmt: skip
    assert len(files.all()) == 8


def test_missing_files_are_one_clear_error(tmp_path: Path) -> None:
    ex = make_example(tmp_path / "a")
    (ex.root / "rendered_mask_v2.mp4").unlink()
    with pytest.raises(InputError, match=r"needs rendered_mask_v2\.mp4 .*black background"):
        locate(ex)
    with pytest.raises(InputError, match=r"needs replace_mask\.mp4 .*white background"):
        locate(ex, "replacement")
    with pytest.raises(InputError, match="skeleton render"):
        locate(ex, "pose")
    ex = make_example(tmp_path / "m", extra=1)
    (ex.root / "extra_ref_mask_1.png").unlink()
    with pytest.raises(InputError, match=r"extra_ref_1\.png: extra reference 1 has no mask"):
        locate(ex)


def test_load_follows_the_official_resize_path(tmp_path: Path) -> None:
    ex = make_example(tmp_path / "a", frames=11, extra=1)
    inputs = load_inputs2(locate(ex), size_hw=(H, W))
    assert inputs.mode == "end-to-end" and not inputs.replace
    assert inputs.num_frames == 9  # 4k+1 of 11
    assert inputs.driving.shape == (3, 9, H // 2, W // 2)
    assert inputs.ref_mask.shape == (28, 1, H // 8, W // 8)
    # the ref mask (white background: the white plane is on around the identities)
    assert inputs.ref_mask[0].mean() > 0.3 and inputs.ref_mask[3].max() == 1.0
    # the driving mask, compressed, equals the official path on the decoded mask video
    from scail.video import read_frames

    decoded = read_frames(ex.root / "rendered_mask_v2.mp4")[:9]
    assert torch.equal(compress_mask(inputs.driving_mask), driving_mask_latent(decoded, (H, W)))
    assert len(inputs.extra_refs) == 1 and inputs.extra_ref_masks[0].shape == (28, 1, H // 8, W // 8)
    assert inputs.fps == pytest.approx(24)


def test_mask_with_other_frame_count_is_refused(tmp_path: Path) -> None:
    ex = make_example(tmp_path / "a", frames=9)
    write_video(ex.root / "rendered_mask_v2.mp4", person_masks(5, (0, 0, 0)), fps=24)
    with pytest.raises(InputError, match=r"rendered_mask_v2\.mp4 has 5 frames but .*driving\.mp4 has 9"):
        load_inputs2(locate(ex), size_hw=(H, W))

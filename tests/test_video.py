"""Video I/O: round trip, browser-compatible stream, fps resampling, errors; decode + official resize parity."""

from __future__ import annotations

import hashlib
import inspect
import json
import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from scail import video
from scail.errors import InputError
from scail.frame_geometry import resize_crop

ROUND_TRIP_MAX_MEAN_ABS = 3.0
"""crf 18 on smooth synthetic frames gives a mean abs error of about 1.4 per channel value."""


def smooth_frames(n: int, h: int = 64, w: int = 96) -> list[np.ndarray]:
    """Moving gradients: compressible, and every frame differs."""
    yy, xx = np.mgrid[0:h, 0:w]
    return [
        np.stack([(xx * 2 + i * 3) % 256, (yy * 3 + i) % 256, (xx + yy + 5 * i) % 256], -1).astype(np.uint8)
        for i in range(n)
    ]


def index_frames(n: int) -> list[np.ndarray]:
    """Frames showing their index as 8 black/white 16x16 blocks (binary; survives H.264 exactly)."""
    out = []
    for i in range(n):
        bits = np.array([(i >> b) & 1 for b in range(8)], np.uint8) * 255
        out.append(np.repeat(np.repeat(bits[None, :, None], 16, 0), 16, 1).repeat(3, 2))
    return out


def decoded_index(frame: np.ndarray) -> int:
    bits = frame[8, 8::16, :].mean(-1) > 127
    return int(sum(1 << b for b, on in enumerate(bits) if on))


# --- writing and reading --------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [16, 25, Fraction(30000, 1001), 30000 / 1001])
def test_round_trip_exact_count_fps_size(tmp_path: Path, fps: float | Fraction) -> None:
    frames = smooth_frames(20)
    path = tmp_path / "out.mp4"
    video.write_video(path, frames, fps)

    info = video.probe(path)
    back = video.read_frames(path)
    assert info.num_frames == 20
    assert info.fps == pytest.approx(float(fps), abs=1e-9)
    assert (info.width, info.height) == (96, 64)
    assert info.codec == "h264"
    assert info.duration_s == pytest.approx(20 / float(fps), abs=1e-3)
    assert back.shape == (20, 64, 96, 3) and back.dtype == np.uint8
    mean_abs = np.abs(back.astype(np.int16) - np.stack(frames)).mean()
    assert mean_abs < ROUND_TRIP_MAX_MEAN_ABS


def test_written_stream_is_browser_compatible(tmp_path: Path) -> None:
    import av

    path = tmp_path / "out.mp4"
    video.write_video(path, smooth_frames(8), 16)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.profile == "High"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == 16
    data = path.read_bytes()
    assert data[4:8] == b"ftyp"
    moov, mdat = data.find(b"moov"), data.find(b"mdat")
    assert 0 < moov < mdat, "faststart: the moov atom must come before mdat"
    # x264 records its settings in the stream: the short look-ahead that lets the file close soon
    # after the VAE's last frame (bench_video.py's write-behind rows)
    assert b"rc_lookahead=10 " in data


def test_writer_is_atomic_and_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="boom"), video.VideoWriter(path, 16) as writer:
        writer.write(smooth_frames(1)[0])
        assert not path.exists(), "the target must not appear before a successful close"
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []

    with video.VideoWriter(path, 16) as writer:
        for frame in smooth_frames(3):
            writer.write(frame)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_writer_non_atomic_writes_given_path(tmp_path: Path) -> None:
    path = tmp_path / ".out.tmp-1.mp4"  # what StageContext.atomic_output hands out
    with video.VideoWriter(path, 16, atomic=False) as writer:
        for frame in smooth_frames(3):
            writer.write(frame)
    assert [p.name for p in tmp_path.iterdir()] == [".out.tmp-1.mp4"]
    assert video.probe(path).num_frames == 3


def test_writer_rejects_bad_frames(tmp_path: Path) -> None:
    with video.VideoWriter(tmp_path / "a.mp4", 16) as writer:
        with pytest.raises(ValueError, match="uint8"):
            writer.write(np.zeros((8, 8, 3), np.float32))
        writer.write(np.zeros((8, 8, 3), np.uint8))
        with pytest.raises(ValueError, match=r"expected \(8, 8\)"):
            writer.write(np.zeros((8, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="no frames"), video.VideoWriter(tmp_path / "b.mp4", 16):
        pass
    assert not (tmp_path / "b.mp4").exists()


def test_odd_size_is_padded_to_even(tmp_path: Path) -> None:
    frames = [f[:63, :95] for f in smooth_frames(4)]
    path = tmp_path / "odd.mp4"
    video.write_video(path, frames, 16)
    back = video.read_frames(path)
    assert back.shape == (4, 64, 96, 3)
    assert np.abs(back[:, :63, :95].astype(np.int16) - np.stack(frames)).mean() < ROUND_TRIP_MAX_MEAN_ABS


def test_rotation_metadata_is_applied(tmp_path: Path) -> None:
    import av

    path = tmp_path / "phone.mp4"
    frame = np.zeros((32, 64, 3), np.uint8)
    frame[:8, :8] = 255  # white block top-left
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=16)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(90)  # counter-clockwise, as phones store portrait clips
        for i in range(2):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            container.mux(stream.encode(vf))
        container.mux(stream.encode(None))

    info = video.probe(path)
    assert (info.width, info.height, info.rotation_deg) == (32, 64, 90)
    shown = video.read_frames(path)[0]
    assert shown.shape == (64, 32, 3)
    assert shown[-4, 4].min() > 200 and shown[4, 4].max() < 50  # the block turned to the bottom left


# --- resampling and streaming ---------------------------------------------------------------------


def test_resample_30_to_16_fps_keeps_speed(tmp_path: Path) -> None:
    path = tmp_path / "30fps.mp4"
    video.write_video(path, index_frames(90), 30)  # 3.0 s

    out = video.read_frames(path, fps=16)
    assert len(out) == 48  # k / 16 < 3.0 s
    picked = [decoded_index(f) for f in out]
    # nearest source frame to t = k/16, ties (k = 4, 12, ...) to the later one
    expected = [int(np.floor(k * 30 / 16 + 0.5)) for k in range(48)]
    assert picked == expected

    assert len(video.read_frames(path, fps=16, max_frames=10)) == 10
    same = [decoded_index(f) for f in video.iter_frames(path, fps=30)]
    assert same == list(range(90))


def test_resample_upsampling_repeats_frames(tmp_path: Path) -> None:
    path = tmp_path / "8fps.mp4"
    video.write_video(path, index_frames(8), 8)  # 1.0 s
    picked = [decoded_index(f) for f in video.iter_frames(path, fps=16)]
    assert picked == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 7]


def test_iter_frames_streams_lazily(tmp_path: Path) -> None:
    path = tmp_path / "long.mp4"
    frames = smooth_frames(60, 256, 448)  # 60 x 344 KB = 20 MB decoded
    video.write_video(path, frames, 16)
    del frames

    gen = video.iter_frames(path)
    assert inspect.isgenerator(gen)
    tracemalloc.start()
    try:
        count = sum(1 for _ in gen)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 60
    assert peak < 4 * 256 * 448 * 3, f"peak {peak} B: frames are being accumulated"


# --- errors ---------------------------------------------------------------------------------------


def test_bad_files_raise_one_line_input_error(tmp_path: Path) -> None:
    good = tmp_path / "good.mp4"
    video.write_video(good, smooth_frames(10), 16)
    data = good.read_bytes()
    cases = {
        "text.mp4": b"hello, this is not a video\n",
        "empty.mp4": b"",
        "truncated.mp4": data[: len(data) // 2],
        "header_only.mp4": data[:200],
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        for fn in (video.probe, video.read_frames):
            with pytest.raises(InputError) as err:
                fn(path)
            msg = str(err.value)
            assert str(path) in msg and "\n" not in msg, msg
            assert "video" in msg
    with pytest.raises(InputError, match=r"not a readable video \(empty file\); re-encode"):
        video.probe(tmp_path / "empty.mp4")
    with pytest.raises(InputError, match="not found"):
        video.read_frames(tmp_path / "missing.mp4")
    with pytest.raises(InputError, match="empty file"):
        video.iter_frames(tmp_path / "empty.mp4")  # raised at the call, before iterating


def test_audio_only_file_has_no_video_stream(tmp_path: Path) -> None:
    import av

    path = tmp_path / "voice.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(InputError, match="no video stream"):
        video.probe(path)


# --- official resize + crop on the decoded fixture frames (scail.frame_geometry) -----------------------------------------------------------------------


def test_resize_crop_matches_official_pipeline_fixture(fixtures_root: Path) -> None:
    """Decode frames 0..8 of examples/001/rendered.mp4 and the ref image as the official code did."""
    import torch
    from PIL import Image
    from safetensors.torch import load_file

    fixture_dir = fixtures_root / "scail" / "pipeline"
    example = Path(__file__).resolve().parents[1] / ".." / "shared" / "examples" / "001"
    if not (example / "rendered.mp4").is_file():
        pytest.skip(f"{example} (third-party example video, kept outside the repository) is absent")
    config = json.loads((fixture_dir / "config.json").read_text())
    inputs = load_file(str(fixture_dir / "inputs.safetensors"))

    frames = video.read_frames(example / "rendered.mp4", max_frames=9)
    sha = hashlib.sha256(frames.tobytes()).hexdigest()
    assert sha == config["inputs"]["pose_video"]["decoded_first9_uint8_thwc_sha256"]  # same bytes as decord
    pose = resize_crop(frames, (64, 128))
    expected = inputs["pose_frames_uint8_resized_tchw"].permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(pose, expected)  # bit-exact

    rgb = np.array(Image.open(example / "ref.jpg").convert("RGB"))
    assert (
        hashlib.sha256(rgb.tobytes()).hexdigest()
        == config["inputs"]["reference_image"]["decoded_rgb_uint8_hwc_sha256"]
    )
    ref = (
        torch.from_numpy(rgb).permute(2, 0, 1).contiguous().float().div(255) * 2 - 1
    )  # official ToTensor, *2-1
    ref = resize_crop(ref, (64, 128))
    assert torch.equal(ref, inputs["ref_image_chw"])  # bit-exact, no clamp


# --- writing behind the caller ----------------------------------------------------------------------


def test_write_behind_writes_every_frame_in_order(tmp_path: Path) -> None:
    """Pieces queued from the caller's thread are encoded in order by the writer thread, each frame
    handed to `on_frame` (the animate stage's frame hash)."""
    frames = index_frames(21)
    seen: list[int] = []
    out = tmp_path / "behind.mp4"
    with video.VideoWriter(out, fps=16) as writer, video.WriteBehind(writer, on_frame=lambda f: seen.append(
            decoded_index(f))) as behind:
        for start in range(0, 21, 4):
            behind.put(np.stack(frames[start : start + 4]))
    assert seen == list(range(21))
    assert [decoded_index(f) for f in video.read_frames(out)] == list(range(21))
    assert behind.encode_s > 0


def test_write_behind_raises_the_writer_threads_error_and_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "bad.mp4"
    # the error surfaces on a later put or on leaving the block
    with (
        pytest.raises(ValueError, match="expected"),
        video.VideoWriter(out, fps=16) as writer,
        video.WriteBehind(writer, depth=1) as behind,
    ):
        behind.put(np.zeros((2, 16, 16, 3), np.uint8))
        behind.put(np.zeros((2, 16, 16), np.uint8))  # not RGB: the thread's write fails
        for _ in range(5):
            behind.put(np.zeros((2, 16, 16, 3), np.uint8))
    assert not out.exists() and not list(tmp_path.iterdir())


def test_write_behind_stops_without_waiting_when_the_caller_fails(tmp_path: Path) -> None:
    out = tmp_path / "stopped.mp4"
    with (
        pytest.raises(KeyboardInterrupt),
        video.VideoWriter(out, fps=16) as writer,
        video.WriteBehind(writer) as behind,
    ):
        behind.put(np.stack(index_frames(4)))
        raise KeyboardInterrupt
    assert not behind._thread.is_alive()
    assert not out.exists() and not list(tmp_path.iterdir())

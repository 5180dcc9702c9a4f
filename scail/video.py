"""Video I/O: probe, streaming decode with fps resampling, H.264 writing.

Decoding uses PyAV (FFmpeg). On the shipped examples it gives the same RGB bytes as decord, which
the official code uses (checked against the pipeline fixture's sha256), it streams frame by frame
(bounded memory) and it was faster than decord here (benchmarks/bench_video.py). Rotation metadata
(phone videos) is applied, so frames come out the way a player shows them; the official decord
path ignores it, which only matters for rotated inputs.

Writing produces browser-playable MP4: H.264 (libx264, High profile), yuv420p, `movflags=faststart`
(the moov atom before the media data), the frame rate stored as an exact fraction.

Heavy modules (av) are imported inside the functions that use them. The official frame geometry
(output sizes, resize + centre crop, 4n+1 frame counts) is `scail.frame_geometry`.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from scail.atomic import commit, temp_path
from scail.errors import InputError

log = logging.getLogger(__name__)

_REENCODE_HINT = "re-encode it, e.g. ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4"


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` learns about a video's first video stream (sizes as displayed, after rotation)."""

    path: Path
    num_frames: int
    """From the container header when it has one (MP4, MOV), else by counting packets."""
    fps: float
    """Average frame rate (frames / duration for variable-rate phone clips)."""
    width: int
    height: int
    duration_s: float
    codec: str
    rotation_deg: int = 0
    """Counter-clockwise display rotation from the file's metadata; already applied to width/height."""


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------


def _unreadable(path: Path, why: str) -> InputError:
    return InputError(f"{path}: not a readable video ({why}); {_REENCODE_HINT}")


def _open(path: Path) -> Any:
    """Open `path` with PyAV, turning every failure into a one-line `InputError`."""
    import av

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: video file not found; check the path")
    if path.stat().st_size == 0:
        raise _unreadable(path, "empty file")
    try:
        container = av.open(str(path), "r")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise _unreadable(path, _short(exc)) from exc
    if not container.streams.video:
        container.close()
        raise InputError(
            f"{path}: no video stream (audio-only or truncated?); give a video file such as an MP4"
        )
    return container


def _short(exc: BaseException) -> str:
    """The first line of an exception's message, without FFmpeg's path echo."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return re.sub(r"^\[Errno -?\d+\] ", "", text.split(": '", 1)[0])


def _stream_fps(stream: Any) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else Fraction(0)


def _frame_rgb(frame: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded frame, rotated as the display matrix says."""
    rgb = frame.to_ndarray(format="rgb24")
    quarter_turns = round((frame.rotation or 0) / 90) % 4
    if quarter_turns:
        rgb = np.ascontiguousarray(np.rot90(rgb, k=quarter_turns))
    return rgb


def _decoded(container: Any, path: Path) -> Iterator[tuple[Fraction | None, Any]]:
    """Yield (time since stream start in seconds, or None when the frame has no pts; frame)."""
    import av

    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    start = stream.start_time or 0
    tb = stream.time_base
    index = 0
    try:
        for frame in container.decode(stream):
            t = None if frame.pts is None or tb is None else Fraction(frame.pts - start) * Fraction(tb)
            yield t, frame
            index += 1
    except av.FFmpegError as exc:
        raise _unreadable(path, f"decoding failed after {index} frames: {_short(exc)}") from exc


def probe(path: Path) -> VideoInfo:
    """Read a video's frame count, fps, display size, duration and codec (decodes one frame to check it)."""
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        fps = _stream_fps(stream)
        first = next((frame for _, frame in _decoded(container, path)), None)
        if first is None:
            raise _unreadable(path, "no decodable frames")
        rotation = round((first.rotation or 0) / 90) % 4 * 90
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width
        duration = _duration(container)
        duration_s = float(duration) if duration is not None else 0.0
        num_frames = stream.frames or _count_packets(path)
        if not duration_s and fps:
            duration_s = num_frames / float(fps)
        if not fps and duration_s:
            fps = Fraction(num_frames / duration_s).limit_denominator(1001)
        return VideoInfo(
            path=path,
            num_frames=int(num_frames),
            fps=float(fps),
            width=width,
            height=height,
            duration_s=duration_s,
            codec=stream.codec_context.name,
            rotation_deg=rotation,
        )
    finally:
        container.close()


def _count_packets(path: Path) -> int:
    """Count video packets without decoding (containers such as WebM store no frame count)."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size)
    finally:
        container.close()


def iter_frames(path: Path, fps: float | None = None, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Stream a video's frames as (H, W, 3) uint8 RGB arrays, one decoded frame in memory at a time.

    Args:
        path: any file FFmpeg reads.
        fps: output frame rate. None keeps every source frame. Otherwise output frame k shows the
            source frame whose timestamp is nearest to k / fps (ties go to the later frame), for
            k = 0, 1, ... while k / fps < duration, so the clip keeps its speed: 3 s at 30 fps
            become 48 frames at 16 fps.
        max_frames: stop after this many output frames.

    Raises:
        InputError: missing, empty, corrupt or non-video file, or a video with no frames.
    """
    path = Path(path)
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    container = _open(path)  # eager: a missing or unreadable file fails here, not at the first next()
    return _stream_frames(container, path, fps, max_frames)


def _stream_frames(
    container: Any, path: Path, fps: float | None, max_frames: int | None
) -> Iterator[np.ndarray]:
    try:
        frames = _decoded(container, path)
        if fps is None:
            out = _all_frames(frames)
        else:
            out = _resampled(frames, Fraction(fps).limit_denominator(1_000_000), _duration(container))
        n = 0
        for n, frame in enumerate(out, start=1):
            yield frame
            if max_frames is not None and n >= max_frames:
                return
        if n == 0:
            raise _unreadable(path, "no decodable frames")
    finally:
        container.close()


def _all_frames(frames: Iterator[tuple[Fraction | None, Any]]) -> Iterator[np.ndarray]:
    for _, frame in frames:
        yield _frame_rgb(frame)


def _duration(container: Any) -> Fraction | None:
    stream = container.streams.video[0]
    if stream.duration and stream.time_base:
        return Fraction(stream.duration) * Fraction(stream.time_base)
    if container.duration:
        return Fraction(container.duration, 1_000_000)
    return None


def _resampled(
    frames: Iterator[tuple[Fraction | None, Any]], fps: Fraction, duration: Fraction | None
) -> Iterator[np.ndarray]:
    """Nearest-timestamp resampling of a decoded stream to `fps` (see `iter_frames`).

    Source frame i owns the output times in [midpoint(t[i-1], t[i]), midpoint(t[i], t[i+1])), so it
    is emitted once its successor's time is known; the last frame owns the rest up to `duration`.
    """
    k = 0
    prev: Any = None
    prev_t = Fraction(0)
    step = 1 / fps  # fallback frame spacing for frames without a pts
    for t, frame in frames:
        if t is None:
            t = Fraction(0) if prev is None else prev_t + step
        if prev is not None:
            if t > prev_t:
                step = t - prev_t
            boundary = (prev_t + t) / 2
            if duration is not None:
                boundary = min(boundary, duration)
            while k / fps < boundary:
                yield _frame_rgb(prev)
                k += 1
        prev, prev_t = frame, t
    if prev is None:
        return
    end = duration if duration is not None and duration > prev_t else prev_t + step
    while k / fps < end:
        yield _frame_rgb(prev)
        k += 1


def read_frames(path: Path, fps: float | None = None, max_frames: int | None = None) -> np.ndarray:
    """All frames (after resampling) as one (N, H, W, 3) uint8 array; see `iter_frames`."""
    return np.stack(list(iter_frames(path, fps=fps, max_frames=max_frames)))


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------


class VideoWriter:
    """Write RGB frames to a browser-playable MP4 (H.264 High, yuv420p, faststart), atomically.

    With `atomic=True` the frames go to a hidden temp file beside `path`, which is renamed onto
    `path` only when the block exits without an exception; otherwise the temp file is deleted.
    Inside `StageContext.atomic_output` (already a temp path) `atomic=False` avoids a second temp;
    leaving it on is harmless. The container is always MP4, whatever the suffix.

    Odd frame sizes (yuv420p needs even ones) are padded by one replicated row/column at the
    bottom/right, with a warning; the file is then one pixel larger than the frames.

    Example:
        with VideoWriter(out, fps=16) as w:
            for frame in frames:  # (H, W, 3) uint8 RGB
                w.write(frame)
    """

    def __init__(
        self, path: Path, fps: float | Fraction, crf: int = 18, preset: str = "medium", atomic: bool = True,
        metadata: dict[str, str] | None = None, lookahead: int = 10,
    ) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.lookahead = lookahead
        """x264's rc-lookahead in frames (its default is 40): the frames held back until the file closes."""
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001) if isinstance(fps, float) else Fraction(fps)
        self.crf = crf
        self.preset = preset
        self.atomic = atomic
        self.metadata = dict(metadata or {})
        """Container tags (title, comment, ...; other keys are kept too), read back by `read_metadata`."""
        self.frames_written = 0
        self._target = self.path
        self._container: Any = None
        self._stream: Any = None
        self._size_hw: tuple[int, int] | None = None

    def __enter__(self) -> VideoWriter:
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.atomic:
            self._target = temp_path(self.path)
        # use_metadata_tags: keep keys MP4 has no atom for (the sample's fingerprint, seed, ...)
        self._container = av.open(str(self._target), "w", format="mp4",
                                  options={"movflags": "+faststart+use_metadata_tags"})
        self._container.metadata.update(self.metadata)
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame; every frame must have the first frame's size."""
        import av

        if self._container is None:
            raise RuntimeError("VideoWriter.write called outside its `with` block")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
        if self._stream is None:
            self._open_stream(frame.shape[0], frame.shape[1])
        if frame.shape[:2] != self._size_hw:
            raise ValueError(f"frame {self.frames_written} is {frame.shape[:2]}, expected {self._size_hw}")
        frame = _pad_even(frame)
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = self.frames_written
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames_written += 1

    def _open_stream(self, h: int, w: int) -> None:
        if h % 2 or w % 2:
            log.warning(
                "%s: frame size %dx%d is odd; padding to %dx%d for yuv420p",
                self.path,
                w,
                h,
                w + w % 2,
                h + h % 2,
            )
        self._size_hw = (h, w)
        stream = self._container.add_stream("libx264", rate=self.fps)
        stream.width, stream.height = w + w % 2, h + h % 2
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = 1 / self.fps
        # x264's default look-ahead of 40 frames holds half a clip back until the file is closed, so
        # that much encoding waits for the VAE's last frame; 10 shortens that tail (bench_video.py's
        # write-behind rows in benchmarks/README.md)
        stream.options = {"crf": str(self.crf), "preset": self.preset, "profile": "high",
                          "x264-params": f"rc-lookahead={self.lookahead}"}
        self._stream = stream

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        container, self._container = self._container, None
        if exc_type is None and self.frames_written == 0:
            exc_type = ValueError
            error: BaseException | None = ValueError(f"{self.path}: no frames were written")
        else:
            error = None
        try:
            if exc_type is None:
                for packet in self._stream.encode(None):
                    container.mux(packet)
            container.close()
        except BaseException:
            self._discard(container)
            raise
        if exc_type is not None:
            self._discard(container)
            if error is not None:
                raise error
            return
        if self.atomic:
            commit(self._target, self.path)

    def _discard(self, container: Any) -> None:
        with contextlib.suppress(Exception):
            container.close()
        with contextlib.suppress(FileNotFoundError):
            self._target.unlink()


class WriteBehind:
    """Encode frames on a background thread while the caller makes the next ones (the VAE decode).

    H.264 encoding (libx264 and PyAV release the GIL) then overlaps the GPU's decode instead of
    following it: the animate stage's last seconds shrink by the encoding time. At most `depth`
    pieces wait in the queue, so memory stays bounded. An error in the thread is raised by the next
    `put` or by leaving the block; leaving with an error stops the thread without waiting for the rest.

    Example:
        with VideoWriter(out, fps=16) as w, WriteBehind(w) as behind:
            for piece in pieces:  # (n, H, W, 3) uint8
                behind.put(piece)
    """

    def __init__(
        self, writer: VideoWriter, on_frame: Callable[[np.ndarray], None] | None = None, depth: int = 2
    ) -> None:
        self.writer = writer
        self.on_frame = on_frame
        self.encode_s = 0.0
        """Seconds the thread spent encoding (hidden behind the caller's work where they overlapped)."""
        self.wait_s = 0.0
        """Seconds `put` waited for room in the queue (the encoding the caller's work did not hide;
        add the time of leaving the block, which waits for the last pieces)."""
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="scail-video-writer", daemon=True)

    def _drain(self) -> None:
        while (piece := self._queue.get()) is not None:
            if self._error is not None or self._stop.is_set():
                continue  # keep taking pieces so that `put` never blocks forever
            t0 = time.perf_counter()
            try:
                for frame in piece:
                    self.writer.write(frame)
                    if self.on_frame is not None:
                        self.on_frame(frame)
            except BaseException as exc:  # handed to the caller's thread
                self._error = exc
            self.encode_s += time.perf_counter() - t0

    def __enter__(self) -> WriteBehind:
        self._thread.start()
        return self

    def put(self, frames: np.ndarray) -> None:
        """Queue (n, H, W, 3) uint8 frames; waits while `depth` pieces are already queued."""
        if self._error is not None:
            raise self._error
        t0 = time.perf_counter()
        self._queue.put(frames)
        self.wait_s += time.perf_counter() - t0

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self._stop.set()
        self._queue.put(None)
        self._thread.join()
        if exc_type is None and self._error is not None:
            raise self._error


def _pad_even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def read_metadata(path: Path) -> dict[str, str]:
    """The container tags of a video (what `VideoWriter(metadata=...)` wrote)."""
    container = _open(Path(path))
    try:
        return {str(k): str(v) for k, v in container.metadata.items()}
    finally:
        container.close()


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float | Fraction, crf: int = 18) -> None:
    """Write (H, W, 3) uint8 RGB frames to `path` atomically; see `VideoWriter`."""
    with VideoWriter(path, fps, crf=crf) as writer:
        for frame in frames:
            writer.write(frame)


__all__ = [
    "VideoInfo",
    "VideoWriter",
    "iter_frames",
    "probe",
    "read_frames",
    "write_video",
]

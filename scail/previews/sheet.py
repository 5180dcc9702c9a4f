"""The 2D previews: the contact sheet, the skeleton overlay video and the side-by-side video.

Everything is read from files already on disk: the driving video is cut as the pose stage saw it
(`scail.pose.normalize.iter_driving`: same fps, time range and crop box; OpenCV resampling, which
is faster than the official bicubic and needs no torch), so the 2D points of `.scail/pose.npz`
land on the person; the reference goes through `scail.images` (EXIF orientation applied) and the
same crop as the reference pose. The skeleton is drawn with the
render stage's bones and official colours (scail/render/skeleton.py), larger than the condition
video's thin marks so it reads at preview size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from scail.example import Example

if TYPE_CHECKING:
    from scail.config import PoseConfig
    from scail.pose.schema import PoseData

VIDEO_LONG_SIDE = 640
"""Overlay video frames are at most this many pixels on their long side (cheap to write and view)."""
SHEET_TILE_H = 240
"""Contact sheet tile height in pixels."""
SHEET_FRAMES = 4
"""Driving / condition frames shown on the contact sheet."""
SIDE_BY_SIDE_H = 448
"""Panel height of the side-by-side video (at most the sample's own height)."""
PREVIEW_CRF = 23


# ----------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------


def draw_skeleton(img: np.ndarray, pose: PoseData, t: int) -> np.ndarray:
    """Draw frame `t`'s 2D skeleton (body bones in the official colours, head, hands, face dots)
    over `img` (H, W, 3) uint8 RGB of any size (the points are x/W, y/H); returns `img`."""
    import cv2

    from scail.render.overlay import visible
    from scail.render.skeleton import (
        BODY_SCORE_MIN,
        BONES,
        FACE_DOTS,
        HAND_EDGES,
        HEAD_LINE_COLORS,
        HEAD_LINES,
        PART_SCORE_MIN,
        hand_edge_colors,
        palettes_for,
    )

    h, w = img.shape[:2]
    thick = max(2, round(min(h, w) / 120))
    scale = np.array([w, h], dtype=np.float64)
    hand_colors = hand_edge_colors()

    def px(p: np.ndarray) -> tuple[int, int]:
        return round(float(p[0] * scale[0])), round(float(p[1] * scale[1]))

    for person, palette in enumerate(palettes_for(pose.num_people)):
        body = pose.body2d[t, person]
        vis = visible(body, BODY_SCORE_MIN, strict=True)
        for b, (i, j) in enumerate(BONES):
            if vis[i] and vis[j]:
                cv2.line(img, px(body[i]), px(body[j]), palette[b], thick, cv2.LINE_AA)
        for (i, j), color in zip(HEAD_LINES, HEAD_LINE_COLORS, strict=True):
            if vis[i] and vis[j]:
                cv2.line(img, px(body[i]), px(body[j]), color, max(1, thick // 2), cv2.LINE_AA)
        for k in np.flatnonzero(vis[:14]):
            cv2.circle(img, px(body[k]), thick, (255, 255, 255), -1, cv2.LINE_AA)
        for hand in pose.hands2d[t, person]:
            hv = visible(hand, PART_SCORE_MIN, strict=False)
            for (i, j), hand_color in zip(HAND_EDGES, hand_colors, strict=True):
                if hv[i] and hv[j]:
                    cv2.line(img, px(hand[i]), px(hand[j]), tuple(int(c) for c in hand_color), max(1, thick // 2),
                             cv2.LINE_AA)
        face = pose.face2d[t, person]
        fv = visible(face, PART_SCORE_MIN, strict=False)
        for i in FACE_DOTS:
            if fv[i]:
                cv2.circle(img, px(face[i]), max(1, thick // 2), (255, 255, 255), -1, cv2.LINE_AA)
    return img


def fit(frame: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """A new array: `frame` resized to exactly `size_hw` (area filter when shrinking)."""
    import cv2

    h, w = size_hw
    if frame.shape[:2] == (h, w):
        return np.array(frame, dtype=np.uint8, copy=True)
    shrink = h < frame.shape[0]
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def size_for_height(size_hw: tuple[int, int], height: int) -> tuple[int, int]:
    """(height, width) keeping the aspect of `size_hw`, both even (H.264's yuv420p needs even sizes)."""
    h, w = size_hw
    height -= height % 2
    width = max(2, round(w * height / h))
    return height, width + width % 2


def label(tile: np.ndarray, text: str) -> np.ndarray:
    """Write `text` in the top-left corner of `tile` on a dark band; returns `tile`."""
    import cv2

    font, fs = cv2.FONT_HERSHEY_SIMPLEX, 0.4
    (tw, th), base = cv2.getTextSize(text, font, fs, 1)
    cv2.rectangle(tile, (0, 0), (min(tile.shape[1] - 1, tw + 6), th + base + 4), (0, 0, 0), -1)
    cv2.putText(tile, text, (3, th + 3), font, fs, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def placeholder(size_hw: tuple[int, int], text: str) -> np.ndarray:
    tile = np.full((*size_hw, 3), 48, dtype=np.uint8)
    return label(tile, text)


def condition_over(reference: np.ndarray, condition: np.ndarray) -> np.ndarray:
    """The condition's skeleton pasted over a dimmed reference (both the same size)."""
    drawn = condition.max(axis=-1) > 24
    out = (reference.astype(np.float32) * 0.55).astype(np.uint8)
    mixed = condition.astype(np.float32) * 0.8 + reference.astype(np.float32) * 0.2
    out[drawn] = mixed[drawn].astype(np.uint8)
    return out


# ----------------------------------------------------------------------------------------------
# Reading what the stages left
# ----------------------------------------------------------------------------------------------


def cover_crop(frame: np.ndarray, size_hw: tuple[int, int], out_hw: tuple[int, int] | None = None) -> np.ndarray:
    """The official cover-resize + centre crop to `size_hw` (`frame_geometry.resize_crop`: the same
    box), resampled straight to `out_hw` with OpenCV: a preview needs the geometry, not the official
    bicubic pixels, and this is many times faster than the exact path."""
    from scail.frame_geometry import _cover_size

    h0, w0 = frame.shape[:2]
    h, w = size_hw
    ch, cw = _cover_size(h0, w0, size_hw)  # the covering size; the crop is (h, w) of it, centred
    sy, sx = h0 / ch, w0 / cw
    top, left = (ch - h) // 2, (cw - w) // 2
    y0, y1 = round(top * sy), min(h0, round((top + h) * sy))
    x0, x1 = round(left * sx), min(w0, round((left + w) * sx))
    return fit(frame[y0:y1, x0:x1], out_hw or size_hw)


def driving_frames(example: Example, pose: PoseData, cfg: PoseConfig,
                   out_hw: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """The driving frames the pose stage saw (pose.fps, the same time range and crop as
    `scail.pose.normalize.iter_driving`), at `out_hw` (default: pose.size). As many as the pose data
    has: it may be user-provided, made with other settings."""
    import itertools

    from scail.pose.normalize import frame_range
    from scail.video import iter_frames

    size = (int(pose.size[0]), int(pose.size[1]))
    first, stop = frame_range(pose.fps, pose.num_frames, cfg.start_s, None)
    for frame in itertools.islice(iter_frames(example.driving(), fps=pose.fps, max_frames=stop), first, None):
        yield cover_crop(frame, size, out_hw)


def reference_frame(example: Example, size_hw: tuple[int, int], out_hw: tuple[int, int] | None = None) -> np.ndarray:
    """The reference (upright: scail.images) cropped as the reference pose saw it, at `out_hw`."""
    from scail.images import read_image

    return cover_crop(read_image(example.reference()), size_hw, out_hw)


def pick(frames: Iterable[np.ndarray], indices: Iterable[int]) -> dict[int, np.ndarray]:
    """The frames at `indices` from a stream (stops reading after the last one)."""
    wanted = set(indices)
    out: dict[int, np.ndarray] = {}
    if not wanted:
        return out
    last = max(wanted)
    for i, frame in enumerate(frames):
        if i in wanted:
            out[i] = frame
        if i >= last:
            break
    return out


def sheet_indices(num_frames: int, count: int = SHEET_FRAMES) -> list[int]:
    """`count` frame indices spread over the clip, first and last included."""
    if num_frames <= 0:
        return []
    return sorted({round(x) for x in np.linspace(0, num_frames - 1, min(count, num_frames))})


# ----------------------------------------------------------------------------------------------
# The previews
# ----------------------------------------------------------------------------------------------


def write_overlay(example: Example, cfg: PoseConfig, path: Path, sig: str) -> None:
    """previews/overlay.mp4: the normalised driving video with the 2D skeleton over it."""
    from scail.pose.schema import load_pose
    from scail.previews import SIGNATURE_KEY
    from scail.video import VideoWriter

    pose = load_pose(example.pose_data)
    h, w = pose.size
    out_hw = size_for_height((h, w), min(h, round(h * VIDEO_LONG_SIDE / max(h, w))))
    with VideoWriter(path, pose.fps, crf=PREVIEW_CRF, preset="veryfast", metadata={SIGNATURE_KEY: sig}) as writer:
        for t, frame in zip(range(pose.num_frames), driving_frames(example, pose, cfg, out_hw), strict=False):
            writer.write(draw_skeleton(frame, pose, t))


def write_contact_sheet(example: Example, cfg: PoseConfig, path: Path, sig: str) -> None:
    """previews/contact_sheet.jpg: row 1 reference | driving frames with the skeleton; row 2 the
    aligned condition over the reference | the condition frames (what animate reads)."""
    from PIL import Image

    from scail.atomic import atomic_path
    from scail.pose.schema import load_pose
    from scail.previews import SIGNATURE_KEY
    from scail.video import iter_frames

    pose = load_pose(example.pose_data)
    size = (int(pose.size[0]), int(pose.size[1]))
    tile_hw = size_for_height(size, SHEET_TILE_H)
    idx = sheet_indices(pose.num_frames)
    ref = reference_frame(example, size, tile_hw) if example.find_reference() is not None else None
    ref_tile = label(fit(ref, tile_hw), "reference") if ref is not None else placeholder(tile_hw, "no reference")

    row1 = [ref_tile]
    if example.find_driving() is not None:
        picked = pick(driving_frames(example, pose, cfg, tile_hw), idx)
        row1 += [label(draw_skeleton(fit(picked[i], tile_hw), pose, i), f"driving {i}") if i in picked
                 else placeholder(tile_hw, f"driving {i}: none") for i in idx]
    else:
        row1 += [label(draw_skeleton(placeholder(tile_hw, ""), pose, i), f"pose {i}") for i in idx]

    cond_path = example.pose_video()
    if cond_path is None:
        row2 = [placeholder(tile_hw, "not rendered yet")] + [placeholder(tile_hw, "not rendered yet") for _ in idx]
    else:
        cond = pick(iter_frames(cond_path), [0, *idx])
        name = cond_path.stem
        first = cond.get(0)
        if ref is not None and first is not None:
            over = condition_over(fit(ref, tile_hw), fit(first, tile_hw))
            over_tile = label(over, "aligned over reference" if name == "rendered_aligned" else
                              "condition over reference")
        else:
            over_tile = placeholder(tile_hw, "no reference")
        row2 = [over_tile] + [label(fit(cond[i], tile_hw), f"{name} {i}") if i in cond
                              else placeholder(tile_hw, f"{name} {i}: none") for i in idx]
    width = max(len(row1), len(row2))
    rows = [np.concatenate(r + [placeholder(tile_hw, "")] * (width - len(r)), axis=1) for r in (row1, row2)]
    sheet = np.concatenate(rows, axis=0)
    with atomic_path(path) as tmp:
        Image.fromarray(sheet).save(tmp, format="JPEG", quality=85, comment=f"{SIGNATURE_KEY}={sig}".encode())


def write_side_by_side(example: Example, cfg: PoseConfig, path: Path, sig: str) -> None:
    """previews/side_by_side.mp4: driving | condition | the newest sample, frame by frame."""
    from scail.outputs import latest_path
    from scail.pose.schema import load_pose
    from scail.previews import SIGNATURE_KEY
    from scail.video import VideoWriter, iter_frames, probe

    sample = latest_path(example)
    cond_path = example.pose_video()
    if cond_path is None:
        raise FileNotFoundError(f"{example.root}: no condition video")
    info = probe(sample)
    cond_info = probe(cond_path)
    panel_h = min(max(info.height, cond_info.height), SIDE_BY_SIDE_H)
    streams: list[tuple[str, Iterator[np.ndarray], tuple[int, int]]] = []
    if example.find_driving() is not None:
        if example.pose_data.is_file():
            pose = load_pose(example.pose_data)
            drv_hw = size_for_height((int(pose.size[0]), int(pose.size[1])), panel_h)
            drv: Iterator[np.ndarray] = driving_frames(example, pose, cfg, drv_hw)
        else:
            cond_hw = (cond_info.height, cond_info.width)
            drv_hw = size_for_height(cond_hw, panel_h)
            drv = (cover_crop(f, cond_hw, drv_hw) for f in iter_frames(example.driving(), fps=info.fps))
        streams.append(("driving", drv, drv_hw))
    streams.append(("condition", iter_frames(cond_path), size_for_height((cond_info.height, cond_info.width), panel_h)))
    streams.append(("result", iter_frames(sample), size_for_height((info.height, info.width), panel_h)))
    with VideoWriter(path, info.fps, crf=PREVIEW_CRF, preset="veryfast", metadata={SIGNATURE_KEY: sig}) as writer:
        for frames in zip(*(s[1] for s in streams), strict=False):
            panels = [label(fit(f, hw), name) for f, (name, _, hw) in zip(frames, streams, strict=True)]
            writer.write(np.concatenate(panels, axis=1))

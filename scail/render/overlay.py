"""The official 2D overlay: head lines and dots, DWPose hands and face dots, painted with OpenCV.

Reproduces SCAIL-Pose `draw_pose(show_body=False, show_cheek=True, dw_hand=True, optimized_face=True)`
and the compositing of `render_nlf_as_images` (research/scail-pose.md §3.4):

* each person is drawn on a fresh black canvas: head ellipses, canvas * 0.6 (truncated), head dots
  (radius 4), hand edges and dots, face dots;
* the person canvases are summed as uint8 (wrapping on overlap);
* the sum replaces the frame per channel where it is non-zero.

Pixel coordinates are `int(x * W)`, `int(y * H)` (truncation); hands and face points are drawn only
when both are > 0.01, as in the official code.

`draw_overlay` paints one frame with OpenCV, call by call: it is the reference. `overlay_marks`
computes the same pixels for many frames at once, vectorised, as `OverlayMarks` (sparse channel
writes) that need no 3D frame: the render pipeline computes them while the 3D pass runs, then
pastes them (tests/render/test_overlay.py checks both are bit-identical).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from scail.render.skeleton import (
    BODY_SCORE_MIN,
    FACE_DOTS,
    HAND_EDGES,
    HEAD_DOT_COLORS,
    HEAD_DOTS,
    HEAD_LINE_COLORS,
    HEAD_LINES,
    PART_SCORE_MIN,
    hand_edge_colors,
)

_EPS = 0.01
_HEAD_HALF_WIDTH_PX = 4
_HEAD_DOT_RADIUS_PX = 4


def visible(points: np.ndarray, min_score: float, strict: bool) -> np.ndarray:
    """(...,) bool from (..., 3) (x/W, y/H, score): finite coordinates and a high enough score."""
    finite = np.isfinite(points[..., :2]).all(-1)
    score = np.nan_to_num(points[..., 2], nan=-1.0)
    return finite & ((score > min_score) if strict else (score >= min_score))


def _thin_px(h: int, w: int) -> int:
    """official stickwidth_thin: min(max(int(min(H, W) / 300), 1), 2)."""
    return min(max(int(min(h, w) / 300), 1), 2)


def _draw_head(canvas: np.ndarray, body: np.ndarray, vis: np.ndarray, size_hw: tuple[int, int],
               origin: tuple[int, int]) -> None:
    import cv2

    h, w = size_hw
    ox, oy = origin
    xs = body[:, 0].astype(np.float64) * float(w)
    ys = body[:, 1].astype(np.float64) * float(h)
    for (i, j), color in zip(HEAD_LINES, HEAD_LINE_COLORS, strict=True):
        if not (vis[i] and vis[j]):
            continue
        mx, my = (xs[i] + xs[j]) / 2, (ys[i] + ys[j]) / 2
        length = ((ys[i] - ys[j]) ** 2 + (xs[i] - xs[j]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(ys[i] - ys[j], xs[i] - xs[j]))
        poly = np.asarray(cv2.ellipse2Poly((int(mx), int(my)), (int(length / 2), _HEAD_HALF_WIDTH_PX), int(angle),
                                           0, 360, 1))
        cv2.fillConvexPoly(canvas, poly - np.array([ox, oy], dtype=poly.dtype), color)
    canvas[:] = (canvas * 0.6).astype(np.uint8)
    for i, color in zip(HEAD_DOTS, HEAD_DOT_COLORS, strict=True):
        if vis[i]:
            cv2.circle(canvas, (int(xs[i]) - ox, int(ys[i]) - oy), _HEAD_DOT_RADIUS_PX, color, thickness=-1)


def _pixels(pts: np.ndarray, vis: np.ndarray, size_hw: tuple[int, int]) -> list[tuple[int, int] | None]:
    """official int(x * W), int(y * H), drawn only when both are > 0.01."""
    h, w = size_hw
    out: list[tuple[int, int] | None] = []
    for k in range(len(pts)):
        if not vis[k]:
            out.append(None)
            continue
        x, y = int(float(pts[k, 0]) * w), int(float(pts[k, 1]) * h)
        out.append((x, y) if x > _EPS and y > _EPS else None)
    return out


def _shift(p: tuple[int, int], origin: tuple[int, int]) -> tuple[int, int]:
    return p[0] - origin[0], p[1] - origin[1]


def _draw_hand(canvas: np.ndarray, px: list[tuple[int, int] | None], thin: int, colors: list,
               origin: tuple[int, int]) -> None:
    import cv2

    for (i, j), color in zip(HAND_EDGES, colors, strict=True):
        a, b = px[i], px[j]
        if a is not None and b is not None:
            cv2.line(canvas, _shift(a, origin), _shift(b, origin), color, thickness=thin)
    for p in px:
        if p is not None:
            cv2.circle(canvas, _shift(p, origin), thin, (0, 0, 255), thickness=-1)


def _draw_face(canvas: np.ndarray, px: list[tuple[int, int] | None], thin: int, origin: tuple[int, int]) -> None:
    import cv2

    for k in FACE_DOTS:
        p = px[k]
        if p is not None:
            cv2.circle(canvas, _shift(p, origin), thin, (255, 255, 255), thickness=-1)


def draw_overlay(frame: np.ndarray, body2d: np.ndarray, face2d: np.ndarray, hands2d: np.ndarray) -> None:
    """Paint the 2D overlay of P people onto `frame` (H, W, 3) uint8 RGB, in place.

    Args:
        body2d: (P, 18, 3) OpenPose-18 (x/W, y/H, score); only the head points 0, 14-17 are used.
        face2d: (P, 68, 3) face landmarks (x/W, y/H, score).
        hands2d: (P, 2, 21, 3) left and right hand (x/W, y/H, score).
    """
    h, w = frame.shape[:2]
    p = body2d.shape[0]
    if p == 0:
        return
    size = (h, w)
    thin = _thin_px(h, w)
    edge_colors = hand_edge_colors()
    body_vis = visible(body2d, BODY_SCORE_MIN, strict=True)
    body_vis[:, [k for k in range(body2d.shape[1]) if k not in HEAD_DOTS]] = False
    face_vis = visible(face2d, PART_SCORE_MIN, strict=False)
    # official DWPose hand list is [L_0 .. L_{P-1}, R_0 .. R_{P-1}] and person i draws entries 2i, 2i+1
    # (for P >= 2 that mixes people; it only changes how overlapping marks add up, so we keep it)
    hand_list = np.concatenate([hands2d[:, 0], hands2d[:, 1]], axis=0)          # (2P, 21, 3)
    hand_vis = visible(hand_list, PART_SCORE_MIN, strict=False)
    hand_px = [_pixels(hand_list[k], hand_vis[k], size) for k in range(2 * p)]
    face_px = [_pixels(face2d[i], face_vis[i], size) for i in range(p)]

    # draw on the smallest rectangle that holds every mark (integer shifts keep the pixels exact)
    pts = [q for group in (*hand_px, *face_px) for q in group if q is not None]
    hx, hy = body2d[..., 0][body_vis] * float(w), body2d[..., 1][body_vis] * float(h)
    xs = [q[0] for q in pts] + [int(v) for v in hx]
    ys = [q[1] for q in pts] + [int(v) for v in hy]
    if not xs:
        return
    margin = max(_HEAD_DOT_RADIUS_PX, _HEAD_HALF_WIDTH_PX, thin) + 2
    x0, y0 = max(min(xs) - margin, 0), max(min(ys) - margin, 0)
    x1, y1 = min(max(xs) + margin + 1, w), min(max(ys) + margin + 1, h)
    if x1 <= x0 or y1 <= y0:
        return
    origin = (x0, y0)
    total = np.zeros((y1 - y0, x1 - x0, 3), dtype=np.uint8)
    for i in range(p):
        canvas = np.zeros_like(total)
        _draw_head(canvas, body2d[i], body_vis[i], size, origin)
        for k in (2 * i, 2 * i + 1):
            _draw_hand(canvas, hand_px[k], thin, edge_colors, origin)
        _draw_face(canvas, face_px[i], thin, origin)
        total += canvas                                                         # uint8 wrap, as official
    region = frame[y0:y1, x0:x1]
    mask = total != 0
    region[mask] = total[mask]


# ----------------------------------------------------------------------------------------------
# Vectorised overlay: the marks of many frames at once, as sparse channel writes
# ----------------------------------------------------------------------------------------------
#
# `draw_overlay` above is the reference: one frame, ~160 OpenCV calls. `overlay_marks` computes the
# same pixels for a run of frames with a fixed number of numpy calls per run (plus two OpenCV calls
# per head ellipse), and needs no 3D frame, so it can run while the 3D pass renders. It draws on the
# same per-frame crop as the reference, in the same per-person order, and:
#
# * writes colour ids (not colours) to a per-person uint8 canvas; later writes win, as in OpenCV;
#   ids of the head ellipses map to their colours * 0.6 (the ellipses are the only marks on a fresh
#   canvas when the official code scales it, so the scaling is a palette lookup);
# * stamps filled circles: OpenCV's filled circle of an integer radius at an integer centre is a
#   fixed pixel set, clipped to the canvas; the set is read back from OpenCV once per radius;
# * rasterises thickness-1 lines whose ends lie inside the frame with OpenCV's 8-connected line
#   iterator in closed form (below); a line leaving the frame (clipped) or thicker than one pixel
#   is drawn by `cv2.line` itself, in its place in the drawing order;
# * draws head ellipses with `cv2.ellipse2Poly` + `cv2.fillConvexPoly`, as the reference.

_COORD_CLAMP = 1 << 30
"""Pixel coordinates are clamped to +-2**30 (OpenCV takes 32-bit ints; the reference fails beyond)."""
_ID_ELLIPSE = 1                     # 1..4: head ellipses (scaled colours)
_ID_HEAD_DOT = 5                    # 5..9: head dots
_ID_HAND_EDGE = 10                  # 10..29: hand edges
_ID_HAND_DOT = 30
_ID_FACE_DOT = 31
_HEAD_LOCAL = {k: i for i, k in enumerate(HEAD_DOTS)}
_HEAD_LINES_LOCAL = tuple((_HEAD_LOCAL[i], _HEAD_LOCAL[j]) for i, j in HEAD_LINES)
_BUFFER_BYTES = 16 << 20
"""Canvas memory per batch of frames; longer runs are drawn in several batches."""


@dataclass(frozen=True)
class OverlayMarks:
    """The 2D overlay of `num_frames` frames as channel writes: `frames.reshape(-1)[index] = value`.

    index: (M,) int64 flat indices into a (num_frames, H, W, 3) array (an index may repeat, always
    with the same value); value: (M,) uint8, only the non-zero channels of the summed person
    canvases (the official compositing replaces a channel where the overlay is non-zero).
    """

    num_frames: int
    size_hw: tuple[int, int]
    index: np.ndarray
    value: np.ndarray

    def paste(self, frames: np.ndarray) -> None:
        """Write the marks into `frames` (num_frames, H, W, 3) uint8, C-contiguous, in place."""
        h, w = self.size_hw
        if frames.shape != (self.num_frames, h, w, 3) or frames.dtype != np.uint8 or not frames.flags.c_contiguous:
            raise ValueError(f"overlay marks of {self.num_frames} frames of {w}x{h} cannot be pasted into "
                             f"an array {frames.shape} {frames.dtype} (C-contiguous: {frames.flags.c_contiguous})")
        if self.index.size:
            frames.reshape(-1)[self.index] = self.value


@functools.cache
def _stamp(radius: int) -> tuple[np.ndarray, np.ndarray]:
    """(dy, dx) int64 offsets of OpenCV's filled circle of `radius` around an integer centre."""
    import cv2

    c = radius + 1
    img = np.zeros((2 * c + 1, 2 * c + 1), np.uint8)
    cv2.circle(img, (c, c), radius, 1, thickness=-1)
    dy, dx = np.nonzero(img)
    return dy.astype(np.int64) - c, dx.astype(np.int64) - c


@functools.cache
def _palette() -> np.ndarray:
    """(32, 3) uint8: colour of each mark id, as OpenCV writes it (float colours rounded by OpenCV)."""
    import cv2

    def drawn(color: tuple[float, float, float]) -> np.ndarray:
        px = np.zeros((1, 1, 3), np.uint8)
        cv2.line(px, (0, 0), (0, 0), color, thickness=1)
        return px[0, 0]

    pal = np.zeros((_ID_FACE_DOT + 1, 3), np.uint8)
    pal[_ID_ELLIPSE:_ID_ELLIPSE + 4] = (np.array(HEAD_LINE_COLORS, np.uint8) * 0.6).astype(np.uint8)
    pal[_ID_HEAD_DOT:_ID_HEAD_DOT + 5] = HEAD_DOT_COLORS
    for e, color in enumerate(hand_edge_colors()):
        pal[_ID_HAND_EDGE + e] = drawn(color)
    pal[_ID_HAND_DOT] = (0, 0, 255)
    pal[_ID_FACE_DOT] = (255, 255, 255)
    return pal


def _trunc_px(v: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Python's int(v) (truncation) as int64 where ok, clamped to +-2**30; 0 elsewhere."""
    with np.errstate(invalid="ignore", over="ignore"):
        t = np.trunc(np.where(ok, v, 0.0))
    return np.clip(np.nan_to_num(t, nan=0.0), -_COORD_CLAMP, _COORD_CLAMP).astype(np.int64)


def line_pixels(x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels of OpenCV's unclipped 8-connected thickness-1 lines (x1, y1)-(x2, y2), (n,) int64 each.

    Returns (segment, x, y), one row per pixel. OpenCV starts at the left end (pt1 when dx == 0),
    steps along the major axis (x on ties) and, with M = major and m = minor extent, moves the minor
    axis on step k when its error term drops below 0; in closed form the minor offset of pixel k is
    ceil((2mk - M) / 2M) = (2mk + M - 1) // 2M (M > 0). Only valid when no end needs clipping.
    """
    swap = x2 < x1
    sx, sy = np.where(swap, x2, x1), np.where(swap, y2, y1)
    dx, dy = np.abs(x2 - x1), np.where(swap, y1 - y2, y2 - y1)
    ady = np.abs(dy)
    y_major = ady > dx
    major, minor = np.where(y_major, ady, dx), np.where(y_major, dx, ady)
    counts = major + 1
    seg = np.repeat(np.arange(x1.size), counts)
    k = np.arange(seg.size, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    maj, mnr = major[seg], minor[seg]
    n = (2 * mnr * k + np.maximum(maj - 1, 0)) // np.maximum(2 * maj, 1)
    step_y = np.where(dy[seg] < 0, -1, 1)
    ym = y_major[seg]
    xs = sx[seg] + np.where(ym, n, k)
    ys = sy[seg] + step_y * np.where(ym, k, n)
    return seg, xs, ys


def overlay_marks(body2d: np.ndarray, face2d: np.ndarray, hands2d: np.ndarray,
                  size_hw: tuple[int, int]) -> OverlayMarks:
    """The 2D overlay of T frames of P people as `OverlayMarks`: what `draw_overlay` paints, per frame.

    Args:
        body2d: (T, P, 18, 3), face2d: (T, P, 68, 3), hands2d: (T, P, 2, 21, 3) (x/W, y/H, score).
        size_hw: frame size (H, W).
    """
    h, w = size_hw
    t_frames, p = body2d.shape[:2]
    idx_parts: list[np.ndarray] = []
    val_parts: list[np.ndarray] = []
    if t_frames and p:
        geo = _Geometry(body2d, face2d, hands2d, (h, w))
        for frames in geo.batches():
            idx, val = geo.draw(frames)
            idx_parts.append(idx)
            val_parts.append(val)
    index = np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int64)
    value = np.concatenate(val_parts) if val_parts else np.zeros(0, np.uint8)
    return OverlayMarks(t_frames, (h, w), index, value)


class _Geometry:
    """Pixel coordinates and per-frame crops of a run of frames, exactly as `draw_overlay` computes them."""

    def __init__(self, body2d: np.ndarray, face2d: np.ndarray, hands2d: np.ndarray, size_hw: tuple[int, int]):
        h, w = size_hw
        self.size_hw = size_hw
        self.t, self.p = body2d.shape[:2]
        self.thin = _thin_px(h, w)
        head = body2d[:, :, list(HEAD_DOTS)]                                       # (T, P, 5, 3)
        self.head_vis = visible(head, BODY_SCORE_MIN, strict=True)                 # (T, P, 5)
        hx64 = head[..., 0].astype(np.float64) * float(w)
        hy64 = head[..., 1].astype(np.float64) * float(h)
        self.head_x64, self.head_y64 = hx64, hy64                                  # ellipse geometry
        self.head_x = _trunc_px(hx64, self.head_vis)                               # dot centres
        self.head_y = _trunc_px(hy64, self.head_vis)
        # official DWPose hand list [L_0 .. L_{P-1}, R_0 .. R_{P-1}]; person i draws entries 2i, 2i+1
        hand_list = np.concatenate([hands2d[:, :, 0], hands2d[:, :, 1]], axis=1)   # (T, 2P, 21, 3)
        self.hand_x, self.hand_y, self.hand_ok = self._pixels(hand_list, (h, w))
        self.face_x, self.face_y, self.face_ok = self._pixels(face2d, (h, w))

        # the reference's crop: all drawn hand and face points and the head points (input dtype * W)
        bx = _trunc_px(head[..., 0] * float(w), self.head_vis)
        by = _trunc_px(head[..., 1] * float(h), self.head_vis)
        xs = np.concatenate([a.reshape(self.t, -1) for a in (self.hand_x, self.face_x, bx)], axis=1)
        ys = np.concatenate([a.reshape(self.t, -1) for a in (self.hand_y, self.face_y, by)], axis=1)
        ok = np.concatenate([a.reshape(self.t, -1) for a in (self.hand_ok, self.face_ok, self.head_vis)], axis=1)
        margin = max(_HEAD_DOT_RADIUS_PX, _HEAD_HALF_WIDTH_PX, self.thin) + 2
        big = 2 * _COORD_CLAMP
        self.x0 = np.maximum(np.where(ok, xs, big).min(1) - margin, 0)
        self.y0 = np.maximum(np.where(ok, ys, big).min(1) - margin, 0)
        self.x1 = np.minimum(np.where(ok, xs, -big).max(1) + margin + 1, w)
        self.y1 = np.minimum(np.where(ok, ys, -big).max(1) + margin + 1, h)
        self.drawn = ok.any(1) & (self.x1 > self.x0) & (self.y1 > self.y0)       # (T,)
        self.cw = np.where(self.drawn, self.x1 - self.x0, 0)
        self.ch = np.where(self.drawn, self.y1 - self.y0, 0)

    @staticmethod
    def _pixels(pts: np.ndarray, size_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """official int(x * W), int(y * H) in float64, drawn where visible and both are > 0.01."""
        h, w = size_hw
        vis = visible(pts, PART_SCORE_MIN, strict=False)
        x = _trunc_px(pts[..., 0].astype(np.float64) * w, vis)
        y = _trunc_px(pts[..., 1].astype(np.float64) * h, vis)
        return x, y, vis & (x > _EPS) & (y > _EPS)

    def batches(self) -> list[np.ndarray]:
        """Frame indices with marks, split so that each batch's canvases fit in `_BUFFER_BYTES`."""
        frames = np.flatnonzero(self.drawn)
        area = self.cw[frames] * self.ch[frames] * self.p
        out, start, acc = [], 0, 0
        for i, a in enumerate(area.tolist()):
            if acc and acc + a > _BUFFER_BYTES:
                out.append(frames[start:i])
                start, acc = i, 0
            acc += a
        if start < frames.size:
            out.append(frames[start:])
        return out

    def draw(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index, value) channel writes of `frames` (indices into (T, H, W, 3))."""
        canv = _Canvases(self, frames)
        nf, p = frames.size, self.p
        fi = np.broadcast_to(np.arange(nf)[:, None], (nf, p))                     # (F, P) batch frame
        pi = np.broadcast_to(np.arange(p)[None, :], (nf, p))                      # (F, P) person

        # 1. head ellipses (OpenCV), in the reference's float64 arithmetic
        self._ellipses(frames, canv)
        # 2. head dots, after the 0.6 scaling (which the ellipse ids carry)
        vis, hx, hy = self.head_vis[frames], self.head_x[frames], self.head_y[frames]
        for j in range(len(HEAD_DOTS)):
            m = vis[:, :, j]
            canv.dots(fi[m], pi[m], hx[:, :, j][m], hy[:, :, j][m], _HEAD_DOT_RADIUS_PX, _ID_HEAD_DOT + j)
        # 3. hands 2i then 2i + 1: edges in order, then dots
        for slot in (0, 1):
            hxs, hys = self.hand_x[frames, slot::2], self.hand_y[frames, slot::2]   # (F, P, 21)
            hok = self.hand_ok[frames, slot::2]
            self._hand_edges(hxs, hys, hok, canv)
            f3, p3 = np.nonzero(hok)[:2]
            canv.dots(f3, p3, hxs[hok], hys[hok], self.thin, _ID_HAND_DOT)
        # 4. face dots
        sel = list(FACE_DOTS)
        fok = self.face_ok[frames][:, :, sel]
        f3, p3 = np.nonzero(fok)[:2]
        canv.dots(f3, p3, self.face_x[frames][:, :, sel][fok], self.face_y[frames][:, :, sel][fok], self.thin,
                  _ID_FACE_DOT)

        # compositing: colours, uint8 sum over people (wrapping), non-zero channels replace the frame's
        pos, pix = canv.touched()                                                  # (n,) canvas, frame pixel
        pal = _palette()
        if p == 1:
            color = np.take(pal, canv.flat[pos], axis=0)                           # (n, 3)
        else:
            color = np.take(pal, canv.buf[:, pos % canv.s], axis=0).sum(0, dtype=np.uint8)
        k = np.flatnonzero(color)
        q, c = np.divmod(k, 3)
        return pix[q] * 3 + c, color.reshape(-1)[k]

    def _ellipses(self, frames: np.ndarray, canv: _Canvases) -> None:
        import cv2

        vis = self.head_vis[frames]
        pairs = np.stack([vis[:, :, i] & vis[:, :, j] for i, j in _HEAD_LINES_LOCAL], -1)   # (F, P, 4)
        todo = np.argwhere(pairs.any(-1))
        if not todo.size:
            return
        xs_all, ys_all = self.head_x64[frames], self.head_y64[frames]
        pairs_list = pairs.tolist()
        for f, i in todo.tolist():
            img = canv.canvas(f, i)
            ox, oy = int(canv.x0[f]), int(canv.y0[f])
            origin = np.array([ox, oy], dtype=np.int32)
            xs, ys = xs_all[f, i].tolist(), ys_all[f, i].tolist()
            rect = [_COORD_CLAMP, _COORD_CLAMP, -_COORD_CLAMP, -_COORD_CLAMP]
            for line, (a, b) in enumerate(_HEAD_LINES_LOCAL):
                if not pairs_list[f][i][line]:
                    continue
                mx, my = (xs[a] + xs[b]) / 2, (ys[a] + ys[b]) / 2
                length = ((ys[a] - ys[b]) ** 2 + (xs[a] - xs[b]) ** 2) ** 0.5
                angle = math.degrees(math.atan2(ys[a] - ys[b], xs[a] - xs[b]))
                if not max(abs(mx), abs(my), length) < _COORD_CLAMP:
                    continue                                                       # beyond OpenCV's ints
                cx, cy, axis, deg = int(mx), int(my), int(length / 2), int(angle)
                poly = np.asarray(cv2.ellipse2Poly((cx, cy), (axis, _HEAD_HALF_WIDTH_PX), deg, 0, 360, 1))
                poly -= origin
                cv2.fillConvexPoly(img, poly, _ID_ELLIPSE + line)
                # the filled pixels lie within the bounding box of the rotated ellipse, + rounding
                co, si = math.cos(math.radians(deg)), math.sin(math.radians(deg))
                rx = int(math.hypot(axis * co, _HEAD_HALF_WIDTH_PX * si)) + 2
                ry = int(math.hypot(axis * si, _HEAD_HALF_WIDTH_PX * co)) + 2
                rect = [min(rect[0], cx - ox - rx), min(rect[1], cy - oy - ry),
                        max(rect[2], cx - ox + rx + 1), max(rect[3], cy - oy + ry + 1)]
            canv.touch_rect(f, i, (rect[0], rect[1], rect[2], rect[3]))

    def _hand_edges(self, hx: np.ndarray, hy: np.ndarray, ok: np.ndarray, canv: _Canvases) -> None:
        """The 20 edges of one hand of each (frame, person), in order; hx, hy, ok: (F, P, 21)."""
        import cv2

        h, w = self.size_hw
        ia = np.array([a for a, _ in HAND_EDGES])
        ib = np.array([b for _, b in HAND_EDGES])
        seg_ok = ok[:, :, ia] & ok[:, :, ib]                                       # (F, P, 20)
        if not seg_ok.any():
            return
        ax, ay, bx, by = hx[:, :, ia], hy[:, :, ia], hx[:, :, ib], hy[:, :, ib]
        fast = seg_ok & (ax < w) & (bx < w) & (ay < h) & (by < h)                 # unclipped (>= 1: 0.01 rule)
        if self.thin != 1:
            fast[:] = False
        # fast segments edge-major, so that the pixels of each edge are one slice
        e_idx, f_idx, p_idx = np.nonzero(fast.transpose(2, 0, 1))
        seg, xs, ys = line_pixels(ax[f_idx, p_idx, e_idx], ay[f_idx, p_idx, e_idx],
                                  bx[f_idx, p_idx, e_idx], by[f_idx, p_idx, e_idx])
        pos, pix = canv.positions(f_idx[seg], p_idx[seg], xs, ys)
        bounds = np.searchsorted(e_idx[seg], np.arange(len(HAND_EDGES) + 1))
        slow = np.argwhere(seg_ok & ~fast).tolist()                               # clipped or thick: OpenCV
        for e in range(len(HAND_EDGES)):
            canv.write(pos[bounds[e]:bounds[e + 1]], pix[bounds[e]:bounds[e + 1]], _ID_HAND_EDGE + e)
            for f, i, edge in slow:
                if edge != e:
                    continue
                a, b = HAND_EDGES[e]
                ox, oy = int(canv.x0[f]), int(canv.y0[f])
                pa, pb = (int(hx[f, i, a]) - ox, int(hy[f, i, a]) - oy), (int(hx[f, i, b]) - ox, int(hy[f, i, b]) - oy)
                cv2.line(canv.canvas(f, i), pa, pb, _ID_HAND_EDGE + e, thickness=self.thin)
                r = self.thin
                canv.touch_rect(f, i, (min(pa[0], pb[0]) - r, min(pa[1], pb[1]) - r,
                                       max(pa[0], pb[0]) + r + 1, max(pa[1], pb[1]) + r + 1))


class _Canvases:
    """The per-person id canvases of a batch of frames, on each frame's crop, in one uint8 buffer.

    buf: (P, S), person-major; frame f of the batch owns buf[:, off[f]:off[f] + ch[f] * cw[f]], a
    (ch, cw) canvas per person whose pixel (0, 0) is the frame pixel (x0, y0). Every write also
    records its positions and frame pixels (t * H + y) * W + x, so compositing reads only those.
    """

    def __init__(self, geo: _Geometry, frames: np.ndarray):
        h, w = geo.size_hw
        self.w = w
        self.x0, self.y0, self.cw, self.ch = geo.x0[frames], geo.y0[frames], geo.cw[frames], geo.ch[frames]
        self.area = self.cw * self.ch
        self.off = np.cumsum(self.area) - self.area
        self.s = int(self.area.sum())
        self.buf = np.zeros((geo.p, self.s), np.uint8)
        self.flat = self.buf.reshape(-1)
        # position of frame pixel (x, y) on canvas (f, i): base[f, i] + y * cw[f] + x
        self.base = np.arange(geo.p)[None, :] * self.s + (self.off - self.y0 * self.cw - self.x0)[:, None]
        self.frame_base = frames.astype(np.int64) * h * w                         # (F,) first pixel of frame
        self._pos: list[np.ndarray] = []
        self._pix: list[np.ndarray] = []

    def canvas(self, f: int, i: int) -> np.ndarray:
        return self.buf[i, self.off[f]:self.off[f] + self.area[f]].reshape(int(self.ch[f]), int(self.cw[f]))

    def positions(self, f: np.ndarray, i: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(canvas position, frame pixel) of frame pixels (x, y) on canvases (f, i), inside the crops."""
        return self.base[f, i] + y * self.cw[f] + x, self.frame_base[f] + y * self.w + x

    def write(self, pos: np.ndarray, pix: np.ndarray, ids: int) -> None:
        self.flat[pos] = ids
        self._pos.append(pos)
        self._pix.append(pix)

    def dots(self, f: np.ndarray, i: np.ndarray, cx: np.ndarray, cy: np.ndarray, radius: int, ids: int) -> None:
        """OpenCV filled circles at integer centres (n,) on canvases (f, i), clipped to the crops."""
        if not f.size:
            return
        dy, dx = _stamp(radius)
        x, y = cx[:, None] + dx[None], cy[:, None] + dy[None]                      # (n, stamp)
        x0, y0 = self.x0[f][:, None], self.y0[f][:, None]
        inside = (x >= x0) & (x < x0 + self.cw[f][:, None]) & (y >= y0) & (y < y0 + self.ch[f][:, None])
        x, y = x[inside], y[inside]
        fs, ps = np.broadcast_to(f[:, None], inside.shape)[inside], np.broadcast_to(i[:, None], inside.shape)[inside]
        pos, pix = self.positions(fs, ps, x, y)
        self.write(pos, pix, ids)

    def touch_rect(self, f: int, i: int, rect: tuple[int, int, int, int]) -> None:
        """Record the pixels of canvas (f, i) that OpenCV may have written inside rect (x0, y0, x1, y1)."""
        cw, ch = int(self.cw[f]), int(self.ch[f])
        rx0, ry0, rx1, ry1 = max(rect[0], 0), max(rect[1], 0), min(rect[2], cw), min(rect[3], ch)
        if rx1 <= rx0 or ry1 <= ry0:
            return
        yy, xx = np.nonzero(self.canvas(f, i)[ry0:ry1, rx0:rx1])
        yy, xx = yy + ry0, xx + rx0
        self._pos.append(i * self.s + self.off[f] + yy * cw + xx)
        self._pix.append(self.frame_base[f] + (yy + self.y0[f]) * self.w + xx + self.x0[f])

    def touched(self) -> tuple[np.ndarray, np.ndarray]:
        """(canvas positions, frame pixels) written on any canvas: a superset, repeats allowed."""
        if not self._pos:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(self._pos), np.concatenate(self._pix)

"""The official 2D overlay: head lines and dots, DWPose hands and face dots, painted with OpenCV.

Reproduces SCAIL-Pose `draw_pose(show_body=False, show_cheek=True, dw_hand=True, optimized_face=True)`
and the compositing of `render_nlf_as_images` (research/scail-pose.md §3.4):

* each person is drawn on a fresh black canvas: head ellipses, canvas * 0.6 (truncated), head dots
  (radius 4), hand edges and dots, face dots;
* the person canvases are summed as uint8 (wrapping on overlap);
* the sum replaces the frame per channel where it is non-zero.

Pixel coordinates are `int(x * W)`, `int(y * H)` (truncation); hands and face points are drawn only
when both are > 0.01, as in the official code.
"""

from __future__ import annotations

import math

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

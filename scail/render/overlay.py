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


def _draw_head(canvas: np.ndarray, body: np.ndarray, vis: np.ndarray) -> None:
    import cv2

    h, w = canvas.shape[:2]
    xs = body[:, 0].astype(np.float64) * float(w)
    ys = body[:, 1].astype(np.float64) * float(h)
    for (i, j), color in zip(HEAD_LINES, HEAD_LINE_COLORS, strict=True):
        if not (vis[i] and vis[j]):
            continue
        mx, my = (xs[i] + xs[j]) / 2, (ys[i] + ys[j]) / 2
        length = ((ys[i] - ys[j]) ** 2 + (xs[i] - xs[j]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(ys[i] - ys[j], xs[i] - xs[j]))
        poly = cv2.ellipse2Poly((int(mx), int(my)), (int(length / 2), _HEAD_HALF_WIDTH_PX), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, poly, color)
    canvas[:] = (canvas * 0.6).astype(np.uint8)
    for i, color in zip(HEAD_DOTS, HEAD_DOT_COLORS, strict=True):
        if vis[i]:
            cv2.circle(canvas, (int(xs[i]), int(ys[i])), _HEAD_DOT_RADIUS_PX, color, thickness=-1)


def _pixel(pt: np.ndarray, vis: bool, w: int, h: int) -> tuple[int, int] | None:
    if not vis:
        return None
    x, y = int(float(pt[0]) * w), int(float(pt[1]) * h)
    return (x, y) if x > _EPS and y > _EPS else None


def _draw_hand(canvas: np.ndarray, hand: np.ndarray, vis: np.ndarray, thin: int, colors: list) -> None:
    import cv2

    h, w = canvas.shape[:2]
    px = [_pixel(hand[k], bool(vis[k]), w, h) for k in range(len(hand))]
    for (i, j), color in zip(HAND_EDGES, colors, strict=True):
        if px[i] is not None and px[j] is not None:
            cv2.line(canvas, px[i], px[j], color, thickness=thin)
    for p in px:
        if p is not None:
            cv2.circle(canvas, p, thin, (0, 0, 255), thickness=-1)


def _draw_face(canvas: np.ndarray, face: np.ndarray, vis: np.ndarray, thin: int) -> None:
    import cv2

    h, w = canvas.shape[:2]
    for k in FACE_DOTS:
        p = _pixel(face[k], bool(vis[k]), w, h)
        if p is not None:
            cv2.circle(canvas, p, thin, (255, 255, 255), thickness=-1)


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
    thin = _thin_px(h, w)
    edge_colors = hand_edge_colors()
    body_vis = visible(body2d, BODY_SCORE_MIN, strict=True)
    face_vis = visible(face2d, PART_SCORE_MIN, strict=False)
    # official DWPose hand list is [L_0 .. L_{P-1}, R_0 .. R_{P-1}] and person i draws entries 2i, 2i+1
    # (for P >= 2 that mixes people; it only changes how overlapping marks add up, so we keep it)
    hand_list = np.concatenate([hands2d[:, 0], hands2d[:, 1]], axis=0)          # (2P, 21, 3)
    hand_vis = visible(hand_list, PART_SCORE_MIN, strict=False)
    total = np.zeros((h, w, 3), dtype=np.uint8)
    for i in range(p):
        canvas = np.zeros((h, w, 3), dtype=np.uint8)
        _draw_head(canvas, body2d[i], body_vis[i])
        for k in (2 * i, 2 * i + 1):
            _draw_hand(canvas, hand_list[k], hand_vis[k], thin, edge_colors)
        _draw_face(canvas, face2d[i], face_vis[i], thin)
        total += canvas                                                         # uint8 wrap, as official
    mask = total != 0
    frame[mask] = total[mask]

"""Render stage: pose data -> the official 3D capsule skeleton with its 2D overlay.

    from scail.render import render_pose
    frames = render_pose(pose, overlay=True)                      # rendered.mp4 frames (N, H, W, 3) uint8
    frames = render_pose(pose, overlay=True, reference=ref_pose)  # rendered_aligned.mp4 frames

Modules: skeleton (topology, palettes), raycast (ray-capsule renderer, torch), overlay (2D marks,
OpenCV), align (official alignment to the reference), retarget (optional bone-length retargeting),
pipeline (render_pose, iter_render_pose), stage (RenderStage).
"""

from __future__ import annotations

from scail.render.align import AlignBounds, Alignment
from scail.render.pipeline import iter_render_pose, prepare_render, render_pose

__all__ = ["AlignBounds", "Alignment", "iter_render_pose", "prepare_render", "render_pose"]

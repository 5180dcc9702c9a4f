"""Pose extraction: driving video + reference image -> pose data (.scail/pose.npz).

Public API: `load_pose`, `save_pose`, `PoseData` (the schema in DESIGN.md).
"""

from scail.pose.schema import PoseData, load_pose, save_pose

__all__ = ["PoseData", "load_pose", "save_pose"]

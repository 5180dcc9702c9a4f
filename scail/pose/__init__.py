"""Pose extraction: driving video + reference image -> pose data (.scail/pose.npz).

Public API: `load_pose`, `save_pose`, `PoseData` (the schema in DESIGN.md).

    schema.py      the pose data contract (validated npz)
    stage.py       PoseStage: the pipeline stage; runs the worker, writes .scail/pose_summary.json
    venv.py        the isolated pose env (created once, keyed by the pinned requirements)
    client.py      parent side of the worker (spawn, JSON-lines events, timeout, Ctrl-C)
    worker.py      runs in the pose env: job file in, events out, results written atomically
    normalize.py   16 fps by timestamps, official resize + centre crop, official intrinsics
    tracking.py    stable identities across frames
    flips.py       left/right and front/back flips undone by continuity over time (every backend)
    postprocess.py gap filling, optional One-Euro smoothing
    backends/      mediapipe (embedded, offline) and nlf (official NLF + DWPose)
"""

from scail.pose.schema import PoseData, load_pose, save_pose

__all__ = ["PoseData", "load_pose", "save_pose"]

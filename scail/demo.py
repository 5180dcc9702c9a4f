"""The bundled demo example, made entirely by code: a synthetic dancer, its video and its pose.

The dancer is also the synthetic pose data of the render tests and benchmarks (`dancer_pose`,
`dancer_joints`): one motion, in one body frame (y up), placed in the official camera (y down).

`write_demo_example(folder)` writes an example folder that needs no download and no pose model:

    driving.mp4        a cartoon dancer (drawn from a keyframed 3D SMPL-24 motion), 896x512, 16 fps
    ref.png            another cartoon character standing in a rest pose, 896x512
    prompt.txt         a prompt
    .scail/pose.npz    the exact pose of the driving motion (official camera, SMPL-24 + OpenPose-18)
    .scail/ref_pose.npz the exact pose of the reference character

The pose files have no manifest, so the pipeline treats them as user-provided pose data: the pose
stage is skipped and render/animate run on them. `scail run FOLDER --force pose` would extract pose
from the video instead (that needs the pose environment).

Run `python -m scail.demo examples/dance --inputs-only` to regenerate the committed example inputs.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scail.pose.schema import PoseData

SIZE_HW = (896, 512)
"""Portrait, the official 512x896 orientation for a standing person."""
FPS = 16.0
NUM_FRAMES = 33  # 4*8+1: a valid model length
DEPTH_MM = 3100.0
"""Distance of the dancer's pelvis from the camera."""

# SMPL-24 rest pose in a body frame: millimetres, x to the person's left, y up, z away from the camera.
# The person faces the camera, so their left side appears on the right of the image.
_REST = {
    0: (0, 0, 0), 1: (90, -60, 0), 2: (-90, -60, 0), 3: (0, 110, 0), 4: (95, -480, 0), 5: (-95, -480, 0),
    6: (0, 240, 0), 7: (100, -880, 0), 8: (-100, -880, 0), 9: (0, 300, 0), 10: (110, -930, -120),
    11: (-110, -930, -120), 12: (0, 480, 0), 13: (70, 420, 0), 14: (-70, 420, 0), 15: (0, 620, 0),
    16: (180, 430, 0), 17: (-180, 430, 0),
}
_UPPER_ARM_MM, _FOREARM_MM, _HAND_MM = 280.0, 250.0, 80.0

# OpenPose-18 from SMPL-24 (eyes and ears are offsets from the head joint, in mm of the body frame).
_OPENPOSE_FROM_SMPL = {1: 12, 2: 17, 3: 19, 4: 21, 5: 16, 6: 18, 7: 20, 8: 2, 9: 5, 10: 8, 11: 1, 12: 4, 13: 7}
_HEAD_OFFSETS = {0: (0, -10, -110), 14: (-35, 25, -95), 15: (35, 25, -95), 16: (-75, 10, -20), 17: (75, 10, -20)}


def _arm(shoulder: np.ndarray, side: float, raise_rad: float, bend_rad: float) -> list[np.ndarray]:
    """Elbow, wrist, hand of an arm swung `raise_rad` from hanging down, in the frontal plane."""
    d1 = np.array([side * math.sin(raise_rad), -math.cos(raise_rad), 0.0])
    elbow = shoulder + _UPPER_ARM_MM * d1
    a = raise_rad + bend_rad
    d2 = np.array([side * math.sin(a), -math.cos(a), -0.15])
    wrist = elbow + _FOREARM_MM * d2 / np.linalg.norm(d2)
    return [elbow, wrist, wrist + _HAND_MM * d2 / np.linalg.norm(d2)]


def body_frame_joints(t: float) -> np.ndarray:
    """SMPL-24 joints (24, 3) in the body frame at time `t` seconds of the dance loop."""
    phase = 2 * math.pi * t / (NUM_FRAMES / FPS)
    joints = np.zeros((24, 3))
    for j, p in _REST.items():
        joints[j] = p
    bounce = 45.0 * (1 - math.cos(2 * phase)) / 2  # knees bend twice per loop
    joints[[0, 1, 2, 3, 6, 9, 12, 13, 14, 15, 16, 17], 1] -= bounce
    joints[[4, 5], 2] -= 2.2 * bounce  # knees move towards the camera
    joints[[4, 5], 1] -= 0.4 * bounce
    left = _arm(joints[16], +1.0, 0.4 + 1.5 * (1 + math.sin(phase)) / 2, 0.6 + 0.5 * math.sin(phase))
    right = _arm(joints[17], -1.0, 0.4 + 1.5 * (1 - math.sin(phase)) / 2, 0.6 - 0.5 * math.sin(phase))
    joints[[18, 20, 22]] = left
    joints[[19, 21, 23]] = right
    yaw = 0.35 * math.sin(phase)  # the upper body sways left and right
    c, s = math.cos(yaw), math.sin(yaw)
    rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    upper = [3, 6, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]
    joints[upper] = joints[upper] @ rot.T
    return joints


def to_camera(joints_body: np.ndarray, x_mm: float = 0.0, depth_mm: float = DEPTH_MM) -> np.ndarray:
    """Body frame -> camera space (x right, y down, z forward), mm; the figure is centred vertically."""
    cam = np.empty_like(joints_body)
    cam[..., 0] = joints_body[..., 0] + x_mm
    cam[..., 1] = -(joints_body[..., 1] + 130.0)
    cam[..., 2] = joints_body[..., 2] + depth_mm
    return cam


def _project(points_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(..., 3) camera mm -> (..., 2) pixels."""
    uvw = points_cam @ K.T
    return uvw[..., :2] / uvw[..., 2:3]


def _openpose(joints_body: np.ndarray, K: np.ndarray, size_hw: tuple[int, int], x_mm: float,
              depth_mm: float) -> np.ndarray:
    """OpenPose-18 (18, 3) as (x/W, y/H, score) from body-frame SMPL joints."""
    h, w = size_hw
    pts = np.zeros((18, 3))
    for op, smpl in _OPENPOSE_FROM_SMPL.items():
        pts[op] = joints_body[smpl]
    for op, off in _HEAD_OFFSETS.items():
        pts[op] = joints_body[15] + np.array(off, dtype=float)
    uv = _project(to_camera(pts, x_mm, depth_mm), K)
    return np.concatenate([uv[:, :1] / w, uv[:, 1:] / h, np.ones((18, 1))], axis=1)


def _face_and_hands(joints_cam: np.ndarray, K: np.ndarray, size_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The 2D overlay points of one frame: 68 face points (a ring on the head) and 2x21 hand points
    (five fingers fanned from the wrist along the hand), both (x/W, y/H, score)."""
    scale = np.array([size_hw[1], size_hw[0]], dtype=float)
    head = joints_cam[15]
    ang = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    ring = head + np.stack([60 * np.cos(ang), 75 * np.sin(ang) + 10, np.full(68, -85.0)], -1)
    face = np.concatenate([_project(ring, K) / scale, np.ones((68, 1))], axis=1)
    hands = np.ones((2, 21, 3))
    for side, (wrist, hand_end) in enumerate(((20, 22), (21, 23))):
        base, axis = joints_cam[wrist], joints_cam[hand_end] - joints_cam[wrist]
        pts = [base]
        for finger in range(5):
            c, s = math.cos((finger - 2) * 0.35), math.sin((finger - 2) * 0.35)
            ray = np.array([c * axis[0] - s * axis[1], s * axis[0] + c * axis[1], axis[2]])
            pts += [base + ray * (0.45 * k) for k in range(1, 5)]
        hands[side, :, :2] = _project(np.stack(pts), K) / scale
    return face, hands


def make_pose(people_body: Sequence[np.ndarray], size_hw: tuple[int, int] = SIZE_HW, fps: float = FPS, *,
              depth_mm: float = DEPTH_MM, face_and_hands: bool = False) -> PoseData:
    """PoseData of people given as body-frame joints (N, 24, 3) each, side by side in one camera.

    Person p stands 900 mm further right and 600 mm further back than person p-1. The demo's pose
    files have no face or hand points; `face_and_hands` adds them (the overlay's tests draw them).
    """
    from scail.pose.schema import PoseData

    n = people_body[0].shape[0]
    pose = PoseData.empty(n, len(people_body), size_hw, fps=fps, backend="synthetic", version="scail-demo-1")
    for p, frames_body in enumerate(people_body):
        x_mm, depth = (p - (len(people_body) - 1) / 2) * 900.0, depth_mm + 600.0 * p
        cam = to_camera(frames_body, x_mm, depth)
        pose.body3d[:, p] = cam.astype(np.float32)
        for i in range(n):
            pose.body2d[i, p] = _openpose(frames_body[i], pose.K, size_hw, x_mm, depth)
            uv = _project(cam[i], pose.K)
            pose.bbox[i, p] = [uv[:, 0].min() - 40, uv[:, 1].min() - 90, uv[:, 0].max() + 40, uv[:, 1].max() + 20, 1.0]
            if face_and_hands:
                pose.face2d[i, p], pose.hands2d[i, p] = _face_and_hands(cam[i], pose.K, size_hw)
    return pose


def dance(num_frames: int, fps: float = FPS, scale: float = 1.0) -> np.ndarray:
    """(N, 24, 3) body-frame joints of the dance at `fps`; `scale` sizes the person (0.6: a child)."""
    return np.stack([body_frame_joints(i / fps) for i in range(num_frames)]) * scale


def fitting_depth_mm(size_hw: tuple[int, int]) -> float:
    """How far the dancer stands so that its joints span 70% of the height of a `size_hw` frame."""
    from scail.pose.schema import official_intrinsics

    joints_height_mm = _REST[15][1] - _REST[10][1]  # head to toes
    return float(official_intrinsics(size_hw)[0, 0]) * joints_height_mm / (0.7 * size_hw[0])


def dancer_joints(num_frames: int, scale: float = 1.0, size_hw: tuple[int, int] = SIZE_HW) -> np.ndarray:
    """(N, 24, 3) float32 camera-space SMPL joints (mm) of the dancer, placed to fit `size_hw`."""
    return to_camera(dance(num_frames, scale=scale), depth_mm=fitting_depth_mm(size_hw)).astype(np.float32)


def dancer_pose(num_frames: int = 16, size_hw: tuple[int, int] = (512, 896), num_people: int = 1,
                fps: float = 16.0) -> PoseData:
    """Pose data of `num_people` dancers with the overlay's face and hand points, for tests and benchmarks."""
    motion = dance(num_frames, fps)
    pose = make_pose([motion] * num_people, size_hw, fps, depth_mm=fitting_depth_mm(size_hw), face_and_hands=True)
    return pose.validate("synthetic pose")


# ----------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------

_LIMBS = [(16, 18, "sleeve"), (18, 20, "skin"), (17, 19, "sleeve"), (19, 21, "skin"), (20, 22, "skin"),
          (21, 23, "skin"), (1, 4, "legs"), (4, 7, "legs"), (2, 5, "legs"), (5, 8, "legs"),
          (7, 10, "shoes"), (8, 11, "shoes"), (12, 15, "skin")]


def draw_person(joints_body: np.ndarray, colours: dict[str, tuple[int, int, int]],
                background: np.ndarray) -> np.ndarray:
    """A cartoon person (H, W, 3) uint8 drawn over `background` from body-frame SMPL joints."""
    from PIL import Image, ImageDraw

    from scail.pose.schema import official_intrinsics

    K = official_intrinsics(SIZE_HW)
    uv = _project(to_camera(joints_body), K)
    scale = K[0, 0] / (DEPTH_MM + joints_body[:, 2])  # pixels per mm at each joint
    img = Image.fromarray(background.copy())
    d = ImageDraw.Draw(img)

    def pt(j: int) -> tuple[float, float]:
        return float(uv[j, 0]), float(uv[j, 1])

    order = sorted(_LIMBS, key=lambda limb: -(joints_body[limb[0], 2] + joints_body[limb[1], 2]))
    torso = [pt(17), pt(16), pt(1), pt(2)]
    d.polygon(torso, fill=colours["shirt"])
    for a, b, part in order:
        width = int(max(6, (110 if part == "legs" else 75) * scale[a]))
        d.line([pt(a), pt(b)], fill=colours[part], width=width)
        for j in (a, b):
            r = width / 2
            d.ellipse([uv[j, 0] - r, uv[j, 1] - r, uv[j, 0] + r, uv[j, 1] + r], fill=colours[part])
    hr = 105 * scale[15]
    hx, hy = pt(15)
    d.ellipse([hx - hr * 0.8, hy - hr * 1.05, hx + hr * 0.8, hy + hr * 0.85], fill=colours["skin"])
    d.chord([hx - hr * 0.85, hy - hr * 1.15, hx + hr * 0.85, hy + hr * 0.3], 180, 360, fill=colours["hair"])
    for ex in (-0.3, 0.3):
        d.ellipse([hx + ex * hr - 4, hy - 4, hx + ex * hr + 4, hy + 4], fill=(30, 30, 30))
    return np.asarray(img)


def _background(top: tuple[int, int, int], bottom: tuple[int, int, int]) -> np.ndarray:
    h, w = SIZE_HW
    ramp = np.linspace(0.0, 1.0, h)[:, None, None]
    grad = (1 - ramp) * np.array(top) + ramp * np.array(bottom)
    return np.broadcast_to(grad, (h, w, 3)).astype(np.uint8)


DANCER = {"shirt": (40, 90, 200), "sleeve": (40, 90, 200), "skin": (225, 180, 150), "legs": (35, 35, 45),
          "shoes": (240, 240, 240), "hair": (60, 40, 30)}
REFERENCE = {"shirt": (200, 50, 60), "sleeve": (225, 170, 140), "skin": (225, 170, 140), "legs": (60, 60, 120),
             "shoes": (20, 20, 20), "hair": (230, 190, 90)}


def write_demo_example(folder: Path, inputs_only: bool = False, num_frames: int = NUM_FRAMES) -> Path:
    """Write the synthetic example into `folder` (created if needed); returns the folder.

    `num_frames`: the first frames of the dance loop only (the fault-injection tests run many small
    examples through the real CLI; fewer frames make each run cheap).
    """
    from PIL import Image

    from scail.pose.schema import save_pose
    from scail.video import write_video

    folder.mkdir(parents=True, exist_ok=True)
    motion = dance(num_frames)
    stage_bg = _background((200, 205, 215), (120, 125, 135))
    frames = [draw_person(j, DANCER, stage_bg) for j in motion]
    if not (folder / "driving.mp4").exists():
        write_video(folder / "driving.mp4", frames, fps=FPS)
    rest = body_frame_joints(0.0)
    rest[[18, 20, 22]] = _arm(rest[16], +1.0, 0.25, 0.1)
    rest[[19, 21, 23]] = _arm(rest[17], -1.0, 0.25, 0.1)
    if not (folder / "ref.png").exists():
        Image.fromarray(draw_person(rest, REFERENCE, _background((245, 230, 200), (200, 170, 130)))).save(
            folder / "ref.png")
    if not (folder / "prompt.txt").exists():
        (folder / "prompt.txt").write_text("A cartoon character dances on a warm stage, full body, "
                                           "smooth motion.\n", encoding="utf-8")
    if not inputs_only:
        state = folder / ".scail"
        if not (state / "pose.npz").exists():
            save_pose(make_pose([motion]), state / "pose.npz")
        if not (state / "ref_pose.npz").exists():
            save_pose(make_pose([rest[None]]), state / "ref_pose.npz")
    return folder


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out = write_demo_example(Path(args[0] if args else "examples/dance"), inputs_only="--inputs-only" in sys.argv)
    print(out)

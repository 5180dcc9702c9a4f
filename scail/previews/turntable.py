"""previews/turntable.mp4: the 3D skeleton of `.scail/pose.npz`, seen from a camera circling it.

From the driving camera a wrong depth is invisible (an arm pushed 40 cm behind the body projects
to the same pixels), but the 3D capsule renderer and the alignment use that depth. Circling the
skeleton shows it. The clip plays the motion while the camera turns once around the vertical axis
through the body's centre, starting at the driving camera (frame 0 is its view); each bone is a capsule (a cylinder with a sphere at each end) in the
render stage's official colours (scail/render/skeleton.py), lit from the camera, on a grey floor.

Rendering is offscreen with pyrender (an optional extra: `pip install 'scail[previews3d]'`) on
EGL, which needs no display: Mesa's software EGL (Debian `libegl1 libegl-mesa0`) on a CPU-only
machine, the GPU's EGL where there is one. OSMesa is not the default because pyrender pins
PyOpenGL 3.1.0, whose OSMesa binding lacks `OSMesaCreateContextAttribs`; a user who has fixed that
may still set PYOPENGL_PLATFORM=osmesa, which is respected.

Body model: the pose data holds joint positions only (SMPL-24 joints in camera space), not SMPL /
SMPL-X pose parameters, so a posed SMPL-X mesh would need an inverse-kinematics fit of the body
model to the joints; that is not implemented. Only capsules are drawn.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from scail.example import Example

FRAMES = 36
"""Length of the clip (3 s at 12 fps): one full turn of the camera."""
FPS = 12.0
SIZE = 288
"""Square frames, pixels."""
RADIUS_M = 0.035
"""Capsule radius (metres)."""
CORE = (0, 1, 8, 9, 10, 11, 12, 13)
"""OpenPose points that frame the view: head, neck, hips, knees, ankles."""


@functools.cache
def unavailable() -> str:
    """'' when the turntable can be rendered here, else one line saying why and what to install."""
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")  # headless; must be set before OpenGL is imported
    try:
        import pyrender  # noqa: F401
        import trimesh  # noqa: F401
    except ImportError as exc:
        return f"pyrender is not installed ({exc.name}); pip install 'scail[previews3d]'"
    except Exception as exc:  # e.g. no libEGL: OpenGL fails while importing
        return (f"pyrender cannot start ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "on Debian/Ubuntu: apt-get install libegl1 libegl-mesa0")
    return ""


def world_joints(body3d: np.ndarray) -> np.ndarray:
    """Camera space (x right, y down, z forward, mm) -> a y-up world in metres (x right, y up, z back)."""
    return body3d.astype(np.float64) * np.array([1.0, -1.0, -1.0]) / 1000.0


def _align_z(direction: np.ndarray) -> np.ndarray:
    """3x3 rotation taking +z to the unit vector `direction`."""
    z = np.array([0.0, 0.0, 1.0])
    v = np.cross(z, direction)
    c = float(np.dot(z, direction))
    if np.linalg.norm(v) < 1e-9:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def bone_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """4x4 pose of a unit-length cylinder (along z, centred) stretched from `a` to `b`."""
    d = b - a
    length = float(np.linalg.norm(d))
    m = np.eye(4)
    m[:3, :3] = _align_z(d / max(length, 1e-9)) @ np.diag([1.0, 1.0, max(length, 1e-6)])
    m[:3, 3] = (a + b) / 2
    return m


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """4x4 camera pose (OpenGL: the camera looks down its -z, y up) at `eye` facing `target`."""
    fwd = target - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, up, -fwd, eye
    return m


def render_turntable(body3d: np.ndarray, frames: int = FRAMES, size: int = SIZE) -> list[np.ndarray]:
    """The turntable frames, (size, size, 3) uint8 RGB, of SMPL-24 joints (T, P, 24, 3) in mm."""
    problem = unavailable()
    if problem:
        raise RuntimeError(problem)
    import pyrender
    import trimesh

    from scail.render.skeleton import BONES, SMPL_FOR_OPENPOSE, palettes_for, valid_joints

    t_len, people = body3d.shape[:2]
    op = body3d[:, :, list(SMPL_FOR_OPENPOSE)]                              # (T, P, 14, 3) camera mm
    ok = valid_joints(op)
    world = world_joints(op)
    if not ok.any():
        raise ValueError("the pose data has no 3D joints to show")
    pts = world[ok]
    core_ok = ok[..., list(CORE)]
    core = world[..., list(CORE), :][core_ok] if core_ok.any() else pts  # the framing ignores the arms,
    center = (core.min(axis=0) + core.max(axis=0)) / 2                   # so an arm's depth error shows
    height = float(max(np.ptp(core[:, 1]), 0.5))                         # as a change, not a reframing
    spread = float(max(np.ptp(core[:, 0]), np.ptp(core[:, 2]), 0.5))
    # the circle passes through the driving camera (the world origin): frame 0 is its view, where a
    # point moved along its ray does not move on screen; the other frames show what it hid
    distance = max(float(np.hypot(center[0], center[2])), 0.5)
    phi0 = math.atan2(-center[0], -center[2])
    yfov = 2 * math.atan(0.7 * max(height, spread) / distance)
    yfov = min(max(yfov, math.radians(15.0)), math.radians(75.0))
    floor_y = float(pts[:, 1].min()) - RADIUS_M

    scene = pyrender.Scene(bg_color=[0.12, 0.12, 0.14, 1.0], ambient_light=[0.45, 0.45, 0.45])
    floor = trimesh.creation.cylinder(radius=spread / 2 + 0.35, height=0.01)
    floor.apply_transform(trimesh.transformations.rotation_matrix(math.pi / 2, [1, 0, 0]))
    floor.apply_translation([center[0], floor_y - 0.005, center[2]])
    scene.add(pyrender.Mesh.from_trimesh(floor, material=_material((70, 70, 76))))

    cylinder = trimesh.creation.cylinder(radius=RADIUS_M, height=1.0, sections=16)
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=RADIUS_M)
    bones: list[tuple[int, int, int, Any, Any, Any]] = []  # (person, a, b, cylinder node, sphere a, sphere b)
    for person, palette in enumerate(palettes_for(people)):
        for index, (a, b) in enumerate(BONES):
            mat = _material(palette[index])
            nodes = [scene.add(pyrender.Mesh.from_trimesh(mesh, material=mat))
                     for mesh in (cylinder, sphere, sphere)]
            bones.append((person, a, b, *nodes))

    camera = pyrender.PerspectiveCamera(yfov=yfov)
    cam_node = scene.add(camera, pose=np.eye(4))
    light = scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=2.5), pose=np.eye(4))
    renderer = pyrender.OffscreenRenderer(size, size)
    out: list[np.ndarray] = []
    try:
        for k in range(frames):
            t = k % t_len
            for person, a, b, cyl, sa, sb in bones:
                visible = bool(ok[t, person, a] and ok[t, person, b])
                for node in (cyl, sa, sb):
                    node.mesh.is_visible = visible
                if visible:
                    pa, pb = world[t, person, a], world[t, person, b]
                    scene.set_pose(cyl, bone_matrix(pa, pb))
                    scene.set_pose(sa, _translation(pa))
                    scene.set_pose(sb, _translation(pb))
            angle = phi0 + 2 * math.pi * k / frames  # k = 0: the driving camera
            eye = center + np.array([distance * math.sin(angle), 0.0, distance * math.cos(angle)])
            eye[1] = 0.0  # the driving camera's height
            pose = look_at(eye, center)
            scene.set_pose(cam_node, pose)
            scene.set_pose(light, pose)
            color, _ = renderer.render(scene)
            out.append(np.ascontiguousarray(color[..., :3]))
    finally:
        renderer.delete()
    return out


def _translation(p: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = p
    return m


def _material(rgb: tuple[int, int, int]) -> Any:
    import pyrender

    return pyrender.MetallicRoughnessMaterial(baseColorFactor=[c / 255 for c in rgb] + [1.0],
                                              metallicFactor=0.0, roughnessFactor=0.9)


def write_turntable(example: Example, path: Path, sig: str) -> None:
    """previews/turntable.mp4 from `.scail/pose.npz` (see the module docstring)."""
    from scail.pose.schema import load_pose
    from scail.previews import SIGNATURE_KEY
    from scail.video import VideoWriter

    pose = load_pose(example.pose_data)
    frames = render_turntable(pose.body3d, FRAMES, SIZE)  # read now: tests make them small
    with VideoWriter(path, FPS, crf=23, preset="veryfast", metadata={SIGNATURE_KEY: sig}) as writer:
        for frame in frames:
            writer.write(frame)

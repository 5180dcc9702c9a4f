"""The pose data schema: the contract between the pose and render stages.

`.scail/pose.npz` (driving video) and `.scail/ref_pose.npz` (reference image, one frame) hold plain
numpy arrays, loadable with `allow_pickle=False`. N frames, P tracked people. NaN marks unknown.

| array     | shape          | meaning                                                         |
|-----------|----------------|-----------------------------------------------------------------|
| fps       | ()             | frame rate of the normalised frames                             |
| size      | (2,)           | H, W of the normalised frames                                   |
| K         | (3, 3)         | intrinsics for 3D -> 2D                                         |
| track_id  | (P,)           | stable identity of each person                                  |
| body3d    | (N, P, 24, 3)  | SMPL-24 joints, camera space, millimetres                       |
| body2d    | (N, P, 18, 3)  | OpenPose-18 (x/W, y/H, score)                                   |
| face2d    | (N, P, 68, 3)  | 68 face landmarks (x/W, y/H, score)                             |
| hands2d   | (N, P, 2, 21, 3) | left, right hand (DWPose order), (x/W, y/H, score)            |
| bbox      | (N, P, 5)      | x0, y0, x1, y1 in pixels, score                                 |
| backend   | () str         | which backend produced it                                       |
| version   | () str         | backend/model version                                           |
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from scail.atomic import atomic_write_bytes
from scail.errors import InputError

SCHEMA_VERSION = 1


def official_intrinsics(size_hw: tuple[int, int]) -> np.ndarray:
    """official: f = max(H, W) / (2 tan(55deg / 2)), cx = W/2, cy = H/2."""
    h, w = size_hw
    f = max(h, w) / (2.0 * math.tan(math.radians(55.0) / 2.0))
    return np.array([[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]], dtype=np.float64)


@dataclass
class PoseData:
    """Validated pose arrays for N frames and P people (see the module docstring)."""

    fps: float
    size: tuple[int, int]
    K: np.ndarray
    track_id: np.ndarray
    body3d: np.ndarray
    body2d: np.ndarray
    face2d: np.ndarray
    hands2d: np.ndarray
    bbox: np.ndarray
    backend: str = "unknown"
    version: str = ""

    @property
    def num_frames(self) -> int:
        return int(self.body3d.shape[0])

    @property
    def num_people(self) -> int:
        return int(self.body3d.shape[1])

    @classmethod
    def empty(cls, num_frames: int, num_people: int, size_hw: tuple[int, int], fps: float = 16.0,
              backend: str = "unknown", version: str = "") -> PoseData:
        """All-NaN pose data of the right shapes (backends fill what they detect)."""
        n, p = num_frames, num_people
        nan = np.float32("nan")
        return cls(
            fps=float(fps), size=(int(size_hw[0]), int(size_hw[1])), K=official_intrinsics(size_hw),
            track_id=np.arange(p, dtype=np.int64),
            body3d=np.full((n, p, 24, 3), nan, np.float32), body2d=np.full((n, p, 18, 3), nan, np.float32),
            face2d=np.full((n, p, 68, 3), nan, np.float32), hands2d=np.full((n, p, 2, 21, 3), nan, np.float32),
            bbox=np.full((n, p, 5), nan, np.float32), backend=backend, version=version,
        )

    def validate(self, source: str = "pose data") -> PoseData:
        """Check every shape and dtype; raise `InputError` naming the array and what was expected."""
        n, p = self.body3d.shape[:2] if self.body3d.ndim == 4 else (-1, -1)
        expected = {
            "body3d": (n, p, 24, 3), "body2d": (n, p, 18, 3), "face2d": (n, p, 68, 3),
            "hands2d": (n, p, 2, 21, 3), "bbox": (n, p, 5), "track_id": (p,), "K": (3, 3),
        }
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise InputError(f"{source}: array '{name}' has shape {got}, expected {shape}; "
                                 "regenerate it with 'scail pose --force'")
        if len(self.size) != 2 or min(self.size) <= 0:
            raise InputError(f"{source}: 'size' must be (H, W) > 0, got {self.size}")
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise InputError(f"{source}: 'fps' must be > 0, got {self.fps}")
        return self

    def select_frames(self, idx: np.ndarray | slice) -> PoseData:
        """A copy restricted to some frames (all per-frame arrays are indexed on axis 0)."""
        return PoseData(
            fps=self.fps, size=self.size, K=self.K.copy(), track_id=self.track_id.copy(),
            body3d=self.body3d[idx].copy(), body2d=self.body2d[idx].copy(), face2d=self.face2d[idx].copy(),
            hands2d=self.hands2d[idx].copy(), bbox=self.bbox[idx].copy(), backend=self.backend,
            version=self.version,
        )


    def select_people(self, idx: list[int]) -> PoseData:
        """A copy restricted to some people (slots `idx`, in that order; axis 1 of the per-person arrays)."""
        return PoseData(
            fps=self.fps, size=self.size, K=self.K.copy(), track_id=self.track_id[idx].copy(),
            body3d=self.body3d[:, idx].copy(), body2d=self.body2d[:, idx].copy(), face2d=self.face2d[:, idx].copy(),
            hands2d=self.hands2d[:, idx].copy(), bbox=self.bbox[:, idx].copy(), backend=self.backend,
            version=self.version,
        )


_FLOAT_ARRAYS = ("K", "body3d", "body2d", "face2d", "hands2d", "bbox")


def save_pose(pose: PoseData, path: Path) -> None:
    """Validate and write `pose` to `path` (.npz) atomically (temp file + rename)."""
    pose.validate(str(path))
    arrays: dict[str, np.ndarray] = {
        "schema_version": np.array(SCHEMA_VERSION, np.int64),
        "fps": np.array(pose.fps, np.float64),
        "size": np.array(pose.size, np.int64),
        "track_id": np.asarray(pose.track_id, np.int64),
        "backend": np.array(pose.backend),
        "version": np.array(pose.version),
    }
    for name in _FLOAT_ARRAYS:
        arrays[name] = np.asarray(getattr(pose, name), np.float64 if name == "K" else np.float32)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(path, buf.getvalue())


def load_pose(path: Path | str) -> PoseData:
    """Read and validate a pose .npz (never unpickles). Raises `InputError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: pose data not found; run 'scail pose' on the example first")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError...
        raise InputError(f"{path}: unreadable pose data ({exc}); delete it and rerun 'scail pose'") from exc
    missing = [f.name for f in fields(PoseData) if f.name not in data and f.name not in ("backend", "version")]
    if missing:
        raise InputError(f"{path}: pose data lacks arrays {missing}; rerun 'scail pose --force'")
    numeric = ("fps", "size", "K", "track_id", *_FLOAT_ARRAYS)
    odd = next((k for k in numeric if data[k].dtype.kind not in "biuf"), None)
    if odd is not None:  # text, complex or object values where numbers go
        raise InputError(f"{path}: array '{odd}' holds {data[odd].dtype} values, expected numbers; "
                         "rerun 'scail pose --force'")
    try:
        with np.errstate(invalid="raise"):  # NaN where an integer goes (track ids) is malformed
            pose = PoseData(
                fps=float(data["fps"]), size=(int(data["size"][0]), int(data["size"][1])),
                K=data["K"].astype(np.float64), track_id=data["track_id"].astype(np.int64),
                body3d=data["body3d"].astype(np.float32), body2d=data["body2d"].astype(np.float32),
                face2d=data["face2d"].astype(np.float32), hands2d=data["hands2d"].astype(np.float32),
                bbox=data["bbox"].astype(np.float32),
                backend=str(data["backend"]) if "backend" in data else "unknown",
                version=str(data["version"]) if "version" in data else "",
            )
    except (TypeError, ValueError, IndexError, ArithmeticError) as exc:  # text where numbers go, wrong ranks
        raise InputError(f"{path}: malformed pose data ({type(exc).__name__}: {exc}); "
                         "delete it and rerun 'scail pose'") from exc
    return pose.validate(str(path))

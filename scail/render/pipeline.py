"""Pose data -> skeleton frames: `render_pose` and its streaming form `iter_render_pose`.

The depth shading of the official renderer uses constants from the whole clip, so rendering is two
passes: a cheap one over the joints (capsules, clip depth range, optional alignment fit), then the
frames in chunks of a few frames (bounded memory whatever the clip length).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from scail.device import resolve_device
from scail.pose.schema import PoseData, load_pose
from scail.render.align import AlignBounds, Alignment, align_overlay, fit_alignment
from scail.render.overlay import OverlayMarks, overlay_marks
from scail.render.raycast import Camera, DepthShading, default_chunk_frames, render_capsules
from scail.render.retarget import retarget as retarget_joints
from scail.render.skeleton import Capsules, capsules_from_joints, palettes_for, valid_joints

if TYPE_CHECKING:
    import torch

    from scail.stage import ProgressFn

log = logging.getLogger(__name__)



@dataclass
class PreparedRender:
    """Everything the frame pass needs, computed from the joints alone (first pass)."""

    size_hw: tuple[int, int]
    fps: float
    camera: Camera
    depth: DepthShading
    capsules: Capsules
    overlay: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    """(body2d (T, P, 18, 3), face2d (T, P, 68, 3), hands2d (T, P, 2, 21, 3)), or None without overlay."""
    radius_mm: float
    alignment: Alignment | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return self.capsules.num_frames


def _as_pose(pose: PoseData | Path | str, what: str) -> PoseData:
    if isinstance(pose, PoseData):
        return pose.validate(what)
    return load_pose(Path(pose))


def prepare_render(pose: PoseData | Path | str, overlay: bool = True, reference: PoseData | Path | str | None = None,
                   *, radius_mm: float = 21.5, align: bool = True, align_bounds: AlignBounds | None = None,
                   retarget: bool = False, multi_person_palettes: bool | None = None) -> PreparedRender:
    """First pass over the joints: capsules, clip depth constants, alignment.

    `reference` is aligned to when `align` (official rendered_aligned.mp4), and lends its bone
    lengths when `retarget`.
    """
    drv = _as_pose(pose, "driving pose data")
    ref = _as_pose(reference, "reference pose data") if reference is not None else None
    size_hw = (int(drv.size[0]), int(drv.size[1]))
    warnings: list[str] = []
    body3d = drv.body3d
    if retarget:
        if ref is None or ref.num_frames == 0 or ref.num_people == 0 or not valid_joints(ref.body3d[0, 0]).any():
            warnings.append("retarget requested but the reference has no 3D joints; driving proportions kept")
        else:
            body3d = retarget_joints(body3d, ref.body3d[0, 0])
    body2d, face2d, hands2d = drv.body2d, drv.face2d, drv.hands2d
    K = np.asarray(drv.K, dtype=np.float64)
    alignment = None
    if ref is not None and align:
        if tuple(ref.size) != size_hw:
            warnings.append(f"reference pose size {tuple(ref.size)} differs from the driving size {size_hw}; "
                            "its keypoints are used as fractions of the driving frame")
        if ref.num_frames == 0 or ref.num_people == 0 or drv.num_people == 0:
            warnings.append("no reference or driving person; rendering without alignment")
        else:
            alignment = fit_alignment(body3d[:, 0], face2d[:, 0], ref.body2d[0, 0], ref.face2d[0, 0], K, size_hw,
                                      align_bounds)
            if alignment is None:
                warnings.append("the reference pose has too few visible body points; rendering without alignment")
            else:
                warnings.extend(alignment.warnings)
                body2d, face2d, hands2d = body2d.astype(np.float64), face2d.astype(np.float64), \
                    hands2d.astype(np.float64)
                for p in range(drv.num_people):
                    body2d[:, p], face2d[:, p], hands2d[:, p] = align_overlay(
                        body3d[:, p], drv.body2d[:, p], drv.face2d[:, p], drv.hands2d[:, p], alignment, K, size_hw)
                K = alignment.K
    active = [bool(valid_joints(body3d[:, p]).any()) for p in range(drv.num_people)]
    palettes = palettes_for(max(sum(active), 1), multi_person_palettes)
    per_person, k = [], 0
    for is_active in active:
        per_person.append(palettes[min(k, len(palettes) - 1)])
        k += int(is_active)
    caps = capsules_from_joints(body3d, per_person)
    return PreparedRender(
        size_hw=size_hw, fps=float(drv.fps), camera=Camera.from_K(K, size_hw),
        depth=DepthShading.from_range(caps.depth_range()), capsules=caps,
        overlay=(body2d, face2d, hands2d) if overlay else None, radius_mm=float(radius_mm),
        alignment=alignment, warnings=warnings,
    )


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with n torch CPU threads (None: leave torch's setting), restoring it afterwards."""
    import torch

    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_POOLS: dict[str, tuple[int, ThreadPoolExecutor]] = {}
_POOLS_LOCK = threading.Lock()
COPY_THREADS = 8
"""Threads that copy rendered frames into the output array (at most the CPU count)."""


def _shared_pool(name: str, workers: int) -> ThreadPoolExecutor:
    """A thread pool created on first use and reused across calls (starting threads costs ~0.1 ms each).

    After a fork the child gets a new pool: it has none of the parent's threads.
    """
    with _POOLS_LOCK:
        pid, pool = _POOLS.get(name, (-1, None))
        if pool is None or pid != os.getpid():
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"scail-render-{name}")
            _POOLS[name] = (os.getpid(), pool)
        return pool


def _copy_frames(dst: np.ndarray, src: np.ndarray, pool: ThreadPoolExecutor, workers: int) -> None:
    """dst[:] = src, split over frames between `workers` threads of `pool` (np.copyto releases the GIL).

    A fresh output array is mostly first-touch page faults; several threads take them in parallel.
    """
    n = src.shape[0]
    if workers <= 1 or n < 2:
        np.copyto(dst, src)
        return
    bounds = np.linspace(0, n, min(workers, n) + 1).astype(int).tolist()
    list(pool.map(lambda a, b: np.copyto(dst[a:b], src[a:b]), bounds[:-1], bounds[1:]))


def _page_locked(shape: tuple[int, ...]) -> torch.Tensor | None:
    """An uninitialised page-locked uint8 host tensor (torch caches these between calls), or None."""
    import torch

    try:
        return torch.empty(shape, dtype=torch.uint8, pin_memory=True)
    except RuntimeError:                                                          # none to be had here
        return None


def _to_numpy(frames: torch.Tensor, dst: np.ndarray | None, copy_pool: ThreadPoolExecutor,
              copy_workers: int) -> np.ndarray:
    """The rendered chunk as numpy: into `dst` when given, else a new array (or the CPU tensor's own memory).

    From a GPU: one DMA into page-locked memory (torch caches it between calls), then a parallel
    copy into `dst`; where page-locked memory is unavailable, one pageable copy straight into `dst`.
    """
    import torch

    if frames.device.type == "cpu":
        if dst is None:
            return frames.numpy()                                                 # no copy
        _copy_frames(dst, frames.numpy(), copy_pool, copy_workers)
        return dst
    if dst is None:
        dst = np.empty(tuple(frames.shape), dtype=np.uint8)
    host = _page_locked(tuple(frames.shape)) if frames.device.type == "cuda" else None
    if host is None:
        torch.from_numpy(dst).copy_(frames)                                       # one pageable copy
        return dst
    host.copy_(frames, non_blocking=True)
    torch.cuda.current_stream(frames.device).synchronize()
    _copy_frames(dst, host.numpy(), copy_pool, copy_workers)
    return dst


def _chunk_marks(overlay: tuple[np.ndarray, np.ndarray, np.ndarray], sl: slice,
                 size_hw: tuple[int, int]) -> OverlayMarks:
    body, face, hands = overlay
    return overlay_marks(body[sl], face[sl], hands[sl], size_hw)


def _render_chunks(prep: PreparedRender, dev: torch.device, chunk: int, cpu_threads: int | None,
                   out: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Yield the frames of each chunk (n, H, W, 3) uint8 with the overlay pasted (in `out` when given).

    The overlay marks need only the 2D points, so a worker thread computes them one chunk ahead
    while the 3D pass renders (torch, OpenCV and large numpy operations release the GIL); pasting
    them is one indexed assignment per chunk.
    """
    total = prep.num_frames
    slices = [slice(s, min(s + chunk, total)) for s in range(0, total, chunk)]
    overlay = prep.overlay
    copy_workers = min(COPY_THREADS, os.cpu_count() or 1)
    copy_pool = _shared_pool("copy", copy_workers)
    marks_pool = _shared_pool("overlay", 1)
    pending: dict[int, Future[OverlayMarks]] = {}
    try:
        for k, sl in enumerate(slices):
            if overlay is not None:
                for ahead in (k, k + 1):                                          # this chunk and the next
                    if ahead < len(slices) and ahead not in pending:
                        pending[ahead] = marks_pool.submit(_chunk_marks, overlay, slices[ahead], prep.size_hw)
            with _torch_threads(cpu_threads if dev.type == "cpu" else None):
                frames = render_capsules(prep.capsules.select(sl), prep.camera, prep.depth, prep.radius_mm, dev)
            frames_np = _to_numpy(frames, out[sl] if out is not None else None, copy_pool, copy_workers)
            del frames
            if overlay is not None:
                pending.pop(k).result().paste(frames_np)
            yield frames_np
    finally:
        for fut in pending.values():                                              # stopped early
            fut.cancel()


def iter_frames(prep: PreparedRender, device: str | torch.device = "cpu", chunk_frames: int | None = None,
                on_progress: ProgressFn | None = None, cpu_threads: int | None = 1) -> Iterator[np.ndarray]:
    """Second pass: yield (H, W, 3) uint8 RGB frames, rendered `chunk_frames` at a time on `device`.

    On CPU the 3D pass runs with `cpu_threads` torch threads (None: torch's default). One thread
    is the default: the per-op work is small, and on a shared machine OpenMP barriers between
    ~100 small ops per chunk cost far more than a second core gains (measured 10x slower at load 10).
    The 2D overlay of a chunk is computed by a worker thread while the 3D pass runs.
    """
    dev = resolve_device(device, what="render device")
    total = prep.num_frames
    chunk = chunk_frames or default_chunk_frames(prep.camera, dev.type == "cuda")
    done = 0
    for frames in _render_chunks(prep, dev, chunk, cpu_threads):
        for i in range(frames.shape[0]):
            done += 1
            if on_progress is not None:
                on_progress(done, total)
            yield frames[i]


def iter_render_pose(pose: PoseData | Path | str, overlay: bool = True,
                     reference: PoseData | Path | str | None = None, *, radius_mm: float = 21.5,
                     device: str | torch.device = "cpu", on_progress: ProgressFn | None = None,
                     align: bool = True, align_bounds: AlignBounds | None = None, retarget: bool = False,
                     multi_person_palettes: bool | None = None, chunk_frames: int | None = None,
                     cpu_threads: int | None = 1) -> Iterator[np.ndarray]:
    """Streaming `render_pose`: frames one at a time, memory bounded by one chunk."""
    prep = prepare_render(pose, overlay, reference, radius_mm=radius_mm, align=align, align_bounds=align_bounds,
                          retarget=retarget, multi_person_palettes=multi_person_palettes)
    for msg in prep.warnings:
        log.warning("render: %s", msg)
    yield from iter_frames(prep, device, chunk_frames, on_progress, cpu_threads)


def render_pose(pose: PoseData | Path | str, overlay: bool = True, reference: PoseData | Path | str | None = None,
                *, radius_mm: float = 21.5, device: str | torch.device = "cpu",
                on_progress: ProgressFn | None = None, align: bool = True, align_bounds: AlignBounds | None = None,
                retarget: bool = False, multi_person_palettes: bool | None = None,
                chunk_frames: int | None = None, cpu_threads: int | None = 1) -> np.ndarray:
    """Render pose data to skeleton frames (N, H, W, 3) uint8 RGB, as the official renderer draws them.

    Args:
        pose: driving pose data (`.scail/pose.npz` or loaded `PoseData`).
        overlay: paint the 2D face, hand and head marks over the 3D skeleton.
        reference: reference pose data: when given (and `align`), the frames are aligned to it
            (official rendered_aligned.mp4 alignment).
        radius_mm: capsule radius (the model was trained on 21.5).
        device: torch device for the 3D pass ("cpu", "cuda", "auto").
        on_progress: called as on_progress(done_frames, total_frames).
        align: align to `reference` (False: use it only for `retarget`).
        align_bounds: bounds of the alignment fit (official defaults).
        retarget: give the driving skeleton the reference person's bone lengths first.
        multi_person_palettes: force (True) or forbid (False) the two-person palettes; default: used
            when two or more people have 3D joints.
        chunk_frames: frames per 3D batch (default: 16 at 896x512 on CPU, 128 on CUDA).
        cpu_threads: torch threads of the CPU 3D pass (None: torch's default; see `iter_frames`).
    """
    prep = prepare_render(pose, overlay, reference, radius_mm=radius_mm, align=align, align_bounds=align_bounds,
                          retarget=retarget, multi_person_palettes=multi_person_palettes)
    for msg in prep.warnings:
        log.warning("render: %s", msg)
    h, w = prep.size_hw
    dev = resolve_device(device, what="render device")
    total = prep.num_frames
    chunk = chunk_frames or default_chunk_frames(prep.camera, dev.type == "cuda")
    out = np.empty((total, h, w, 3), dtype=np.uint8)
    done = 0
    for frames in _render_chunks(prep, dev, chunk, cpu_threads, out):                # written into out
        for _ in range(frames.shape[0]):
            done += 1
            if on_progress is not None:
                on_progress(done, total)
    return out

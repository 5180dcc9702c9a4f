"""Backend `nlf`: the official-faithful path (NLF 3D SMPL joints + DWPose whole-body 2D).

Per frame: ultralytics person boxes and our tracker give each person a slot; DWPose
(dw-ll_ucoco_384 through rtmlib's RTMPose runner, BGR input like upstream) gives 133 whole-body
points in the box; NLF (`nlf_l_multi_0.3.2` torchscript, `detect_smpl_batched`) runs on the
official black-masked image of the box and its `joints3d_nonparam[0]` are the SMPL-24 joints
(camera mm, the same K as ours: 55deg field of view on the full frame).

Written for a GPU machine with internet (weights download on first use). What runs without the
weights (masking, keypoint conversion, the torchvision op shim) is tested on CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from scail.errors import CheckpointError
from scail.pose.backends import nlf_weights
from scail.pose.backends.common import FrameProgressFn, PersonPose, assemble, track_video
from scail.pose.schema import PoseData

log = logging.getLogger(__name__)

# OpenPose-18 <- COCO-WholeBody body indices (-1: neck = mean of the shoulders 5, 6)
OP18_FROM_COCO = np.array([0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3])
FACE_SLICE = slice(23, 91)  # 68 face points in COCO-WholeBody (DWPose's 24..91 after its neck insert)
LEFT_HAND_SLICE = slice(91, 112)
RIGHT_HAND_SLICE = slice(112, 133)
NECK_MIN_SCORE = 0.3


def masked_person_image(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """official NLF input: a black full-size image showing only the box grown by 2.5% W and 5% H.

    Args:
        frame: (H, W, 3) uint8. box: (>=4,) x0, y0, x1, y1 in pixels.
    Returns (H, W, 3) uint8 (floor of the low edges, ceil of the high edges, clipped to the frame).
    """
    h, w = frame.shape[:2]
    x0 = int(np.clip(np.floor(box[0] - 0.025 * w), 0, w))
    x1 = int(np.clip(np.ceil(box[2] + 0.025 * w), 0, w))
    y0 = int(np.clip(np.floor(box[1] - 0.05 * h), 0, h))
    y1 = int(np.clip(np.ceil(box[3] + 0.05 * h), 0, h))
    out = np.zeros_like(frame)
    out[y0:y1, x0:x1] = frame[y0:y1, x0:x1]
    return out


def person_from_wholebody(kpts_px: np.ndarray, scores: np.ndarray, size_hw: tuple[int, int],
                          box: np.ndarray) -> PersonPose:
    """DWPose 133 points (pixels) + scores -> PersonPose 2D parts in (x/W, y/H, score).

    Args:
        kpts_px: (133, 2) pixel coordinates in the frame. scores: (133,).
    """
    h, w = size_hw
    norm = np.concatenate([kpts_px / np.array([w, h]), scores[:, None]], -1).astype(np.float32)  # (133, 3)
    idx = OP18_FROM_COCO.copy()
    idx[1] = 5
    body = norm[idx].copy()
    body[1, :2] = (norm[5, :2] + norm[6, :2]) / 2
    # official DWPose: the neck's score is 1 when both shoulders score > 0.3, else 0
    body[1, 2] = 1.0 if min(norm[5, 2], norm[6, 2]) > NECK_MIN_SCORE else 0.0
    person = PersonPose(bbox=np.asarray(box, np.float32)[:5])
    person.body2d = body
    person.face2d = norm[FACE_SLICE].copy()
    person.hands2d = np.stack([norm[LEFT_HAND_SLICE], norm[RIGHT_HAND_SLICE]])
    return person


def first_detection_joints(pred_joints: list[Any]) -> list[np.ndarray | None]:
    """official `collect_smpl_poses`: detection [0] of each image, None where NLF found nobody.

    Args:
        pred_joints: per image a (n_det, 24, 3) tensor/array (NLF `joints3d_nonparam`, mm).
    """
    out: list[np.ndarray | None] = []
    for j in pred_joints:
        arr = j.detach().float().cpu().numpy() if hasattr(j, "detach") else np.asarray(j, np.float32)
        out.append(arr[0].astype(np.float32) if arr.shape[0] > 0 else None)
    return out


def ensure_torchvision_ops() -> None:
    """Make `import torchvision` work (the NLF torchscript calls torchvision::nms).

    On a matching torch/torchvision pair (the GPU machines) this is a plain import. PyPI's
    torchvision next to the CPU torch build fails with "operator torchvision::nms does not exist";
    then the half-imported modules are dropped, nms is registered from a small pure-torch
    implementation, and torchvision is imported again.
    """
    import sys

    import torch

    try:
        import torchvision  # a matching build registers its own ops
        return
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    log.info("torchvision's C ops do not load beside this torch build; registering a pure-torch nms")
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the failed import left half-initialised modules behind
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")  # torchvision registers its fake
    lib.impl("nms", _nms_reference, "CPU")
    _KEEP.append(lib)
    import torchvision.extension

    torchvision.extension._has_ops = lambda: True  # only nms is real; roi_align & co. stay absent


_KEEP: list[Any] = []


def _nms_reference(dets: Any, scores: Any, iou_threshold: float) -> Any:
    """Greedy NMS over (n, 4) boxes: indices kept, highest score first."""
    import torch

    order = scores.argsort(descending=True)
    x0, y0, x1, y1 = dets.unbind(1)
    areas = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
    keep = []
    while order.numel():
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = (torch.minimum(x1[i], x1[rest]) - torch.maximum(x0[i], x0[rest])).clamp(min=0)
        ih = (torch.minimum(y1[i], y1[rest]) - torch.maximum(y0[i], y0[rest])).clamp(min=0)
        inter = iw * ih
        order = rest[inter / (areas[i] + areas[rest] - inter).clamp(min=1e-9) <= iou_threshold]
    return torch.stack(keep) if keep else torch.empty(0, dtype=torch.long)


class NLFBackend:
    """NLF 3D + DWPose 2D per tracked person (downloads its weights on first use)."""

    name = "nlf"
    version = "nlf_l_multi_0.3.2+dw-ll_ucoco_384+yolo11n-pose"

    def __init__(self, weights_dir: Path, device: str = "cpu") -> None:
        nlf_path = nlf_weights.ensure(weights_dir, nlf_weights.NLF)
        dw_path = nlf_weights.ensure(weights_dir, nlf_weights.DWPOSE)
        import torch
        from rtmlib import RTMPose

        from scail.pose.backends.detector import PersonDetector

        ensure_torchvision_ops()
        self.device = torch.device(device)
        try:
            self.nlf = torch.jit.load(str(nlf_path), map_location=self.device).eval()
        except RuntimeError as exc:
            raise CheckpointError(f"{nlf_path}: cannot load the NLF torchscript ({exc}); "
                                  "delete it to download it again") from exc
        ort_device = "cuda" if self.device.type == "cuda" else "cpu"
        self.dwpose = RTMPose(str(dw_path), model_input_size=(288, 384), backend="onnxruntime", device=ort_device)
        self.detector = PersonDetector(device=device)

    def _estimate_frame(self, frame: np.ndarray, boxes: list[np.ndarray]) -> list[PersonPose]:
        import torch

        size_hw = (int(frame.shape[0]), int(frame.shape[1]))
        bgr = np.ascontiguousarray(frame[..., ::-1])  # upstream DWPose works on BGR
        kpts, scores = self.dwpose(bgr, bboxes=[b[:4].tolist() for b in boxes])  # (B, 133, 2), (B, 133)
        people = [person_from_wholebody(kpts[i], scores[i], size_hw, boxes[i]) for i in range(len(boxes))]
        batch = np.stack([masked_person_image(frame, b) for b in boxes])                   # (B, H, W, 3)
        images = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous().to(self.device)  # (B, 3, H, W)
        with torch.inference_mode():
            pred = self.nlf.detect_smpl_batched(images)
        for person, joints in zip(people, first_detection_joints(pred["joints3d_nonparam"]), strict=True):
            if joints is not None:
                person.body3d = joints
        return people

    def video(self, frames: Iterable[np.ndarray], size_hw: tuple[int, int], fps: float, max_people: int,
              on_frame: FrameProgressFn) -> PoseData:
        def estimate(frame: np.ndarray, slot: int, box: np.ndarray) -> PersonPose | None:
            return self._estimate_frame(frame, [box])[0]

        return track_video(frames, self.detector, estimate, size_hw, fps, max_people, on_frame,
                           self.name, self.version)

    def image(self, image: np.ndarray) -> PoseData:
        size_hw = (int(image.shape[0]), int(image.shape[1]))
        boxes, _ = self.detector(image)
        found: dict[int, PersonPose] = {}
        if len(boxes):
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            found[0] = self._estimate_frame(image, [boxes[int(np.argmax(area * boxes[:, 4]))]])[0]
        return assemble([found], 1, size_hw, 16.0, self.name, self.version)

    def close(self) -> None:
        self.nlf = None
        self.dwpose = None

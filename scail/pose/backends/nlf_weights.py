"""Weights of the `nlf` backend: where they live, whether they can be fetched, and a checked download.

Files go to `<weights_dir>/pose/`. Each download is written to a temp name, hashed while it streams,
checked against the pinned sha256 when one is known, and renamed into place; the hash is stored
beside the file (`<name>.sha256`) and checked again before the file is used. Where no hash is
pinned yet (this machine cannot reach the hosts to measure one), the first download's hash is
recorded and every later use is checked against it (trust on first use).
"""

from __future__ import annotations

import hashlib
import logging
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scail.atomic import atomic_path, atomic_write_text
from scail.cache import sha256_file
from scail.errors import CheckpointError

if TYPE_CHECKING:
    from scail.stage import ProgressFn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightFile:
    name: str
    url: str
    sha256: str | None
    """Pinned content hash; None where it could not be measured yet (trust on first use)."""


NLF = WeightFile("nlf_l_multi_0.3.2.torchscript",
                 "https://github.com/isarandi/nlf/releases/download/v0.3.2/nlf_l_multi_0.3.2.torchscript", None)
YOLOX = WeightFile("yolox_l.onnx", "https://huggingface.co/yzd-v/DWPose/resolve/main/yolox_l.onnx", None)
DWPOSE = WeightFile("dw-ll_ucoco_384.onnx",
                    "https://huggingface.co/yzd-v/DWPose/resolve/main/dw-ll_ucoco_384.onnx", None)
FILES = (NLF, DWPOSE)
"""What the nlf backend needs (person boxes come from ultralytics; YOLOX is listed for reference)."""


def pose_weights_dir(weights_dir: Path) -> Path:
    return weights_dir / "pose"


def missing_files(weights_dir: Path) -> list[Path]:
    d = pose_weights_dir(weights_dir)
    return [d / f.name for f in FILES if not (d / f.name).is_file()]


def downloadable(timeout_s: float = 2.0) -> bool:
    """Can the weight hosts be reached (a TCP connect, no data)? False on offline machines."""
    from scail.pose.hosts import reachable

    return all(reachable(f.url, timeout_s) for f in FILES)


def verify(path: Path, spec: WeightFile) -> None:
    """Check a present file against the pinned hash, else against the hash recorded at download."""
    side = path.with_name(path.name + ".sha256")
    expected = spec.sha256 or (side.read_text().split()[0] if side.is_file() else None)
    if expected is None:
        side.write_text(f"{sha256_file(path)}  {path.name}\n")  # placed by hand: record it now
        return
    got = sha256_file(path)
    if got != expected:
        raise CheckpointError(f"{path}: sha256 {got[:12]}... does not match {expected[:12]}...; "
                              "delete it to download it again")


def ensure(weights_dir: Path, spec: WeightFile,
           on_progress: ProgressFn | None = None) -> Path:
    """The local path of `spec`, downloading it first if needed (checked, atomic)."""
    dest = pose_weights_dir(weights_dir) / spec.name
    if dest.is_file():
        verify(dest, spec)
        return dest
    h = hashlib.sha256()
    log.info("downloading %s -> %s", spec.url, dest)
    try:
        with atomic_path(dest) as tmp:
            with urllib.request.urlopen(spec.url, timeout=60) as resp, open(tmp, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                done = 0
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    if on_progress:
                        on_progress(done, total)
            digest = h.hexdigest()
            if spec.sha256 and digest != spec.sha256:
                raise CheckpointError(f"{spec.url}: downloaded file has sha256 {digest[:12]}..., expected "
                                      f"{spec.sha256[:12]}...; try again or place the file at {dest}")
        atomic_write_text(dest.with_name(dest.name + ".sha256"), f"{digest}  {dest.name}\n")
    except OSError as exc:
        raise CheckpointError(f"cannot download {spec.url} ({exc}); place the file at {dest} "
                              "or use --pose-backend mediapipe") from exc
    return dest

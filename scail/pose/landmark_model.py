"""MediaPipe's heavy pose landmark model: where it comes from and how it gets into the pose env.

Why: on examples/001 the heavy landmark model, run on each frame independently, agrees with the
official pose video better than the `full` model that ships in mediapipe's wheel (open-mask IoU
mean 0.709 against 0.693; benchmarks/README.md, "pose_agreement.py"). The wheel does not carry it:
mediapipe downloads it on first use from a Google Cloud bucket into its own package folder, with
no checksum. scail installs the same file there itself, before the worker starts, checked against a
pinned sha256, from (in this order):

1. the pose env's mediapipe package, where an earlier run put it (checked, then used);
2. `<weights_dir>/pose/pose_landmark_heavy.tflite`, placed by hand on offline machines;
3. the npm registry's `@mediapipe/pose` package (Google's own release of the same models; the
   registry serves immutable, versioned tarballs): the one member is streamed out of the tarball.

`pose.mediapipe_model: full` uses the wheel's model and needs none of this.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
import tarfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast
from urllib.parse import urlparse

from scail.atomic import atomic_path
from scail.cache import sha256_file
from scail.errors import CheckpointError
from scail.pose.hosts import reachable

log = logging.getLogger(__name__)

DownloadProgressFn = Callable[[int, "int | None"], None]
"""on_progress(bytes done, bytes total or None) while the tarball downloads."""


@dataclass(frozen=True)
class ModelFile:
    name: str
    sha256: str
    size: int
    url: str
    """A .tgz that holds the file as `member`."""
    member: str


HEAVY = ModelFile(
    name="pose_landmark_heavy.tflite",
    sha256="59e42d71bcd44cbdbabc419f0ff76686595fd265419566bd4009ef703ea8e1fe",
    size=27_709_200,
    url="https://registry.npmjs.org/@mediapipe/pose/-/pose-0.5.1675469404.tgz",
    member="package/pose_landmark_heavy.tflite",
)
PACKAGE_SUBDIR = Path("modules") / "pose_landmark"
"""Where mediapipe looks for its pose landmark models, under its package folder."""


def hand_placed(weights_dir: Path, spec: ModelFile = HEAVY) -> Path:
    """Where a user puts the file on a machine that cannot download it."""
    return weights_dir / "pose" / spec.name


def is_good(path: Path, spec: ModelFile = HEAVY) -> bool:
    """The file is there with the pinned size and hash."""
    try:
        return path.stat().st_size == spec.size and sha256_file(path) == spec.sha256
    except OSError:
        return False


def mediapipe_dir(env: Path | None) -> Path | None:
    """The mediapipe package folder of the pose env at `env` (None: of this interpreter); None when
    mediapipe is not installed there. Found without importing mediapipe."""
    if env is None:
        spec = importlib.util.find_spec("mediapipe")
        return Path(spec.origin).parent if spec is not None and spec.origin else None
    found = sorted(env.glob("lib/python*/site-packages/mediapipe")) + sorted(env.glob("Lib/site-packages/mediapipe"))
    return found[0] if found else None


def installed_path(package: Path, spec: ModelFile = HEAVY) -> Path:
    return package / PACKAGE_SUBDIR / spec.name


def problem(env: Path | None, weights_dir: Path, spec: ModelFile | None = None) -> str:
    """'' when `ensure_installed` can work here (the file is installed, placed by hand or downloadable),
    else the one-line reason with the fix (for the preflight). `spec` defaults to HEAVY."""
    spec = spec or HEAVY
    package = mediapipe_dir(env) if env is None or env.exists() else None
    if package is not None and installed_path(package, spec).is_file():
        return ""
    if hand_placed(weights_dir, spec).is_file() or reachable(spec.url):
        return ""
    return (f"pose.mediapipe_model=heavy needs {spec.name} and {urlparse(spec.url).hostname} cannot be reached: "
            f"place the file (sha256 {spec.sha256[:12]}..., from {spec.member} of {spec.url}) at "
            f"{hand_placed(weights_dir, spec)}, or set pose.mediapipe_model=full")


def ensure_installed(package: Path, weights_dir: Path, spec: ModelFile | None = None,
                     on_progress: DownloadProgressFn | None = None) -> Path:
    """Put the checked model (`spec`, default HEAVY) into mediapipe's package folder `package` (see
    the module docstring for the sources) and return its path. Raises CheckpointError with one line
    naming the fix."""
    spec = spec or HEAVY
    dest = installed_path(package, spec)
    if dest.is_file():
        if is_good(dest, spec):
            return dest
        log.warning("%s does not match its pinned sha256; replacing it", dest)
    placed = hand_placed(weights_dir, spec)
    try:
        if placed.is_file():
            if not is_good(placed, spec):
                raise CheckpointError(f"{placed}: not MediaPipe's {spec.name} (size or sha256 differs from "
                                      f"{spec.sha256[:12]}...); replace it, or delete it to download the file")
            with atomic_path(dest) as tmp:
                shutil.copyfile(placed, tmp)
            return dest
        _download(spec, dest, on_progress)
    except PermissionError as exc:
        raise CheckpointError(f"{dest.parent}: cannot write MediaPipe's {spec.name} there ({exc.strerror}); "
                              "use the pose env (drop pose.in_process) or set pose.mediapipe_model=full") from exc
    return dest


def _download(spec: ModelFile, dest: Path, on_progress: DownloadProgressFn | None) -> None:
    """Stream the tarball, write its one member to `dest` (atomically), check size and hash."""
    log.info("downloading %s from %s", spec.name, spec.url)
    try:
        with urllib.request.urlopen(spec.url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            counting = _Counting(resp, total, on_progress)
            with tarfile.open(fileobj=cast(IO[bytes], counting), mode="r|gz") as tar:  # a stream: members in order
                for member in tar:
                    if member.name != spec.member:
                        continue
                    src = tar.extractfile(member)
                    if src is None or member.size != spec.size:
                        break
                    h = hashlib.sha256()
                    with atomic_path(dest) as tmp:
                        with open(tmp, "wb") as out:
                            while chunk := src.read(1 << 20):
                                h.update(chunk)
                                out.write(chunk)
                        if h.hexdigest() != spec.sha256:
                            raise CheckpointError(f"{spec.url}: {spec.member} has sha256 {h.hexdigest()[:12]}..., "
                                                  f"expected {spec.sha256[:12]}...; try again later")
                    return
    except (OSError, tarfile.TarError) as exc:
        if isinstance(exc, PermissionError):
            raise
        raise CheckpointError(f"cannot download {spec.url} ({exc}); place {spec.name} at "
                              f"<weights_dir>/pose/{spec.name}, or set pose.mediapipe_model=full") from exc
    raise CheckpointError(f"{spec.url}: holds no {spec.member} of {spec.size} bytes; "
                          "set pose.mediapipe_model=full")


class _Counting:
    """A read-only stream that reports how many bytes were read from it."""

    def __init__(self, raw: object, total: int | None, on_progress: DownloadProgressFn | None) -> None:
        self.raw, self.total, self.done, self.on_progress = raw, total, 0, on_progress

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.raw.read(n)  # type: ignore[attr-defined]
        self.done += len(data)
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)
        return data

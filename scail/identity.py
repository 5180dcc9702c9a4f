"""A cheap, cached identity of big files (checkpoints, LoRAs) for stage fingerprints.

Hashing 50 GB of weights on every `scail status` is out of the question, and a path alone says
nothing (`--weights-dir` pointed at another checkpoint kept old samples "fresh"). `file_identity`
reads about 3 MiB of a file: its size, its first MiB (a torch zip's pickle of keys and dtypes, a
safetensors header and first tensors), its last MiB (a torch zip's central directory, which holds
a CRC-32 of every tensor record, so any changed tensor shows) and 16 slices of 64 KiB spread over
the rest. Different checkpoints, fine-tunes and LoRAs of one architecture differ there.

The identity is cached in `$SCAIL_CACHE_DIR/identity.json`, keyed by (path, size, mtime_ns,
inode): a warm call is one `stat`. The mtime decides when the cache is re-read, but is not part of
the identity itself: a copied or re-downloaded file with the same bytes keeps its identity, so it
never sends hours of GPU work back to the queue, while any content change (same name or not) gives
a new one.

    from scail.identity import file_identity, files_identity
    file_identity(Path("lora.safetensors"))            # 'sha256:3fa9c1d2...'
    files_identity({"dit": dit_path, "vae": vae_path})  # {'dit': 'sha256:...', 'vae': 'sha256:...'}
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from scail.errors import InputError

log = logging.getLogger(__name__)

CACHE_NAME = "identity.json"
_HEAD = 1 << 20
_TAIL = 1 << 20
_SLICES = 16
_SLICE = 64 << 10
_VERSION = 1

_lock = threading.Lock()
_memo: dict[str, tuple[list[int], str]] = {}
"""In-process cache: abspath -> ([size, mtime_ns, inode], identity)."""


def _read_identity(path: Path, size: int) -> str:
    h = hashlib.sha256(f"scail-identity-v{_VERSION}:{size}:".encode())
    with open(path, "rb") as fh:
        h.update(fh.read(_HEAD))
        if size > _HEAD + _TAIL:
            step = (size - _HEAD - _TAIL) // (_SLICES + 1)
            for i in range(1, _SLICES + 1):
                fh.seek(_HEAD + i * step)
                h.update(fh.read(_SLICE))
        if size > _HEAD:
            fh.seek(max(_HEAD, size - _TAIL))
            h.update(fh.read(_TAIL))
    return f"sha256:{h.hexdigest()}"


def _cache_file() -> Path:
    from scail.config import Settings

    return Settings.from_env().cache_dir / CACHE_NAME


def _load_disk(cache: Path) -> dict[str, list[object]]:
    try:
        doc = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = doc.get("files") if isinstance(doc, dict) and doc.get("version") == _VERSION else None
    return files if isinstance(files, dict) else {}


def file_identity(path: Path) -> str:
    """'sha256:<hex>' of the file's size and sampled bytes (see the module docstring); cached.

    Raises `InputError` naming the file when it is missing or unreadable. A folder's identity is
    that of its files (name and identity of each, sorted), e.g. a tokenizer folder.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        h = hashlib.sha256()
        for p in files:
            h.update(f"{p.relative_to(path).as_posix()}={file_identity(p)}\n".encode())
        return f"sha256:{h.hexdigest()}"
    key = os.path.abspath(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the file ({exc.strerror}); check the path") from exc
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    with _lock:
        hit = _memo.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
    cache = _cache_file()
    disk = _load_disk(cache)
    row = disk.get(key)
    if isinstance(row, list) and len(row) == 4 and row[:3] == stamp:
        identity = str(row[3])
    else:
        try:
            identity = _read_identity(path, st.st_size)
        except OSError as exc:
            raise InputError(f"{path}: cannot read the file ({exc.strerror}); check the path") from exc
        disk[key] = [*stamp, identity]
        _save_disk(cache, disk)
    with _lock:
        _memo[key] = (stamp, identity)
    return identity


def _save_disk(cache: Path, files: dict[str, list[object]]) -> None:
    """Best effort: a read-only cache folder only costs re-reading 3 MiB per file next time."""
    from scail.atomic import atomic_write_text

    try:
        atomic_write_text(cache, json.dumps({"version": _VERSION, "files": files}))
    except OSError as exc:
        log.debug("%s: could not save the identity cache: %s", cache, exc)


def files_identity(paths: Mapping[str, Path]) -> dict[str, str]:
    """{name: file_identity(path)} for a named set of files (a model's components)."""
    return {name: file_identity(p) for name, p in paths.items()}

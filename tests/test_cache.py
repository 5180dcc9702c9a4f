"""The cache primitives: stat-cached hashes, fingerprints, manifests, the lock (atomic writes: test_atomic.py)."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest

from scail.cache import (
    ExampleLocked,
    HashCache,
    Manifest,
    example_lock,
    fingerprint,
    is_locked,
    manifest_path,
    read_manifest,
    write_manifest,
)
from scail.example import Example


def test_hash_cache_rehashes_only_when_stat_changes(tmp_path: Path) -> None:
    ex = Example(tmp_path)
    f = tmp_path / "driving.mp4"
    f.write_bytes(b"a" * 1000)
    assert HashCache(ex).hash(f) == hashlib.sha256(b"a" * 1000).hexdigest()
    cache = HashCache(ex)
    cache.hash(f)
    cache.save()
    st = os.stat(f)
    # Same size and mtime but different bytes: the warm cache does not re-read the file.
    f.write_bytes(b"b" * 1000)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert HashCache(ex).hash(f) == hashlib.sha256(b"a" * 1000).hexdigest()
    # A new mtime makes it re-read.
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert HashCache(ex).hash(f) == hashlib.sha256(b"b" * 1000).hexdigest()
    assert HashCache(ex).hash(tmp_path / "absent") is None


def test_hash_cache_keys_are_relative_and_survive_a_corrupt_file(tmp_path: Path, caplog) -> None:
    ex = Example(tmp_path)
    (tmp_path / "a.txt").write_text("x")
    cache = HashCache(ex)
    assert cache.key(tmp_path / "a.txt") == "a.txt"
    assert cache.key(Path("/elsewhere/w.pt")) == "/elsewhere/w.pt"
    (tmp_path / ".scail").mkdir()
    (tmp_path / ".scail" / "hashes.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="scail"):
        assert HashCache(ex).hash(tmp_path / "a.txt") == hashlib.sha256(b"x").hexdigest()
    assert "unreadable hash cache" in caplog.text


def test_fingerprint_depends_on_every_part() -> None:
    base = fingerprint("render", "1", {"radius_mm": 21.5}, {"pose.npz": "aa"})
    assert base == fingerprint("render", "1", {"radius_mm": 21.5}, {"pose.npz": "aa"})
    assert base != fingerprint("pose", "1", {"radius_mm": 21.5}, {"pose.npz": "aa"})
    assert base != fingerprint("render", "2", {"radius_mm": 21.5}, {"pose.npz": "aa"})
    assert base != fingerprint("render", "1", {"radius_mm": 20.0}, {"pose.npz": "aa"})
    assert base != fingerprint("render", "1", {"radius_mm": 21.5}, {"pose.npz": "ab"})


def test_manifest_round_trip_and_corrupt_manifest_is_a_warning(tmp_path: Path, caplog) -> None:
    ex = Example(tmp_path)
    m = Manifest(stage="render", status="done", fingerprint="f" * 64, outputs={"rendered.mp4": "00"},
                 notes={"seed": 42})
    write_manifest(ex, m)
    assert read_manifest(ex, "render") == m
    assert read_manifest(ex, "pose") is None
    manifest_path(ex, "render").write_text('{"stage": "render", "status": "don')
    with caplog.at_level(logging.WARNING, logger="scail"):
        assert read_manifest(ex, "render") is None
    assert "corrupt manifest" in caplog.text and "render.json" in caplog.text
    manifest_path(ex, "render").write_text('{"schema_version": 99, "stage": "render", "status": "done", '
                                           '"fingerprint": "x"}')
    with caplog.at_level(logging.WARNING, logger="scail"):
        assert read_manifest(ex, "render") is None
    assert "later scail" in caplog.text


def test_example_lock_excludes_a_second_holder(tmp_path: Path) -> None:
    ex = Example(tmp_path)
    assert not is_locked(ex)
    with example_lock(ex):
        assert is_locked(ex)
        with pytest.raises(ExampleLocked, match=rf"{tmp_path}: locked by another runner \(pid {os.getpid()}\)"), \
                example_lock(ex, wait_s=0.05):
            pass
    assert not is_locked(ex)
    with example_lock(ex):  # released: can be taken again
        pass

"""The weights' prefetch: which files it reads (in the loaders' order, within the memory there is),
that it reads them whole, that it stops when asked, and that the loaders run with it."""

from __future__ import annotations

import os
from pathlib import Path

from scail.animate import prefetch


def _file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def test_the_plan_keeps_the_loaders_order_and_stops_where_memory_ends(tmp_path: Path) -> None:
    a, b, c = _file(tmp_path / "dit", 600), _file(tmp_path / "vae", 300), _file(tmp_path / "t5", 50)
    missing, empty = tmp_path / "gone", _file(tmp_path / "empty", 0)
    assert prefetch.plan([a, missing, b, c, a], available_bytes=10_000) == [a, b, c]  # a once, the missing skipped
    # 80 % of 1,100 = 880: the DiT and then not the VAE (it would evict the DiT); not the small one after it either
    assert prefetch.plan([a, b, c], available_bytes=1_100) == [a]
    assert prefetch.plan([b, a], available_bytes=1_000) == [b]
    assert prefetch.plan([empty, tmp_path], available_bytes=10_000) == []  # empty files and folders: nothing to read


def test_it_reads_every_byte_of_the_planned_files_then_stops(tmp_path: Path) -> None:
    files = [_file(tmp_path / f"w{i}.safetensors", (3 << 20) + i) for i in range(3)]
    fetch = prefetch.Prefetch(files, available_bytes=1 << 30)
    fetch.join(30)
    fetch.stop()
    assert fetch.bytes_read == sum(f.stat().st_size for f in files)
    assert not fetch.alive()


def test_stop_ends_the_reads_early(tmp_path: Path) -> None:
    big = _file(tmp_path / "dit.safetensors", 64 << 20)
    fetch = prefetch.Prefetch([big], available_bytes=1 << 30)
    fetch.stop()
    assert not fetch.alive() and fetch.bytes_read <= big.stat().st_size


def test_nothing_starts_without_files_and_the_switch_turns_it_off(tmp_path: Path, monkeypatch) -> None:
    fetch = prefetch.Prefetch([tmp_path / "gone"])
    assert fetch.paths == [] and not fetch.alive()
    fetch.stop()
    monkeypatch.setenv("SCAIL_PREFETCH", "0")
    assert not prefetch.enabled()
    from scail.animate.build import _prefetch

    assert _prefetch(tmp_path / "dit.safetensors") is None


def test_several_readers_read_each_piece_once_and_the_switch_sets_how_many(tmp_path: Path, monkeypatch) -> None:
    files = [_file(tmp_path / f"w{i}.safetensors", (5 << 20) * (i + 1) + 7) for i in range(3)]
    fetch = prefetch.Prefetch(files, available_bytes=1 << 30, workers=3)
    fetch.join(30)
    fetch.stop()
    assert fetch.workers == 3 and fetch.bytes_read == sum(f.stat().st_size for f in files)
    assert fetch._fds == []  # the files are closed
    monkeypatch.setenv("SCAIL_PREFETCH", "8")
    assert prefetch.enabled() and prefetch.configured_workers() == 8
    monkeypatch.setenv("SCAIL_PREFETCH", "yes")
    assert prefetch.configured_workers() == prefetch.DEFAULT_WORKERS

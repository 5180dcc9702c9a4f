"""The weights' prefetch: which files it reads (in the loaders' order, within the memory there is),
that it reads them whole, that it stops when asked, and that the loaders run with it."""

from __future__ import annotations

import os
from pathlib import Path

from scail.animate import prefetch


def _file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def test_the_plan_keeps_the_loaders_order_and_the_most_bytes_that_fit(tmp_path: Path) -> None:
    vae, t5, clip, dit = (_file(tmp_path / n, s) for n, s in (("vae", 30), ("t5", 300), ("clip", 50), ("dit", 600)))
    missing, empty = tmp_path / "gone", _file(tmp_path / "empty", 0)
    loaders = [vae, t5, clip, dit]
    assert prefetch.plan([vae, missing, t5, clip, dit, vae], available_bytes=10_000) == loaders  # once each
    # 80 % of 1,000 = 800: not all (980); the most that fits keeps the order and the DiT (vae + clip + dit = 680)
    assert prefetch.plan(loaders, available_bytes=1_000) == [vae, clip, dit]
    # 80 % of 700 = 560: the DiT alone does not fit; the encoders' files do (380)
    assert prefetch.plan(loaders, available_bytes=700) == [vae, t5, clip]
    assert prefetch.plan(loaders, available_bytes=10) == []
    assert prefetch.plan([empty, tmp_path], available_bytes=10_000) == []  # empty files and folders: nothing to read
    many = [_file(tmp_path / f"f{i}", 10) for i in range(prefetch.MAX_EXHAUSTIVE + 2)]
    assert prefetch.plan(many, available_bytes=100) == many[:8]  # beyond the exhaustive search: the first that fit


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

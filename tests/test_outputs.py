"""The output contract through the real `scail` command (real stages, tiny-random, the demo example).

Every sample is named by what made it, earlier ones are kept, `<name>_latest.mp4` follows the most
recent run, the video and a sidecar say what made them, `status` names the latest sample and counts
the earlier ones, `clean` removes exactly what scail wrote, and `--force` moves a user's file aside.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scail.cli import app
from scail.demo import write_demo_example
from scail.video import probe, read_metadata

runner = CliRunner()
FAST = ["-p", "tiny-random", "--set", "animate.steps=1", "--set", "animate.max_frames=5"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _scail(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _outcomes(doc: dict) -> dict[str, str]:
    (example,) = doc["examples"]
    return {s["stage"]: s["outcome"] for s in example["stages"]}


def _status(root: Path, *args: str) -> dict:
    (example,) = _scail("status", str(root), *FAST, *args)["examples"]
    return example


def _samples(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "samples").iterdir() if not p.name.startswith("."))


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    return write_demo_example(tmp_path / "dance")


def test_every_sample_is_kept_named_by_what_made_it_and_latest_follows_the_run(demo: Path) -> None:
    assert _outcomes(_scail("run", str(demo), *FAST)) == {"pose": "user-provided", "render": "ran", "animate": "ran"}
    (first,) = [n for n in _samples(demo) if n.endswith(".mp4") and "latest" not in n]
    assert re.fullmatch(r"dance_42_[0-9a-f]{8}\.mp4", first)
    first_sha = _sha(demo / "samples" / first)
    latest = demo / "samples" / "dance_latest.mp4"
    assert _sha(latest) == first_sha

    # A new prompt adds a sample; the first one is untouched, latest moves to the new one.
    assert _outcomes(_scail("run", str(demo), *FAST, "--prompt", "a robot waving"))["animate"] == "ran"
    mp4s = [n for n in _samples(demo) if n.endswith(".mp4") and "latest" not in n]
    assert len(mp4s) == 2 and _sha(demo / "samples" / first) == first_sha
    (second,) = [n for n in mp4s if n != first]
    assert _sha(latest) == _sha(demo / "samples" / second)

    # The video and its sidecar say what made them.
    tags = read_metadata(demo / "samples" / second)
    assert tags["title"] == "a robot waving" and tags["scail_seed"] == "42" and tags["scail_preset"] == "tiny-random"
    assert json.loads(tags["comment"])["model"].startswith("tiny-random")
    sidecar = json.loads((demo / "samples" / second).with_suffix(".json").read_text(encoding="utf-8"))
    assert sidecar["prompt"] == "a robot waving" and sidecar["seed"] == 42 and sidecar["preset"] == "tiny-random"
    assert second.split("_")[2].startswith(sidecar["fingerprint"][:8]) and probe(latest).num_frames == 5

    # status answers for the options given: the latest sample and how many earlier ones exist.
    st = _status(demo, "--prompt", "a robot waving")
    assert st["stages"]["animate"]["status"] == "fresh"
    assert st["samples"] == {"latest": f"samples/{second}", "earlier": 1}
    assert _status(demo, "--prompt", "something new")["stages"]["animate"]["status"] == "stale"

    # Going back to the first settings finds the first sample again: nothing reruns, latest follows.
    assert _outcomes(_scail("run", str(demo), *FAST))["animate"] == "fresh"
    assert _sha(latest) == first_sha
    assert _status(demo)["samples"] == {"latest": f"samples/{first}", "earlier": 1}


def test_clean_removes_exactly_what_scail_wrote_and_the_rerun_redoes_it(demo: Path) -> None:
    _scail("run", str(demo), *FAST)
    _scail("run", str(demo), *FAST, "--seed", "7")
    mine = demo / "samples" / "my_cut.mp4"
    mine.write_bytes(b"the user's own edit")
    user_pose = _sha(demo / ".scail" / "pose.npz")
    # The manifest is lost (or deleted by hand): the ledger still knows scail wrote rendered.mp4.
    (demo / ".scail" / "render.json").unlink()
    assert _status(demo)["stages"]["render"]["status"] != "user-provided"

    result = runner.invoke(app, ["clean", str(demo)])
    assert result.exit_code == 0, result.output
    assert _samples(demo) == ["my_cut.mp4"]  # both samples, their sidecars and latest are gone
    assert not (demo / "rendered.mp4").exists() and not (demo / "rendered_aligned.mp4").exists()
    assert _sha(demo / ".scail" / "pose.npz") == user_pose  # user-provided pose data stays

    # Nothing left behind is taken for the user's: the next run regenerates everything.
    assert _outcomes(_scail("run", str(demo), *FAST)) == {"pose": "user-provided", "render": "ran", "animate": "ran"}


def test_force_moves_a_user_provided_file_aside_and_says_so(demo: Path) -> None:
    hand_made = b"my own skeleton video"
    (demo / "rendered.mp4").write_bytes(hand_made)
    st = _status(demo)["stages"]["render"]
    assert st["status"] == "user-provided"

    result = runner.invoke(app, ["render", str(demo), "-p", "tiny-random", "--force", "render", "--json"])
    assert result.exit_code == 0, result.output
    (backup,) = [p for p in demo.iterdir() if p.name.startswith("rendered.user-")]
    assert backup.read_bytes() == hand_made
    (stage,) = json.loads(result.stdout)["examples"][0]["stages"]
    assert stage["outcome"] == "ran" and f"moved to {backup.name}" in stage["reason"]
    assert f"moved it to {backup.name}" in " ".join(result.output.split())  # the warning on stderr
    assert probe(demo / "rendered.mp4").num_frames > 0
    # The backup is the user's file: clean leaves it.
    runner.invoke(app, ["clean", str(demo)])
    assert backup.read_bytes() == hand_made and not (demo / "rendered.mp4").exists()


def test_latest_is_a_plain_file_that_shares_the_sample_bytes(demo: Path) -> None:
    _scail("run", str(demo), *FAST)
    latest = demo / "samples" / "dance_latest.mp4"
    assert latest.is_file() and not latest.is_symlink()
    (sample,) = [p for p in (demo / "samples").glob("dance_42_*.mp4")]
    assert os.path.samefile(latest, sample)  # a hard link here: no second copy on disk


def test_an_interrupted_try_with_other_settings_does_not_hide_a_good_sample(demo: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    _scail("run", str(demo), *FAST)
    good = _sha(demo / "samples" / "dance_latest.mp4")
    manifest = demo / ".scail" / "animate.json"
    first_fp = json.loads(manifest.read_text())["fingerprint"]
    try_ = subprocess.Popen([sys.executable, "-m", "scail", "run", str(demo), *FAST, "--seed", "7", "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait for the second try's animate to start, then Ctrl-C it
        doc = json.loads(manifest.read_text()) if manifest.exists() else {}
        if doc.get("status") == "running" and doc.get("fingerprint") != first_fp:
            break
        time.sleep(0.05)
    try_.send_signal(signal.SIGINT)
    assert try_.wait(timeout=120) == 130
    assert json.loads(manifest.read_text())["status"] == "interrupted"

    assert _status(demo)["stages"]["animate"]["status"] == "fresh"  # the good sample still counts
    assert _status(demo, "--seed", "7")["stages"]["animate"]["status"] == "interrupted"
    assert _outcomes(_scail("run", str(demo), *FAST))["animate"] == "fresh"
    assert _sha(demo / "samples" / "dance_latest.mp4") == good


def test_clean_never_follows_a_ledger_or_manifest_out_of_the_example(tmp_path: Path) -> None:
    """A hand-edited ledger or manifest naming `../` or an absolute path deletes nothing there."""
    root = tmp_path / "examples" / "001"
    (root / ".scail").mkdir(parents=True)
    (root / "ref.png").write_bytes(b"not really a png")
    victim = tmp_path / "examples" / "precious.txt"
    victim.write_text("keep me")
    digest = _sha(victim)
    entry = {"stage": "animate", "sha256": digest, "fingerprint": "x" * 64, "written": "2026-12-07T00:00:00+00:00"}
    (root / ".scail" / "outputs.json").write_text(json.dumps(
        {"version": 1, "files": {"../precious.txt": entry, str(victim): entry}}))
    (root / ".scail" / "animate.json").write_text(json.dumps(
        {"stage": "animate", "status": "done", "fingerprint": "x", "outputs": {"../precious.txt": digest}}))
    result = runner.invoke(app, ["clean", str(root)])
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "keep me"

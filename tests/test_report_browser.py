"""The batch report in a real browser: Debian's headless Chromium, driven by Playwright.

A small real batch (two demo examples through `scail run` with the tiny-random model, one of them
with broken pose data) writes its report; the test opens that page from disk and checks what a
user would: every video loads and plays (H.264 through the browser's own decoder), the failed
example shows its reason, filtering by status and sorting work, and nothing is fetched from the
network. It saves a screenshot (`SCAIL_REPORT_SCREENSHOT=FILE` also writes one there: docs/report.jpg).

Playwright drives the system browser (`chromium` on PATH, `$SCAIL_TEST_CHROMIUM` to name another);
`playwright install` is never needed. Without the browser or the package the test skips, except
under CI (`CI=true`), where it fails: CI installs both (.ci/run, the dev extra).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from scail.report import REPORT_NAME

FRAMES = 9  # 4k+1: the shortest clip animate takes as it is (keeps the run to seconds)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
LAUNCH_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"]
"""No sandbox: CI runs as root in a container; small /dev/shm there; no GPU needed to decode."""


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the browser test must run; see .ci/run)")
    pytest.skip(reason)


def _chromium() -> str:
    path = os.environ.get("SCAIL_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        _unavailable("no chromium on PATH: apt-get install chromium (or set SCAIL_TEST_CHROMIUM)")
    assert path is not None
    return path


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two demo examples run once through the real CLI: `ok` animates, `broken` fails in render."""
    from scail.demo import write_demo_example

    root = tmp_path_factory.mktemp("report-batch") / "batch"
    write_demo_example(root / "ok", num_frames=FRAMES)
    broken = write_demo_example(root / "broken", num_frames=FRAMES)
    (broken / ".scail" / "pose.npz").write_bytes(b"not a pose file")
    env = {**os.environ, "SCAIL_WEIGHTS_DIR": str(tmp_path_factory.mktemp("weights"))}
    proc = subprocess.run([sys.executable, "-m", "scail", "run", str(root), "--pipeline", "tiny-random", "--json"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]  # one example failed, the batch went on
    doc = json.loads(proc.stdout)
    assert doc["report"] == str(root / REPORT_NAME)
    assert [e["ok"] for e in doc["examples"]] == [False, True]
    return root


@pytest.fixture(scope="module")
def chromium() -> str:
    """The browser's path, checked with Playwright's presence before the batch is run."""
    executable = _chromium()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("playwright is not installed: pip install -e '.[dev]'")
    return executable


@pytest.fixture(scope="module")
def page(chromium: str, batch: Path) -> Iterator[Any]:
    """The report opened in headless Chromium; requests that leave the disk are counted, and refused."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        pg.remote_requests = []
        pg.page_errors = []

        def route(r: Any) -> None:
            if r.request.url.startswith("file:"):
                r.continue_()
            else:
                pg.remote_requests.append(r.request.url)
                r.abort()

        pg.route("**/*", route)
        pg.on("pageerror", lambda exc: pg.page_errors.append(str(exc)))
        pg.goto((batch / REPORT_NAME).as_uri())
        yield pg
        browser.close()


def _visible_rows(pg: Any) -> list[str]:
    return list(pg.evaluate("() => [...document.querySelectorAll('tbody.ex')].filter(r => !r.hidden)"
                            ".map(r => r.dataset.name)"))


def test_every_video_and_image_loads_and_plays(page: Any, batch: Path, tmp_path: Path) -> None:
    page.click("#open-all")  # the videos under each row load when it is opened
    videos = page.locator("video")
    # ok: sample, preview videos, driving, condition (aligned), condition; broken: driving (render failed)
    assert videos.count() >= 5
    page.wait_for_function("() => [...document.querySelectorAll('video')].every(v => v.readyState >= 2 || v.error)",
                           timeout=30_000)
    states = page.evaluate("""() => [...document.querySelectorAll('video')].map(v => ({
        src: v.currentSrc, ready: v.readyState, duration: v.duration, error: v.error && v.error.code,
        width: v.videoWidth}))""")
    for s in states:
        assert s["error"] is None and s["ready"] >= 2 and s["duration"] > 0 and s["width"] > 0, s
    assert any(s["src"].endswith("_latest.mp4") or "/samples/" in s["src"] for s in states)
    played = page.evaluate("""async () => {
        const out = [];
        for (const v of document.querySelectorAll('video')) {
            await v.play();
            await new Promise(done => { const t = () => v.currentTime > 0 ? done() : setTimeout(t, 20); t(); });
            out.push(v.currentTime);
            v.pause();
        }
        return out;
    }""")
    assert len(played) == len(states) and all(t > 0 for t in played)
    # Every image loads too (reference thumbnails, contact sheets), and every preview file is on the page.
    page.wait_for_function("() => [...document.querySelectorAll('img')].every(i => i.complete)", timeout=30_000)
    images = page.evaluate("() => [...document.querySelectorAll('img')].map(i => [i.currentSrc, i.naturalWidth])")
    assert images and all(width > 0 for _, width in images), images
    shown = {Path(unquote(src)).name for src, _ in images} | {Path(unquote(s["src"])).name for s in states}
    previews = sorted(p.name for p in (batch / "ok" / "previews").glob("*") if not p.name.startswith("."))
    assert set(previews) <= shown, (previews, shown)

    shot = tmp_path / "report.png"
    page.click('th[data-sort="statusRank"]')  # failed first, then ok with its previews
    page.evaluate("""() => { document.querySelector('tbody.ex[data-name="broken"] details').open = false;
                             for (const v of document.querySelectorAll('video')) v.currentTime = 0.3; }""")
    page.wait_for_timeout(300)
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    docs_shot = os.environ.get("SCAIL_REPORT_SCREENSHOT")
    if docs_shot:  # the type follows the name: .jpg is a JPEG (quality 80, small enough to commit)
        page.screenshot(path=docs_shot, **({"quality": 80} if docs_shot.endswith((".jpg", ".jpeg")) else {}))
    assert page.remote_requests == [] and page.page_errors == []


def test_the_failed_row_shows_its_reason(page: Any, batch: Path) -> None:
    row = page.locator('tbody.ex[data-name="broken"]')
    assert row.get_attribute("data-status") == "failed"
    reason = row.locator(".reason").inner_text()
    assert reason.startswith("render: ") and str(batch / "broken" / ".scail" / "pose.npz") in reason
    assert row.locator(".st-failed").inner_text() == "failed"
    assert page.locator('tbody.ex[data-name="ok"] .reason').count() == 0


def test_filtering_and_sorting(page: Any) -> None:
    page.reload()  # the page as written: no sort or filter left by another test
    assert sorted(_visible_rows(page)) == ["broken", "ok"]
    page.select_option("#status-filter", "failed")
    assert _visible_rows(page) == ["broken"]
    assert not page.locator('tbody.ex[data-name="ok"]').is_visible()
    page.select_option("#status-filter", "ok")
    assert _visible_rows(page) == ["ok"]
    assert page.locator("#shown").inner_text() == "1 of 2 shown"
    page.select_option("#status-filter", "all")
    page.fill("#search", "bro")
    assert _visible_rows(page) == ["broken"]
    page.fill("#search", "")
    page.click('th[data-sort="name"]')
    assert _visible_rows(page) == ["broken", "ok"]
    page.click('th[data-sort="name"]')
    assert _visible_rows(page) == ["ok", "broken"]
    page.click('th[data-sort="statusRank"]')
    assert _visible_rows(page) == ["broken", "ok"]  # failed first

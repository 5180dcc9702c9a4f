"""The batch report (scail/report.py) and the output paths at the end of a run, with toy stages in-process.

The page itself is opened in a real browser by tests/test_report_browser.py; here: what the run
prints and puts in --json, where the page goes, that it links files relatively, and that a report
that cannot be written never fails the run.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

from typer.testing import CliRunner

from scail.cli import app
from scail.report import REPORT_NAME

runner = CliRunner()


def _batch(make_toy_example) -> tuple[Path, Path, Path]:
    ok = make_toy_example("001")
    bad = make_toy_example("002", driving=b"garbage")
    return ok.parent, ok, bad


def _links(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    return re.findall(r'(?:src|data-src|href)="([^"#]+)"', text)


def test_run_prints_each_result_and_the_report(toy_stages, make_toy_example) -> None:
    path, ok, _bad = _batch(make_toy_example)
    result = runner.invoke(app, ["run", str(path), "-p", "tiny-random"])
    assert result.exit_code == 2, result.output
    lines = result.stdout.splitlines()
    start = lines.index("outputs:")
    assert lines[start + 1].split() == ["001", str(ok / "samples" / "toy.mp4")]
    assert not any("002" in line for line in lines[start + 1:-1])  # the failed example has no result
    assert lines[-1] == f"report: {path / REPORT_NAME}"
    assert (path / REPORT_NAME).is_file()


def test_json_names_every_output_and_the_report(toy_stages, make_toy_example) -> None:
    path, ok, _bad = _batch(make_toy_example)
    result = runner.invoke(app, ["run", str(path), "-p", "tiny-random", "--json"])
    doc = json.loads(result.stdout)
    first, second = doc["examples"]
    assert first["outputs"] == [str(ok / "samples" / "toy.mp4")]
    assert {s["stage"]: s["outputs"] for s in first["stages"]} == {
        "pose": [str(ok / ".scail" / "pose.npz")], "render": [str(ok / "rendered.mp4")],
        "animate": [str(ok / "samples" / "toy.mp4")]}
    assert second["outputs"] == [] and second["ok"] is False
    assert doc["report"] == str(path / REPORT_NAME)
    # A rerun (every stage fresh) names the same files.
    again = json.loads(runner.invoke(app, ["run", str(path), "-p", "tiny-random", "--json"]).stdout)
    assert again["examples"][0]["outputs"] == first["outputs"]
    assert [s["outcome"] for s in again["examples"][0]["stages"]] == ["fresh"] * 3


def test_no_report_writes_none(toy_stages, make_toy_example) -> None:
    path, _, _ = _batch(make_toy_example)
    result = runner.invoke(app, ["run", str(path), "-p", "tiny-random", "--no-report", "--json"])
    assert json.loads(result.stdout)["report"] is None
    assert not (path / REPORT_NAME).exists()


def test_a_report_that_cannot_be_written_is_a_warning(toy_stages, make_toy_example) -> None:
    path, _, _ = _batch(make_toy_example)
    (path / REPORT_NAME).mkdir()  # the page's name is taken by a folder: the write fails
    (path / REPORT_NAME / "keep").write_text("x")
    result = runner.invoke(app, ["run", str(path), "-p", "tiny-random"])
    assert result.exit_code == 2  # the batch's own result (one failed example), not an error
    assert "warning: could not write the report" in result.stderr
    assert "report:" not in result.stdout and "outputs:" in result.stdout


def test_single_example_gets_its_report_too(toy_stages, make_toy_example) -> None:
    ok = make_toy_example("001")
    result = runner.invoke(app, ["run", str(ok), "-p", "tiny-random", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["report"] == str(ok / REPORT_NAME)


def test_report_command_shows_failures_previews_and_relative_links(toy_stages, make_toy_example,
                                                                   tmp_path) -> None:
    path, ok, _bad = _batch(make_toy_example)
    runner.invoke(app, ["run", str(path), "-p", "tiny-random", "--no-report"])
    previews = ok / "previews"
    previews.mkdir()
    (previews / "contact_sheet.jpg").write_bytes(b"jpeg")
    (previews / "overlay.mp4").write_bytes(b"mp4")
    (previews / ".overlay.tmp-1.mp4").write_bytes(b"half")  # a write in progress is not shown
    (previews / "notes.txt").write_text("not media")

    result = runner.invoke(app, ["report", str(path)])
    assert result.exit_code == 0, result.output
    page = Path(result.stdout.strip())
    assert page == path / REPORT_NAME
    text = page.read_text(encoding="utf-8")
    assert "pose: " in text and "not a readable video; re-export it as H.264 mp4" in text
    assert 'data-status="failed"' in text and 'data-status="ok"' in text
    links = _links(page)
    assert "001/previews/contact_sheet.jpg" in links and "001/previews/overlay.mp4" in links
    assert not any("tmp-1" in link or "notes.txt" in link for link in links)
    assert all(not link.startswith(("/", "http:", "https:", "file:")) for link in links)
    assert "<link" not in text and "<script src" not in text  # nothing is fetched: CSS and JS are inline

    # The folder moves with its page: every link still resolves.
    moved = shutil.move(str(path), str(tmp_path / "moved"))
    for link in _links(Path(moved) / REPORT_NAME):
        assert (Path(moved) / unquote(link)).exists(), link


def test_report_elsewhere_links_back(toy_stages, make_toy_example, tmp_path) -> None:
    path, _ok, _ = _batch(make_toy_example)
    runner.invoke(app, ["run", str(path), "-p", "tiny-random", "--no-report"])
    out = tmp_path / "pages" / "batch.html"
    result = runner.invoke(app, ["report", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for link in _links(out):
        assert (out.parent / unquote(link)).exists(), link
    assert "../examples/001/rendered.mp4" in _links(out)


def test_report_before_any_run_says_not_run(make_toy_example) -> None:
    path, _, _ = _batch(make_toy_example)
    result = runner.invoke(app, ["report", str(path)])
    assert result.exit_code == 0, result.output
    text = (path / REPORT_NAME).read_text(encoding="utf-8")
    assert text.count('data-status="not run"') == 2


def test_odd_folder_names_are_escaped_and_quoted(toy_stages, make_toy_example) -> None:
    odd = make_toy_example('a "b" <c> #1 50%')
    runner.invoke(app, ["run", str(odd.parent), "-p", "tiny-random", "--no-report"])
    page = Path(runner.invoke(app, ["report", str(odd.parent)]).stdout.strip())
    text = page.read_text(encoding="utf-8")
    assert '<c>' not in text and "a &quot;b&quot; &lt;c&gt; #1 50%" in text
    links = _links(page)
    assert "a%20%22b%22%20%3Cc%3E%20%231%2050%25/rendered.mp4" in links
    for link in links:
        assert (page.parent / unquote(link)).exists(), link


def test_report_command_loads_nothing_heavy(make_toy_example) -> None:
    """`scail report` reads small files only: no torch, cv2, av or decord (so it is instant on any machine)."""
    import subprocess
    import sys

    ok = make_toy_example("001")
    code = ("import sys\nfrom scail.cli import main\n"
            f"try:\n    main(['report', {str(ok.parent)!r}])\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'cv2', 'decord', 'av') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [str(ok.parent / REPORT_NAME), "HEAVY []"]

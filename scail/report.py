"""`scail report`: one static HTML page for a batch, to judge it by looking.

People judge animation by watching it, and a batch is many folders deep: the page puts every
example side by side with its result video, its previews, its driving and condition videos, the
status and time of each stage, the settings that made the sample, and the one-line reason of a
failure, sortable and filterable by status.

The page is self-contained: CSS and JavaScript are inline, nothing is fetched from the network,
and every image and video is linked by a path relative to the page, so the batch folder can be
moved, zipped or served with its report. Videos are the H.264 MP4 files scail writes, played by
the browser's own `<video>`; the ones below each row load only when the row is opened, so a page
of hundreds of examples stays light.

Nothing here parses scail's state files itself: stage status, times and errors come from the
manifests (`cache.read_manifest`), the newest sample from the output ledger (`outputs.sample_info`),
and, when known, the last run's outcome of each stage (user-provided, skipped, locked) from the
batch summary (`BatchSummary.to_dict()`, or the `.scail-summary.json` it wrote).
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from scail.example import Example, discover
from scail.summary import format_duration

if TYPE_CHECKING:
    from scail.cache import Manifest

log = logging.getLogger(__name__)

REPORT_NAME = "scail-report.html"
"""The report's name in the PATH of `scail run` / `scail report`."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif")
VIDEO_SUFFIXES = (".mp4", ".webm")
STATUS_ORDER = ("failed", "locked", "interrupted", "running", "not run", "ok")
"""Example statuses, most urgent first (the order of the status sort)."""
SETTING_KEYS = ("prompt", "negative_prompt", "seed", "preset", "model", "solver", "steps", "shift", "guide_scale",
                "size_hw", "frames", "fps", "created")
"""Sidecar (or manifest) facts shown under each example, in this order."""


@dataclass(frozen=True)
class StageCell:
    """One stage of one example as the report shows it."""

    stage: str
    status: str
    """done, failed, interrupted, running (from the manifest) or user-provided, skipped, locked, not run."""
    duration_s: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class Media:
    """An image or video file shown for an example."""

    label: str
    path: Path
    is_video: bool


@dataclass
class ExampleReport:
    """Everything the page shows for one example."""

    name: str
    root: Path
    status: str = "not run"
    reason: str = ""
    stages: list[StageCell] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    sample: Path | None = None
    reference: Path | None = None
    media: list[Media] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return sum(s.duration_s or 0.0 for s in self.stages)


# ----------------------------------------------------------------------------------------------
# Collecting
# ----------------------------------------------------------------------------------------------


def last_run_summary(path: Path) -> dict[str, Any] | None:
    """The batch summary the last run at `path` wrote (`BatchSummary.to_dict()`), None if absent or unreadable."""
    from scail.batch import SUMMARY_NAME

    try:
        doc = json.loads((path / SUMMARY_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable batch summary (%s); the report shows the manifests only", path / SUMMARY_NAME, exc)
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("examples"), list) else None


def _by_name(summary: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if summary is None:
        return {}
    return {e["name"]: e for e in summary.get("examples", []) if isinstance(e, dict) and isinstance(e.get("name"), str)}


def _stage_cell(stage: str, manifest: Manifest | None, last: dict[str, Any] | None) -> StageCell:
    """The manifest's word, unless the last run says the stage did not run (skipped, locked, user-provided)."""
    outcome = str(last.get("outcome", "")) if last else ""
    if last and outcome not in ("", "ran", "fresh"):
        duration = last.get("duration_s")
        return StageCell(stage, outcome, float(duration) if isinstance(duration, (int, float)) else None,
                         str(last.get("reason") or ""))
    if manifest is None:
        return StageCell(stage, "not run")
    return StageCell(stage, manifest.status, manifest.duration_s, manifest.error or "")


def _example_status(cells: Sequence[StageCell], last: dict[str, Any] | None) -> tuple[str, str]:
    """(status, one-line reason) of an example: its most urgent stage decides."""
    for status in ("failed", "locked", "interrupted", "running"):
        bad = next((c for c in cells if c.status == status), None)
        if bad is not None:
            return status, f"{bad.stage}: {bad.reason}" if bad.reason else f"{bad.stage} {status}"
    if last is not None and last.get("ok") is False:  # failed before any stage (e.g. an unreadable prompt.txt)
        return "failed", str(last.get("reason") or "failed")
    if any(c.status in ("done", "user-provided") for c in cells):
        return "ok", ""
    return "not run", ""


def _settings(example: Example, sample: Path | None,
              manifest: Manifest | None) -> tuple[dict[str, Any], dict[str, float]]:
    """What made the sample (its sidecar JSON), else what the animate `manifest` was run with; and its timings."""
    settings: dict[str, Any] = {}
    if sample is not None:
        try:
            doc = json.loads(sample.with_suffix(".json").read_text(encoding="utf-8"))
            settings = doc if isinstance(doc, dict) else {}
        except (OSError, ValueError):
            settings = {}
    timings: dict[str, float] = {}
    if manifest is not None:
        raw = manifest.notes.get("timings_s")
        if isinstance(raw, dict):
            timings = {str(k).removesuffix("_s"): float(v) for k, v in raw.items()
                       if str(k).endswith("_s") and isinstance(v, (int, float))}
        if not settings:
            params = manifest.params.get("settings")
            settings = dict(params) if isinstance(params, dict) else {}
            if "prompt" in manifest.notes:
                settings["prompt"] = manifest.notes["prompt"]
    if "prompt" not in settings:
        with contextlib.suppress(Exception):  # an unreadable prompt.txt is the example's reason, shown elsewhere
            settings["prompt"] = example.prompt()
    return {k: settings[k] for k in SETTING_KEYS if settings.get(k) is not None}, timings


def _media(example: Example) -> list[Media]:
    """The previews first (scail/previews: they say the most; any other image or video there too),
    then the driving and condition videos."""
    from scail.previews import CONTACT_SHEET, OVERLAY, SIDE_BY_SIDE, TURNTABLE, previews_dir

    found: list[Media] = []
    previews = previews_dir(example)
    if previews.is_dir():
        known = [SIDE_BY_SIDE, CONTACT_SHEET, OVERLAY, TURNTABLE]  # the result first, then the pose checks
        rank = {name: i for i, name in enumerate(known)}
        for p in sorted(previews.iterdir(), key=lambda p: (rank.get(p.name, len(known)), p.name)):
            if p.name.startswith(".") or not p.is_file():  # temp files of a write in progress
                continue
            suffix = p.suffix.lower()
            if suffix in IMAGE_SUFFIXES or suffix in VIDEO_SUFFIXES:
                found.append(Media(p.stem.replace("_", " "), p, suffix in VIDEO_SUFFIXES))
    driving = example.find_driving()
    if driving is not None and driving.suffix.lower() in VIDEO_SUFFIXES:
        found.append(Media("driving", driving, True))
    for p, label in ((example.rendered_aligned, "condition (aligned)"), (example.rendered, "condition")):
        if p.is_file():
            found.append(Media(label, p, True))
    return found


def collect_example(example: Example, stage_names: Sequence[str], last: dict[str, Any] | None = None) -> ExampleReport:
    """One example's row: stage cells, status, settings, sample and media (reads only small files)."""
    from scail.cache import read_manifest
    from scail.outputs import sample_info

    report = ExampleReport(name=example.name, root=example.root)
    last_stages = {s.get("stage"): s for s in (last or {}).get("stages", []) if isinstance(s, dict)}
    manifests = {name: read_manifest(example, name) for name in dict.fromkeys([*stage_names, "animate"])}  # each read once
    report.stages = [_stage_cell(name, manifests[name], last_stages.get(name)) for name in stage_names]
    report.status, report.reason = _example_status(report.stages, last)
    latest = sample_info(example).latest
    report.sample = example.root / latest if latest else None
    report.settings, report.timings = _settings(example, report.sample, manifests["animate"])
    report.reference = example.find_reference()
    report.media = _media(example)
    return report


def collect(path: Path, summary: dict[str, Any] | None = None,
            stage_names: Sequence[str] | None = None) -> list[ExampleReport]:
    """Every example under `path`; one unreadable example becomes a failed row, never an error."""
    from scail.config import STAGES

    names = list(stage_names or STAGES)
    last = _by_name(summary)
    rows = []
    for ex in discover(path):
        try:
            rows.append(collect_example(ex, names, last.get(ex.name)))
        except Exception as exc:  # the report must show the other examples whatever this one holds
            log.debug("%s: could not collect the report row", ex.root, exc_info=exc)
            rows.append(ExampleReport(name=ex.name, root=ex.root, status="failed",
                                      reason=f"report: could not read this example ({type(exc).__name__}: {exc})"))
    return rows


# ----------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------


def _href(path: Path, base: Path) -> str:
    """`path` as a URL relative to the folder `base` (the page's folder), so the folder can move."""
    try:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(base))
    except ValueError:  # another drive (Windows): an absolute file URL is all that works
        return Path(os.path.abspath(path)).as_uri()
    return quote(rel.replace(os.sep, "/"))


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _media_html(item: Media, base: Path, lazy: bool) -> str:
    src = _href(item.path, base)
    attr = f'data-src="{_e(src)}"' if lazy else f'src="{_e(src)}"'
    if item.is_video:
        body = f'<video {attr} controls muted loop playsinline preload="metadata"></video>'
    else:
        body = f'<a href="{_e(src)}"><img {attr} alt="{_e(item.label)}"></a>'
    return f'<figure>{body}<figcaption>{_e(item.label)} · <a href="{_e(src)}">{_e(item.path.name)}</a></figcaption></figure>'


_TIMED = ("done", "failed", "interrupted")
"""Stage statuses whose time is worth a number (a skipped or user-provided stage took none)."""


def _row_html(r: ExampleReport, base: Path, columns: int) -> str:
    seed = r.settings.get("seed", "")
    stage_cells = "".join(
        f'<td class="stage"><span class="st st-{_e(c.status.replace(" ", "-"))}" title="{_e(c.reason)}">{_e(c.status)}</span>'
        f'<span class="time">{_e(format_duration(c.duration_s) if c.status in _TIMED else "")}</span></td>' for c in r.stages)
    ref = (f'<img class="thumb" src="{_e(_href(r.reference, base))}" alt="reference" loading="lazy">'
           if r.reference is not None else "")
    sample = (f'<video class="sample" src="{_e(_href(r.sample, base))}" controls muted loop playsinline '
              f'preload="metadata"></video><div class="file"><a href="{_e(_href(r.sample, base))}">'
              f'{_e(r.sample.name)}</a></div>' if r.sample is not None else '<span class="none">no sample</span>')
    reason = f'<div class="reason">{_e(r.reason)}</div>' if r.reason else ""
    facts = "".join(f"<tr><th>{_e(k)}</th><td>{_e(json.dumps(v) if isinstance(v, (list, dict)) else v)}</td></tr>"
                    for k, v in r.settings.items())
    facts += "".join(f"<tr><th>{_e(k)}</th><td>{_e(format_duration(v))}</td></tr>" for k, v in r.timings.items())
    facts += f'<tr><th>folder</th><td><a href="{_e(_href(r.root, base))}">{_e(r.root)}</a></td></tr>'
    media = "".join(_media_html(m, base, lazy=True) for m in r.media)
    return (
        f'<tbody class="ex" data-name="{_e(r.name)}" data-status="{_e(r.status)}" '
        f'data-status-rank="{STATUS_ORDER.index(r.status) if r.status in STATUS_ORDER else 0}" '
        f'data-time="{r.duration_s:.3f}" data-seed="{_e(seed)}">'
        f'<tr class="main"><td class="name">{ref}<div>{_e(r.name)}</div></td>'
        f'<td><span class="badge b-{_e(r.status.replace(" ", "-"))}">{_e(r.status)}</span>{reason}</td>'
        f'{stage_cells}<td class="num">{_e(format_duration(r.duration_s))}</td><td class="num">{_e(seed)}</td>'
        f'<td class="prompt">{_e(r.settings.get("prompt", ""))}</td><td>{sample}</td></tr>'
        f'<tr class="more"><td colspan="{columns}"><details><summary>previews, inputs and settings</summary>'
        f'<div class="media">{media or "<span class=none>no previews or videos</span>"}</div>'
        f'<table class="facts">{facts}</table></details></td></tr></tbody>'
    )


_CSS = """
:root{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;font-size:14px;color:#1d1d1f;background:#fafafa}
body{margin:1.2em}h1{font-size:1.3em;margin:0 0 .3em}.sub{color:#666;margin-bottom:.8em}
.bar{display:flex;gap:1em;align-items:center;flex-wrap:wrap;margin:.6em 0}
table.batch{border-collapse:collapse;width:100%;background:#fff}
table.batch>thead th{position:sticky;top:0;background:#eee;text-align:left;padding:.4em;cursor:pointer;user-select:none}
table.batch>thead th[data-sort]:hover{background:#ddd}
tbody.ex{border-top:1px solid #ddd}tbody.ex td{padding:.4em;vertical-align:top}
.thumb{max-width:72px;max-height:96px;display:block;margin-bottom:.2em;border-radius:3px}
.name{font-weight:600;word-break:break-all;max-width:10em}
.badge,.st{display:inline-block;padding:.05em .5em;border-radius:1em;font-size:.9em;white-space:nowrap}
.b-ok,.st-done{background:#d8f5dd;color:#11602a}.b-failed,.st-failed{background:#fbd9d9;color:#8a1010;font-weight:600}
.b-interrupted,.b-locked,.st-interrupted,.st-locked{background:#fdf0c8;color:#7a5a00}
.b-running,.st-running{background:#dbe8ff;color:#1844a0}.st-user-provided{background:#d9f1f5;color:#0d5c6b}
.b-not-run,.st-not-run,.st-skipped{background:#eee;color:#666}
.stage .time{display:block;color:#666;font-size:.85em}.num{text-align:right;white-space:nowrap}
.reason{color:#8a1010;margin-top:.3em;max-width:26em;overflow-wrap:anywhere}
.prompt{max-width:22em;color:#333;overflow-wrap:anywhere}
video.sample{max-width:240px;max-height:240px;background:#000;display:block}
.file{font-size:.8em;word-break:break-all}.none{color:#999}
tr.more td{padding-top:0}details summary{cursor:pointer;color:#1844a0}
.media{display:flex;flex-wrap:wrap;gap:.8em;margin:.5em 0}
figure{margin:0}figure video,figure img{max-width:360px;max-height:300px;display:block;background:#000}
figcaption{font-size:.85em;color:#555;word-break:break-all;max-width:360px}
table.facts{border-collapse:collapse;font-size:.9em}table.facts th{text-align:left;color:#555;padding:.1em 1em .1em 0}
"""

_JS = """
(function(){
  var table=document.querySelector('table.batch');
  var rows=function(){return Array.prototype.slice.call(table.querySelectorAll('tbody.ex'));};
  var filter=document.getElementById('status-filter'), search=document.getElementById('search');
  var shown=document.getElementById('shown');
  function apply(){
    var want=filter.value, q=search.value.toLowerCase(), n=0;
    rows().forEach(function(r){
      var hide=(want!=='all'&&r.dataset.status!==want)||(q&&r.dataset.name.toLowerCase().indexOf(q)<0);
      r.hidden=hide; if(!hide){n++;}
    });
    shown.textContent=n+' of '+rows().length+' shown';
  }
  filter.addEventListener('change',apply); search.addEventListener('input',apply);
  var dir={};
  Array.prototype.forEach.call(table.querySelectorAll('th[data-sort]'),function(th){
    th.addEventListener('click',function(){
      var key=th.dataset.sort, num=th.dataset.num==='1', d=dir[key]=-(dir[key]||-1);
      var list=rows();
      list.sort(function(a,b){
        var x=a.dataset[key], y=b.dataset[key];
        if(num){x=parseFloat(x);y=parseFloat(y);x=isNaN(x)?-1:x;y=isNaN(y)?-1:y;return d*(x-y);}
        return d*x.localeCompare(y);
      });
      list.forEach(function(r){table.appendChild(r);});
    });
  });
  function load(d){
    Array.prototype.forEach.call(d.querySelectorAll('[data-src]'),function(el){
      el.src=el.dataset.src; el.removeAttribute('data-src');
    });
  }
  Array.prototype.forEach.call(document.querySelectorAll('tr.more details'),function(d){
    d.addEventListener('toggle',function(){if(d.open){load(d);}});
  });
  document.getElementById('open-all').addEventListener('click',function(){
    rows().forEach(function(r){if(!r.hidden){var d=r.querySelector('details');d.open=true;load(d);}});
  });
  apply();
})();
"""


def render_html(rows: Sequence[ExampleReport], base: Path, title: str, subtitle: str = "") -> str:
    """The whole page; `base` is the folder the page will be written to (media paths are relative to it)."""
    stage_names = list(dict.fromkeys(c.stage for r in rows for c in r.stages))
    counts = {s: sum(r.status == s for r in rows) for s in STATUS_ORDER}
    options = '<option value="all">all</option>' + "".join(
        f'<option value="{_e(s)}">{_e(s)} ({n})</option>' for s, n in counts.items() if n)
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no examples"
    head = ('<th data-sort="name">example</th><th data-sort="statusRank" data-num="1">status</th>'
            + "".join(f"<th>{_e(s)}</th>" for s in stage_names)
            + '<th data-sort="time" data-num="1">time</th><th data-sort="seed" data-num="1">seed</th>'
              "<th>prompt</th><th>result</th>")
    columns = 6 + len(stage_names)
    body = "".join(_row_html(r, base, columns) for r in rows)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1><div class=\"sub\">{_e(summary)}{' · ' + _e(subtitle) if subtitle else ''}</div>"
        '<div class="bar"><label>status <select id="status-filter">' + options + "</select></label>"
        '<label>example <input id="search" type="search" placeholder="name"></label>'
        '<button id="open-all" type="button">open all</button><span id="shown"></span></div>'
        f'<table class="batch"><thead><tr>{head}</tr></thead>{body}</table>'
        f"<script>{_JS}</script></body></html>\n"
    )


def write_report(path: Path, out: Path | None = None, summary: dict[str, Any] | None = None) -> Path:
    """Write the report of the batch (or example) at `path` to `out` (default `path/scail-report.html`).

    `summary` is the last run's `BatchSummary.to_dict()`; without it the `.scail-summary.json` the
    last run at `path` left is used, if any.
    """
    from scail.atomic import atomic_write_text
    from scail.cache import now_iso

    out = out if out is not None else path / REPORT_NAME
    if summary is None:
        summary = last_run_summary(path)
    rows = collect(path, summary)
    title = f"scail report: {path.resolve().name}"
    pipeline = summary.get("pipeline") if summary else None
    subtitle = f"written {now_iso()}" + (f" · last run with {pipeline}" if pipeline else "")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, render_html(rows, out.parent, title, subtitle))
    return out

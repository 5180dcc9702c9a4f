"""Hypothesis fuzzing of the parsers of user-editable files: any input gives either a valid object or
the project's one-line error (`ScailError`/`InputError`), never another exception, never a message
over several lines.

    pipeline YAML (`--pipeline FILE`)  -> scail.config.load_pipeline
    --set KEY=VALUE                    -> scail.config.parse_override + load_pipeline
    per-example scail.yaml             -> scail.example_settings.load_example_settings / config_for_example
    .scail/<stage>.json manifests      -> scail.cache.read_manifest (a bad one is "never ran", with a warning)
    pose .npz                          -> scail.pose.schema.load_pose

Bounded (max_examples below, no deadline) and seeded by the session's fault seed, so it stays fast
and a failure reproduces with SCAIL_FAULT_SEED.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fault_injection import SEED, record
from hypothesis import HealthCheck, example, given, seed, settings
from hypothesis import strategies as st

from scail.config import PipelineConfig
from scail.errors import ScailError

pytestmark = pytest.mark.faults

FUZZ = settings(max_examples=80, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

KEYS = ["pose", "render", "animate", "name", "description", "steps", "seed", "device", "backend", "fps",
        "max_frames", "size_hw", "loras", "path", "strength", "align", "radius_mm", "solver", "shift",
        "guide_scale", "prompt", "start", "end", "person", "parallel", "gpus", "dtype", "model", "a\nb", "../x", ""]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(["cpu", "cuda", "auto", "euler", "tiny-random", "7:0.5"]))
TREES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)),
                     max_leaves=20)
YAML_TEXT = st.one_of(
    TREES.map(lambda t: yaml.safe_dump(t, allow_unicode=True)),
    st.text(max_size=200),
    st.sampled_from(["!!python/object/apply:os.system ['true']", "a: !!binary AAAA", "a: &x [*x]", "{", "- - -",
                     "animate: {steps: 1e999}", "pose: {fps: .nan}", "animate:\n  loras: [{path: 7}]",
                     "\ufeffanimate: {steps: 4}", "animate: {size_hw: [33, 64]}",
                     "animate: {loras: ['~no-such-user/x.safetensors'], weights_dir: '~0'}"]),
)


NEWLINE_KEY = "? 'a\n\n  b'\n: null\n"
"""A YAML key with a newline in it (the unknown-key message once printed it raw, over two lines)."""


def _one_line(exc: ScailError) -> None:
    assert "\n" not in str(exc) and "\r" not in str(exc), repr(str(exc))


def fuzz(parser: str, body: Callable[..., Any], known: list[dict[str, Any]] | None = None,
         **strategies: st.SearchStrategy[Any]) -> None:
    """Run `body` on hypothesis-made inputs (and always on the `known` ones: inputs that broke the
    parser once); count the valid objects and the one-line errors; add the table row. `body` returns
    normally for a valid input and lets `ScailError` out for a refused one."""
    counts = {"valid": 0, "refused": 0}

    def run(**kwargs: Any) -> None:
        try:
            body(**kwargs)
            counts["valid"] += 1
        except ScailError as exc:
            _one_line(exc)
            counts["refused"] += 1

    test = given(**strategies)(run)
    for kwargs in known or []:
        test = example(**kwargs)(test)
    seed(SEED)(FUZZ(test))()
    total = counts["valid"] + counts["refused"]
    record("hypothesis fuzzing", f"{parser} ({total} inputs)",
           f"{counts['valid']} valid, {counts['refused']} one-line errors, 0 crashes")
    assert total > 0


@pytest.fixture(scope="module")
def scratch() -> Any:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def test_pipeline_yaml(scratch: Path) -> None:
    from scail.config import load_pipeline

    def body(text: str) -> None:
        path = scratch / "fuzz.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        assert isinstance(load_pipeline(str(path)), PipelineConfig)

    fuzz("pipeline YAML", body, [{"text": NEWLINE_KEY}], text=YAML_TEXT)


def test_set_overrides() -> None:
    from scail.config import load_pipeline, parse_override

    def body(key: str, value: str) -> None:
        k, v = parse_override(f"{key}={value}")
        assert isinstance(load_pipeline("tiny-random", {k: v}), PipelineConfig)

    keys = st.sampled_from(["animate.steps", "animate.size_hw", "pose.fps", "render.align", "animate.loras",
                            "animate.parallel.gpus", "x", "animate.x\ny", "pose.max_frames.x"])
    fuzz("--set KEY=VALUE", body, [{"key": "animate.x\ny", "value": "1"}, {"key": "animate.loras", "value": "~0"}],
         key=keys, value=st.text(max_size=30))


def test_example_scail_yaml(scratch: Path) -> None:
    from scail.config import load_pipeline
    from scail.example_settings import config_for_example, load_example_settings

    base = load_pipeline("tiny-random")
    root = scratch / "example"
    root.mkdir(exist_ok=True)

    def body(text: str) -> None:
        (root / "scail.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
        load_example_settings(root)
        assert isinstance(config_for_example(base, root), PipelineConfig)

    fuzz("example scail.yaml", body, [{"text": NEWLINE_KEY}], text=YAML_TEXT)


MANIFEST_FIELDS = st.fixed_dictionaries({}, optional={
    "schema_version": SCALARS, "stage": SCALARS, "fingerprint": SCALARS, "started": SCALARS, "pid": SCALARS,
    "status": st.one_of(SCALARS, st.sampled_from(["done", "failed", "running", "interrupted"])),
    "outputs": st.one_of(SCALARS, st.dictionaries(st.sampled_from(["rendered.mp4", "../x", "/etc/passwd", "a\\b", ""]),
                                                  SCALARS, max_size=3)),
    "inputs": TREES, "params": TREES, "notes": TREES, "versions": TREES,
})


def test_manifest_json(scratch: Path) -> None:
    from scail.cache import Manifest, read_manifest
    from scail.example import Example

    example = Example(scratch / "manifests")
    example.state_dir.mkdir(parents=True, exist_ok=True)

    def body(raw: bytes) -> None:
        (example.state_dir / "render.json").write_bytes(raw)
        manifest = read_manifest(example, "render")  # a bad one is None (with a warning), never an exception
        if manifest is None:
            raise ScailError("refused (read as never ran)")
        assert isinstance(manifest, Manifest)
        assert all(not k.startswith(("/", "..")) for k in manifest.outputs)

    valid = {"stage": "render", "status": "done", "fingerprint": "ab", "outputs": {"rendered.mp4": "cd"}}
    raw = st.one_of(MANIFEST_FIELDS.map(lambda d: json.dumps({**valid, **d}).encode()),
                    MANIFEST_FIELDS.map(lambda d: json.dumps(d).encode()), st.binary(max_size=200),
                    TREES.map(lambda t: json.dumps(t).encode()))
    outside = json.dumps({**valid, "outputs": {"../x": "y"}}).encode()
    fuzz("manifest JSON", body, [{"raw": outside}], raw=raw)


POSE_FIELDS = ["fps", "size", "K", "track_id", "body3d", "body2d", "face2d", "hands2d", "bbox", "backend", "version"]
ARRAYS = st.one_of(
    st.just(None),  # the array is missing
    st.just("keep"),  # the valid one
    st.sampled_from([np.array("text"), np.array(b"\xff"), np.zeros(0), np.zeros((2, 0, 3)), np.array(np.nan),
                     np.array(-1.0), np.array([[1, 2], [3, 4]]), np.zeros((5, 1, 24, 3), np.complex64),
                     np.array(["a", "b"]), np.ones((3, 3), bool), np.array(np.inf), np.zeros(3, np.uint8),
                     np.zeros((5, 2, 24, 3), np.float16), np.zeros(())]),
)


def test_pose_npz(scratch: Path) -> None:
    from scail.demo import dance, make_pose
    from scail.pose.schema import PoseData, load_pose, save_pose

    good = scratch / "good.npz"
    save_pose(make_pose([dance(5)]), good)
    with np.load(good) as z:
        valid = {k: z[k] for k in z.files}

    def body(changes: dict[str, Any]) -> None:
        arrays = dict(valid)
        for name, value in changes.items():
            if value is None:
                arrays.pop(name, None)
            elif not isinstance(value, str):
                arrays[name] = value
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        path = scratch / "pose.npz"
        path.write_bytes(buf.getvalue())
        assert isinstance(load_pose(path), PoseData)

    fuzz("pose .npz", body, [{"changes": {"fps": np.array("text")}}, {"changes": {"size": np.zeros(0)}}],
         changes=st.dictionaries(st.sampled_from(POSE_FIELDS), ARRAYS, max_size=3))

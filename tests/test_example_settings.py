"""Per-example settings (scail.yaml): validation, precedence, and their place in the fingerprints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scail.batch import make_jobs
from scail.cli import app
from scail.config import load_pipeline
from scail.errors import InputError
from scail.example import Example
from scail.example_settings import config_for_example, load_example_settings

runner = CliRunner()


def _yaml(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "scail.yaml").write_text(text, encoding="utf-8")
    return root / "scail.yaml"


@pytest.mark.parametrize("text, message", [
    ("seed: 7\nsteps: 4\n", "unknown key 'steps'"),
    ("person: -1\n", "person: Input should be greater than or equal to 0"),
    ("start: 3\nend: 2\n", "end (2.0) must be after start (3.0)"),
    ("seed: [1, 2\n", "not a readable YAML file"),
    ("- seed\n", "expected a mapping"),
    ("align: perhaps\n", "align: Input should be a valid boolean"),
])
def test_bad_settings_are_one_line_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = _yaml(tmp_path / "ex", text)
    with pytest.raises(InputError) as err:
        load_example_settings(path.parent)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_no_file_or_an_empty_file_changes_nothing(tmp_path: Path) -> None:
    config = load_pipeline("tiny-random")
    (tmp_path / "ex").mkdir()
    assert config_for_example(config, tmp_path / "ex") is config
    _yaml(tmp_path / "ex", "# nothing yet\n")
    assert config_for_example(config, tmp_path / "ex") is config


def test_entries_become_stage_parameters_and_the_command_line_wins(tmp_path: Path) -> None:
    config = load_pipeline("tiny-random")
    _yaml(tmp_path / "ex", "prompt: a robot\nperson: 2\nstart: 1.5\nend: 4\nseed: 7\nalign: false\n")
    cfg = config_for_example(config, tmp_path / "ex")
    assert (cfg.render.person, cfg.pose.start_s, cfg.pose.end_s, cfg.animate.seed, cfg.render.align) == \
        (2, 1.5, 4.0, 7, False)
    assert cfg.pose.max_people == 3, "person 2 needs three tracks"
    assert cfg.animate.steps == config.animate.steps and cfg.pose.backend == config.pose.backend
    flagged = config_for_example(load_pipeline("tiny-random", {"animate.seed": 1}), tmp_path / "ex",
                                 frozenset({"animate.seed"}))
    assert flagged.animate.seed == 1 and flagged.render.person == 2
    assert Example(tmp_path / "ex").prompt() == "a robot"
    assert Example(tmp_path / "ex").prompt("typed") == "typed"
    (tmp_path / "other").mkdir()
    jobs = make_jobs([Example(tmp_path / "ex"), Example(tmp_path / "other")], config, ["pose"])
    assert jobs[0].config.animate.seed == 7 and jobs[1].config is config


def _outcomes(result) -> list[str]:
    assert result.exit_code == 0, result.output
    return [s["outcome"] for s in json.loads(result.stdout)["examples"][0]["stages"]]


def test_settings_enter_the_fingerprints(toy_stages, make_toy_example) -> None:
    path = make_toy_example("001")
    run = ["run", str(path), "-p", "tiny-random", "--json"]
    assert _outcomes(runner.invoke(app, run)) == ["ran"] * 3
    _yaml(path, "seed: 7\n")
    assert _outcomes(runner.invoke(app, run)) == ["fresh", "fresh", "ran"]
    assert _outcomes(runner.invoke(app, [*run, "--seed", "42"])) == ["fresh", "fresh", "ran"], "--seed beats it"
    _yaml(path, "seed: 7\nalign: false\n")
    assert _outcomes(runner.invoke(app, run)) == ["fresh", "ran", "ran"]
    _yaml(path, "seed: 7\nalign: false\nstart: 0.5\n")
    assert _outcomes(runner.invoke(app, run)) == ["ran", "ran", "ran"]
    assert _outcomes(runner.invoke(app, run)) == ["fresh"] * 3
    status = runner.invoke(app, ["status", str(path), "-p", "tiny-random", "--json"])
    assert status.exit_code == 0 and "stale" not in status.stdout, status.stdout


def test_prompt_in_settings_reruns_only_animate(tmp_path: Path) -> None:
    from scail.animate.stage import AnimateStage

    root = tmp_path / "ex"
    root.mkdir()
    (root / "prompt.txt").write_text("from the text file\n")
    stage = AnimateStage(load_pipeline("tiny-random").animate)
    ex = Example(root)
    (root / "rendered.mp4").write_bytes(b"x")
    (root / "ref.jpg").write_bytes(b"x")
    assert ex.prompt_file in stage.inputs(ex)
    _yaml(root, "prompt: from scail.yaml\n")
    assert ex.settings_file in stage.inputs(ex) and ex.prompt_file not in stage.inputs(ex)
    assert ex.prompt() == "from scail.yaml"


def test_a_bad_settings_file_fails_its_example_in_one_line(toy_stages, make_toy_example) -> None:
    path = make_toy_example("001")
    other = make_toy_example("002")
    _yaml(path, "sed: 7\n")
    result = runner.invoke(app, ["run", str(path.parent), "-p", "tiny-random", "--json"])
    assert result.exit_code == 2  # that example failed; the batch went on
    doc = {e["name"]: e for e in json.loads(result.stdout)["examples"]}
    assert doc["001"]["reason"].endswith(f"{path / 'scail.yaml'}: unknown key 'sed' (known: prompt, person, start, "
                                         "end, seed, align)")
    assert doc["002"]["ok"] and other.name == "002"
    status = runner.invoke(app, ["status", str(path.parent), "-p", "tiny-random", "--json"])
    assert status.exit_code == 0, status.output
    rows = {e["name"]: e["stages"] for e in json.loads(status.stdout)["examples"]}
    assert {s["status"] for s in rows["001"].values()} == {"failed"}
    assert rows["001"]["pose"]["reason"].startswith(f"{path / 'scail.yaml'}: unknown key 'sed'")
    assert {s["status"] for s in rows["002"].values()} == {"fresh"}

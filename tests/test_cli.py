"""The `scail` command in-process (CliRunner) with toy stages, plus start-up checks in subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from scail.cli import app, normalize_argv

runner = CliRunner()


def test_help_imports_nothing_heavy() -> None:
    code = ("import sys\nfrom scail.cli import main\nsys.argv = ['scail', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'cv2', 'decord', 'av') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    assert "run" in out and "status" in out and "doctor" in out


def test_python_dash_m_scail_runs_the_cli() -> None:
    proc = subprocess.run([sys.executable, "-m", "scail", "run", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "--pipeline" in proc.stdout and "--force" in proc.stdout and "--set" in proc.stdout


def test_run_then_rerun_skips_everything_and_json_is_machine_readable(toy_stages, make_toy_example,
                                                                     tmp_path) -> None:
    make_toy_example("001")
    make_toy_example("002")
    path = tmp_path / "examples"
    result = runner.invoke(app, ["run", str(path), "--pipeline", "tiny-random", "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["run", str(path), "--pipeline", "tiny-random", "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert [s["outcome"] for e in doc["examples"] for s in e["stages"]] == ["fresh"] * 6
    assert json.loads((path / ".scail-summary.json").read_text())["examples"][0]["name"] == "001"
    # The table names every example and stage.
    result = runner.invoke(app, ["run", str(path), "-p", "tiny-random", "--set", "animate.steps=3"])
    assert result.exit_code == 0
    assert "001" in result.stdout and "animate" in result.stdout and "ran" in result.stdout


def test_a_failed_example_gives_exit_2_and_its_reason(toy_stages, make_toy_example, tmp_path) -> None:
    make_toy_example("001")
    bad = make_toy_example("002", driving=b"garbage")
    result = runner.invoke(app, ["run", str(tmp_path / "examples"), "-p", "tiny-random", "--json"])
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["failed"] == 1
    assert doc["examples"][1]["reason"] == f"pose: {bad / 'driving.mp4'}: not a readable video; re-export it as H.264 mp4"


def test_until_and_force(toy_stages, make_toy_example, tmp_path) -> None:
    path = make_toy_example("001")
    result = runner.invoke(app, ["run", str(path), "-p", "tiny-random", "--until", "render", "--json"])
    assert [s["stage"] for s in json.loads(result.stdout)["examples"][0]["stages"]] == ["pose", "render"]
    result = runner.invoke(app, ["run", str(path), "-p", "tiny-random", "--force", "render", "--json"])
    assert [s["outcome"] for s in json.loads(result.stdout)["examples"][0]["stages"]] == ["fresh", "ran", "ran"]
    result = runner.invoke(app, ["run", str(path), "-p", "tiny-random", *normalize_argv(["--force"]), "--json"])
    assert [s["outcome"] for s in json.loads(result.stdout)["examples"][0]["stages"]] == ["ran"] * 3


def test_normalize_argv_lets_force_stand_alone() -> None:
    assert normalize_argv(["run", "x", "--force"]) == ["run", "x", "--force", "all"]
    assert normalize_argv(["run", "--force", "x"]) == ["run", "--force", "all", "x"]
    assert normalize_argv(["run", "x", "--force", "render"]) == ["run", "x", "--force", "render"]


def test_stage_commands_run_one_stage(toy_stages, make_toy_example, tmp_path) -> None:
    path = make_toy_example("001")
    result = runner.invoke(app, ["render", str(path), "-p", "tiny-random", "--json"])
    assert result.exit_code == 2
    stages = json.loads(result.stdout)["examples"][0]["stages"]
    assert stages == [{"stage": "render", "outcome": "failed", "duration_s": stages[0]["duration_s"],
                       "reason": f"{path}: no pose data; run 'scail pose' first", "outputs": []}]
    assert runner.invoke(app, ["pose", str(path), "-p", "tiny-random", "-q"]).exit_code == 0
    assert runner.invoke(app, ["render", str(path), "-p", "tiny-random", "-q"]).exit_code == 0
    assert runner.invoke(app, ["animate", str(path), "-p", "tiny-random", "-q", "--prompt", "hi"]).exit_code == 0
    assert (path / "samples" / "toy.mp4").is_file()


def test_status_and_clean(toy_stages, make_toy_example, tmp_path) -> None:
    path = tmp_path / "examples"
    make_toy_example("001")
    user = make_toy_example("002")
    (user / "rendered.mp4").write_text("hand-made")
    result = runner.invoke(app, ["status", str(path), "-p", "tiny-random", "--json"])
    assert result.exit_code == 0
    doc = {e["name"]: {k: v["status"] for k, v in e["stages"].items()} for e in json.loads(result.stdout)["examples"]}
    assert doc == {"001": {"pose": "missing", "render": "missing", "animate": "missing"},
                   "002": {"pose": "missing", "render": "user-provided", "animate": "missing"}}
    runner.invoke(app, ["run", str(path), "-p", "tiny-random", "-q"])
    table = runner.invoke(app, ["status", str(path), "-p", "tiny-random"]).stdout
    assert "fresh" in table and "user-provided" in table
    # A different preset value makes render and animate stale, without running anything.
    result = runner.invoke(app, ["status", str(path / "001"), "-p", "tiny-random", "--set", "render.radius_mm=30",
                                 "--json"])
    assert {k: v["status"] for k, v in json.loads(result.stdout)["examples"][0]["stages"].items()} == {
        "pose": "fresh", "render": "stale", "animate": "stale"}
    result = runner.invoke(app, ["clean", str(path), "--stage", "render"])
    assert result.exit_code == 0 and result.stdout.strip() == "removed 2 file(s)"  # 001's video + manifest
    assert not (path / "001/rendered.mp4").exists() and (path / "001/.scail/pose.npz").exists()
    assert (user / "rendered.mp4").read_text() == "hand-made"


@pytest.mark.parametrize(("args", "message"), [
    (["--pipeline", "nope"], "error: unknown pipeline 'nope'; choose one of scail-2, scail-2-distill, scail-2-wan, "
                             "scail-distill-4, scail-distill-6, scail-preview-512p, scail-preview-fast, scail-wan-unipc, tiny-random, "
                             "tiny-random-scail-2 or pass a .yaml file"),
    (["--lora", ":0.5"], "error: --lora ':0.5': give a LoRA file, as PATH or PATH:STRENGTH (e.g. lora.safetensors:0.8)"),
    (["--lora", "~no-such-user-x/l.safetensors"],
     "error: --lora '~no-such-user-x/l.safetensors': '~' names no home directory here; give the full path"),
    (["--pipeline", "~no-such-user-x/p.yaml"],
     "error: --pipeline '~no-such-user-x/p.yaml': '~' names no home directory here; give the full path"),
    (["--set", "animate.stepz=4"], "error: --set animate.stepz: unknown key 'animate.stepz'"),
    (["--set", "animate.steps=0"], "error: --set animate.steps=0: Input should be greater than or equal to 1"),
    (["--set", "steps"], "error: --set steps: expected KEY=VALUE, e.g. --set animate.steps=4"),
])
def test_option_errors_are_one_line(args, message, make_toy_example) -> None:
    path = make_toy_example("001")
    result = runner.invoke(app, ["run", str(path), *args])
    assert result.exit_code == 1
    assert result.stderr.strip() == message


def test_preset_file_with_unknown_key_names_file_and_key(make_toy_example, tmp_path) -> None:
    path = make_toy_example("001")
    preset = tmp_path / "mine.yaml"
    preset.write_text("animate:\n  steps: 4\n  stepz: 5\n")
    result = runner.invoke(app, ["run", str(path), "--pipeline", str(preset)])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {preset}: unknown key 'animate.stepz'"


def test_folder_without_examples_is_an_error(tmp_path) -> None:
    result = runner.invoke(app, ["run", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"error: {tmp_path}: no example folders found (each needs driving.mp4 and "
                                     "ref.jpg); see 'scail run --help'")


def test_traceback_flag_reraises(tmp_path) -> None:
    result = runner.invoke(app, ["run", str(tmp_path), "--traceback"])
    assert result.exit_code == 1
    assert type(result.exception).__name__ == "InputError"


def test_doctor_reports_every_part() -> None:
    result = runner.invoke(app, ["doctor"])
    for name in ("python", "torch", "h.264 encode", "decord", "pose env", "weights"):
        assert name in result.stdout
    assert (result.exit_code == 1) == ("FAIL" in result.stdout)


def test_presets_ship_inside_the_package(repo_root) -> None:
    """The wheel carries pipelines/ as scail/pipelines/*.yaml (a link to the top-level folder)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    from scail.config import list_presets, load_pipeline

    packaged = repo_root / "scail" / "pipelines"
    assert sorted(p.name for p in packaged.glob("*.yaml")) == sorted(p.name for p in (repo_root / "pipelines").glob("*.yaml"))
    data = tomllib.loads((repo_root / "pyproject.toml").read_text())
    assert "pipelines/*.yaml" in data["tool"]["setuptools"]["package-data"]["scail"]
    assert list_presets() == ["scail-2", "scail-2-distill", "scail-2-wan", "scail-distill-4", "scail-distill-6", "scail-preview-512p",
                              "scail-preview-fast", "scail-wan-unipc", "tiny-random", "tiny-random-scail-2"]
    default = load_pipeline()
    assert (default.name, default.animate.solver, default.animate.steps, default.animate.shift,
            default.animate.guide_scale, default.animate.negative_prompt) == ("scail-preview-512p", "euler", 50, 5.0, 4.0, "")
    wan = load_pipeline("scail-wan-unipc").animate
    assert (wan.solver, wan.steps, wan.shift, wan.guide_scale) == ("unipc", 40, 3.0, 5.0)
    fast = load_pipeline("scail-preview-fast").animate
    assert (fast.fast, fast.steps, fast.solver) == (True, 50, "euler")
    tiny = load_pipeline("tiny-random")
    assert (tiny.animate.model, tiny.animate.device, tiny.animate.dtype, tiny.pose.backend) == (
        "tiny-random", "cpu", "float32", "mediapipe")


def test_ctrl_c_through_the_real_cli_exits_130(make_toy_example, tmp_path) -> None:
    import signal
    import time

    from toy_pipeline import __file__ as toy_file

    path = make_toy_example("001")
    proc = subprocess.Popen([sys.executable, toy_file, "--cli", "--delay", "10", "run", str(path), "-p", "tiny-random"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list((path / ".scail").glob(".pose.tmp-*")):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else "timeout"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in out  # the summary table says so
    manifest = json.loads((path / ".scail" / "pose.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["error"] == "interrupted by the user"


@pytest.mark.parametrize(("args", "message"), [
    (["--steps", "0"], "error: --steps 0: Input should be greater than or equal to 1"),
    (["--set", "animate.steps=4", "--steps", "0"], "error: --steps 0: Input should be greater than or equal to 1"),
    (["--set", "animate.seed=x"], "error: --set animate.seed=x: Input should be a valid integer, unable to parse "
                                  "string as an integer"),
])
def test_flag_errors_name_the_flag_the_user_typed(args, message, make_toy_example) -> None:
    """A flag's bad value is reported as that flag, not as the --set it is turned into."""
    path = make_toy_example("001")
    result = runner.invoke(app, ["run", str(path), *args])
    assert result.exit_code == 1
    assert result.stderr.strip() == message


@pytest.mark.parametrize(("args", "bad"), [
    (["--device", "gpu"], "'--device'"),
    (["--device", "cpu:1"], "'--device'"),
    (["--pose-backend", "openpose"], "'--pose-backend'"),
])
def test_device_and_pose_backend_are_checked_before_any_work(args, bad, toy_stages, make_toy_example) -> None:
    path = make_toy_example("001")
    result = runner.invoke(app, ["run", str(path), "-p", "tiny-random", *args])
    assert result.exit_code == 2  # a usage error, reported by the parser
    assert f"Invalid value for {bad}" in result.stderr
    assert toy_stages == [] and not (path / ".scail").exists()  # nothing was built or written


def test_valid_devices_reach_render_and_animate(make_toy_example) -> None:
    from scail.cli import Options, resolve_config

    path = make_toy_example("001")
    for typed, expected in (("CUDA:1", "cuda:1"), ("cpu", "cpu"), ("auto", "auto")):
        result = runner.invoke(app, ["status", str(path), "-p", "tiny-random", "--device", typed, "--json"])
        assert result.exit_code == 0, result.output
        config = resolve_config(Options(path, pipeline="tiny-random", device=expected))
        assert (config.render.device, config.animate.device) == (expected, expected)


def test_every_config_flag_names_an_option_and_a_config_field() -> None:
    import dataclasses
    import typing

    from scail.cli import CONFIG_FLAGS, Options, PoseBackendChoice, flag_name
    from scail.config import PipelineConfig, PoseConfig

    fields = {f.name for f in dataclasses.fields(Options)}
    for field, keys in CONFIG_FLAGS.items():
        assert field in fields
        assert flag_name(field).startswith("--")
        for key in keys:  # every part names a field of the model above it (animate.parallel.gpus)
            model = PipelineConfig
            for name in key.split("."):
                assert name in model.model_fields, key
                model = model.model_fields[name].annotation
    assert flag_name("weights_dir") == "--weights-dir" and flag_name("sets") == "--set"
    assert [c.value for c in PoseBackendChoice] == list(typing.get_args(PoseConfig.model_fields["backend"].annotation))


def test_status_takes_the_same_configuration_options_as_run(toy_stages, make_toy_example) -> None:
    path = make_toy_example("001")
    assert runner.invoke(app, ["run", str(path), "-p", "tiny-random", "--steps", "3", "-q"]).exit_code == 0

    def statuses(*args: str) -> dict:
        result = runner.invoke(app, ["status", str(path), "-p", "tiny-random", *args, "--json"])
        assert result.exit_code == 0, result.output
        return {k: v["status"] for k, v in json.loads(result.stdout)["examples"][0]["stages"].items()}

    assert statuses("--steps", "3") == {"pose": "fresh", "render": "fresh", "animate": "fresh"}
    assert statuses("--steps", "4")["animate"] == "stale"
    assert statuses("--set", "animate.steps=3") == statuses("--steps", "3")


def test_traceback_is_accepted_anywhere_and_reraises_in_sub_apps(tmp_path) -> None:
    result = runner.invoke(app, ["--traceback", "run", str(tmp_path)])
    assert type(result.exception).__name__ == "InputError"
    result = runner.invoke(app, ["weights", "verify", "--dir", str(tmp_path / "nope"), "--traceback", "--json"])
    assert result.exit_code == 1 and json.loads(result.stdout)["ok"] is False  # a plain exit 1 is no error


def test_weights_download_offline_is_one_error_line(tmp_path) -> None:
    """Sub-apps go through the same error boundary: one line naming the fix, exit 1, no traceback."""
    import os

    target = tmp_path / "w"
    cmd = [sys.executable, "-m", "scail", "weights", "download", "--dir", str(target)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot download zai-org/SCAIL-Preview into {target}: the Hugging Face hub is "
                      "unreachable or offline mode is on (HF_HUB_OFFLINE); connect to the internet, or copy the "
                      f"SCAIL-Preview files there and run `scail weights verify --dir {target}`"]
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([*cmd, "--traceback"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "ScailError" in proc.stderr


def test_distill_presets_need_a_lora(make_toy_example, repo_root) -> None:
    """scail-distill-6/-4 refuse to run without a LoRA (one line naming --lora); --lora fills animate.loras."""
    from scail.cli import Options, resolve_config

    path = make_toy_example("001")
    for name in ("scail-distill-6", "scail-distill-4"):
        result = runner.invoke(app, ["run", str(path), "--pipeline", name])
        assert result.exit_code == 1
        assert result.stderr.strip() == (
            f"error: {repo_root / 'pipelines' / name}.yaml: animate: this pipeline is a step-distilled recipe (few "
            "steps, CFG 1) and needs the distill LoRA: add --lora PATH[:STRENGTH] (e.g. lightx2v's Wan2.1 I2V 14B "
            "cfg_step_distill rank-64 LoRA) or animate.loras")
    six = resolve_config(Options(path, pipeline="scail-distill-6", lora=["a/distill.safetensors:0.8", "b.safetensors"]))
    a = six.animate
    assert (a.solver, a.schedule, a.steps, a.shift, a.guide_scale) == ("euler", "comfyui-simple", 6, 5.0, 1.0)
    assert [(str(x.path), x.strength) for x in a.loras] == [("a/distill.safetensors", 0.8), ("b.safetensors", 1.0)]
    four = resolve_config(Options(path, pipeline="scail-distill-4", lora=["x.safetensors"])).animate
    assert (four.schedule, four.denoising_step_list, four.guide_scale) == ("lightx2v", (1000, 750, 500, 250), 1.0)



def test_scail2_presets_are_the_released_recipes(make_toy_example, repo_root) -> None:
    """scail-2: the paper's (euler 50, shift 5, CFG 4); scail-2-wan: the wan CLI's (unipc 40, shift 3,
    CFG 5); scail-2-distill: the README's distill LoRA recipe (unipc 8, shift 1, CFG 1), refused
    without a LoRA."""
    from scail.cli import Options, resolve_config

    path = make_toy_example("001")
    recipes = {"scail-2": ("euler", 50, 5.0, 4.0), "scail-2-wan": ("unipc", 40, 3.0, 5.0),
               "scail-2-distill": ("unipc", 8, 1.0, 1.0)}  # fmt: skip
    for name, recipe in recipes.items():
        a = resolve_config(Options(path, pipeline=name, lora=["d.safetensors"])).animate
        assert a.model == "scail-2-14b" and (a.solver, a.steps, a.shift, a.guide_scale) == recipe, name
    result = runner.invoke(app, ["run", str(path), "--pipeline", "scail-2-distill"])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith(f"error: {repo_root / 'pipelines' / 'scail-2-distill'}.yaml: animate: this "
                                            "pipeline is a step-distilled recipe")
    assert "--lora PATH[:STRENGTH]" in result.stderr

def test_loras_in_yaml(make_toy_example, tmp_path) -> None:
    from scail.cli import Options, resolve_config

    path = make_toy_example("001")
    preset = tmp_path / "mine.yaml"
    preset.write_text("animate:\n  loras:\n    - {path: dpo.safetensors, strength: 1.0}\n    - style.safetensors:0.5\n")
    loras = resolve_config(Options(path, pipeline=str(preset))).animate.loras
    assert [(str(x.path), x.strength) for x in loras] == [("dpo.safetensors", 1.0), ("style.safetensors", 0.5)]
    preset.write_text("animate:\n  loras:\n    - {path: dpo.safetensors, strenght: 1.0}\n")
    result = runner.invoke(app, ["run", str(path), "--pipeline", str(preset)])
    assert result.exit_code == 1 and result.stderr.strip() == f"error: {preset}: unknown key 'animate.loras.0.strenght'"


def test_status_loads_nothing_heavy(make_toy_example) -> None:
    """`scail status` builds the real stages but imports no torch, cv2 or av (it must stay instant)."""
    path = make_toy_example("001")
    code = ("import sys\nfrom scail.cli import main\n"
            f"sys.argv = ['scail', 'status', {str(path)!r}, '-p', 'tiny-random', '--json']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'cv2', 'decord', 'av') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert '"status": "missing"' in out and "HEAVY []" in out

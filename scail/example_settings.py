"""Per-example settings: `<example>/scail.yaml`, optional, for what differs from clip to clip.

    prompt: a woman dancing in a red sweater   # instead of prompt.txt
    person: 1          # which tracked person animates (a track id from .scail/pose_summary.json)
    start: 1.5         # use the driving video from 1.5 s ...
    end: 5.5           # ... to 5.5 s
    seed: 7
    align: false       # no rendered_aligned.mp4 (animate uses rendered.mp4)

Validated like the presets (unknown key -> one line naming the key and the file; `yaml.safe_load`).
Each entry becomes the stage parameter it stands for (`ENTRY_KEYS`), so it enters that stage's
fingerprint like any parameter: editing `start` reruns pose and what follows, `seed` only animate.
Precedence: preset < scail.yaml < the command line (`--set`, `--seed`, `--person`, `--prompt`), so
what is typed for one run still wins, while a batch keeps each clip's settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from scail.errors import InputError

SETTINGS_NAME = "scail.yaml"

ENTRY_KEYS: dict[str, str] = {
    "person": "render.person",
    "start": "pose.start_s",
    "end": "pose.end_s",
    "seed": "animate.seed",
    "align": "render.align",
}
"""scail.yaml entry -> the config field it sets (the prompt is read by `Example.prompt`)."""


class ExampleSettings(BaseModel):
    """The entries of one scail.yaml (all optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str | None = None
    """The text prompt (instead of prompt.txt; `--prompt` still wins)."""
    person: int | None = Field(None, ge=0)
    """Animate only this tracked person (render.person)."""
    start: float | None = Field(None, ge=0)
    """Start of the used part of the driving video, seconds (pose.start_s)."""
    end: float | None = Field(None, gt=0)
    """End of the used part of the driving video, seconds (pose.end_s)."""
    seed: int | None = None
    """Sampling seed (animate.seed)."""
    align: bool | None = None
    """Write and use rendered_aligned.mp4 (render.align)."""

    @model_validator(mode="after")
    def _range(self) -> ExampleSettings:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self

    def overrides(self) -> dict[str, Any]:
        """The dotted config overrides of the entries that are set."""
        return {key: getattr(self, entry) for entry, key in ENTRY_KEYS.items() if getattr(self, entry) is not None}


def settings_path(root: Path) -> Path:
    return Path(root) / SETTINGS_NAME


def load_example_settings(root: Path) -> ExampleSettings:
    """`<root>/scail.yaml` validated; empty settings when the file is absent. Raises `InputError`."""
    import yaml

    path = settings_path(root)
    if not path.is_file():
        return ExampleSettings()
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a readable YAML file ({first})") from exc
    if doc is None:
        return ExampleSettings()
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a mapping such as 'seed: 7' (keys: prompt, {', '.join(ENTRY_KEYS)})")
    try:
        return ExampleSettings.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            raise InputError(f"{path}: unknown key '{loc}' (known: prompt, {', '.join(ENTRY_KEYS)})") from None
        msg = err["msg"].removeprefix("Value error, ")
        raise InputError(f"{path}: {loc + ': ' if loc else ''}{msg}") from None


def config_for_example(config: Any, root: Path, protected: frozenset[str] = frozenset()) -> Any:
    """`config` (a PipelineConfig) with the example's scail.yaml applied, except the keys in
    `protected` (those the command line set). The same object when nothing changes."""
    from scail.config import PipelineConfig

    settings = load_example_settings(root)
    overrides = {k: v for k, v in settings.overrides().items() if k not in protected}
    if not overrides:
        return config
    doc = config.model_dump(mode="json")
    for key, value in overrides.items():
        stage, field = key.split(".")
        doc[stage][field] = value
    try:
        return PipelineConfig.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        entry = next((e for e, k in ENTRY_KEYS.items() if k == loc), loc)
        raise InputError(f"{settings_path(root)}: {entry}: {err['msg'].removeprefix('Value error, ')}") from None

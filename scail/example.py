"""The example folder contract (compatible with the official SCAIL layout).

    <example>/driving.mp4           input
    <example>/ref.jpg               input (ref.png, ref_image.jpg, ref_image.png: official search order)
    <example>/prompt.txt            optional input; --prompt overrides
    <example>/rendered.mp4          render output (official name)
    <example>/rendered_aligned.mp4  render output aligned to the reference (preferred by animate)
    <example>/samples/<name>.mp4    animate output
    <example>/.scail/               manifests, logs, lock, pose data
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from scail.errors import InputError

REFERENCE_NAMES = ("ref.jpg", "ref.png", "ref_image.jpg", "ref_image.png")
DRIVING_NAMES = ("driving.mp4", "driving.mov", "driving.webm", "driving.mkv", "driving.avi")
STATE_DIR = ".scail"


@dataclass(frozen=True)
class Example:
    """One example folder. Paths are derived, never stored twice."""

    root: Path

    @cached_property
    def name(self) -> str:
        """The folder's name as the user wrote it: `scail run .` inside an example still names it
        (the path is made absolute, `..` removed), and a symlinked example keeps the link's name,
        not its target's (symlinks are not resolved)."""
        return Path(os.path.abspath(self.root)).name

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def samples_dir(self) -> Path:
        return self.root / "samples"

    @property
    def rendered(self) -> Path:
        return self.root / "rendered.mp4"

    @property
    def rendered_aligned(self) -> Path:
        return self.root / "rendered_aligned.mp4"

    @property
    def pose_data(self) -> Path:
        return self.state_dir / "pose.npz"

    @property
    def ref_pose_data(self) -> Path:
        return self.state_dir / "ref_pose.npz"

    @property
    def prompt_file(self) -> Path:
        return self.root / "prompt.txt"

    def find_reference(self) -> Path | None:
        """The reference image, first of the official names that exists."""
        return next((self.root / n for n in REFERENCE_NAMES if (self.root / n).is_file()), None)

    def find_driving(self) -> Path | None:
        return next((self.root / n for n in DRIVING_NAMES if (self.root / n).is_file()), None)

    def reference(self) -> Path:
        ref = self.find_reference()
        if ref is None:
            raise InputError(f"{self.root}: no reference image (looked for {', '.join(REFERENCE_NAMES)}); add one")
        return ref

    def driving(self) -> Path:
        drv = self.find_driving()
        if drv is None:
            raise InputError(f"{self.root}: no driving video (looked for {', '.join(DRIVING_NAMES)}); add one")
        return drv

    def pose_video(self) -> Path | None:
        """The skeleton video animate reads: rendered_aligned.mp4, else rendered.mp4 (official order)."""
        return next((p for p in (self.rendered_aligned, self.rendered) if p.is_file()), None)

    @property
    def settings_file(self) -> Path:
        """Optional per-example settings (scail/example_settings.py)."""
        return self.root / "scail.yaml"

    def prompt_source(self, override: str | None = None) -> Path | None:
        """The file the prompt comes from (scail.yaml with a prompt, else prompt.txt), None for --prompt."""
        if override is not None:
            return None
        from scail.example_settings import load_example_settings

        if self.settings_file.is_file() and load_example_settings(self.root).prompt is not None:
            return self.settings_file
        return self.prompt_file if self.prompt_file.is_file() else None

    def prompt(self, override: str | None = None) -> str:
        """--prompt wins, else `prompt` in scail.yaml, else prompt.txt, else the empty prompt (official)."""
        if override is not None:
            return override.strip()
        source = self.prompt_source()
        if source == self.settings_file:
            from scail.example_settings import load_example_settings

            return (load_example_settings(self.root).prompt or "").strip()
        if self.prompt_file.is_file():
            return read_prompt_file(self.prompt_file)
        return ""


def read_prompt_file(path: Path) -> str:
    """A prompt file's text: UTF-8, with or without a byte-order mark (Windows editors add one).

    Any other encoding is an `InputError` naming the file and the first bad byte, raised before
    any stage runs (scail/preflight.py), never a raw UnicodeDecodeError after hours of work.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the prompt file ({exc.strerror})") from exc
    try:
        return raw.decode("utf-8-sig").strip()
    except UnicodeDecodeError as exc:
        bad = raw[exc.start]
        raise InputError(f"{path}: not UTF-8 text (byte 0x{bad:02x} at offset {exc.start}); "
                         "save it as UTF-8 and rerun") from None


def is_example_dir(path: Path) -> bool:
    """A folder is an example if it holds any input or output of the contract."""
    names = (*REFERENCE_NAMES, *DRIVING_NAMES, "rendered.mp4", "rendered_aligned.mp4")
    return any((path / n).is_file() for n in names)


def discover(path: Path) -> list[Example]:
    """PATH is one example folder or a folder of example folders (sorted by name)."""
    if not path.is_dir():
        raise InputError(f"{path}: not a folder; pass an example folder or a folder of them")
    if is_example_dir(path):
        return [Example(path)]
    found = [Example(p) for p in sorted(path.iterdir()) if p.is_dir() and not p.name.startswith(".")
             and is_example_dir(p)]
    if not found:
        raise InputError(f"{path}: no example folders found (each needs driving.mp4 and ref.jpg); see 'scail run --help'")
    return found

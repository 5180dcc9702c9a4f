"""Runtime configuration: pydantic models for the three stages and the pipeline presets.

Precedence: model defaults < preset (`pipelines/*.yaml`) < CLI flags. The resolved
`PipelineConfig` is what the stage cache fingerprints and what each manifest records.
Each stage fingerprints only its own block, so changing an animate option never reruns pose.

This is the only module that reads environment variables (see `Settings`).

Ownership: each stage's block below is owned by that stage (scail/pose, scail/render,
scail/animate); add fields there, with a docstring line saying what the field changes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scail.errors import InputError, expand_user


class _Strict(BaseModel):
    """Unknown keys are errors, so a misspelled preset key never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _device_name(v: str) -> str:
    """`*.device` fields take what `--device` takes (scail/device.py), checked before any work."""
    from scail.device import parse_device

    return parse_device(v)


# ----------------------------------------------------------------------------------------------
# Pose stage (owned by scail/pose)
# ----------------------------------------------------------------------------------------------


class PoseConfig(_Strict):
    """How the driving video and the reference image become pose data (.scail/pose.npz)."""

    backend: Literal["auto", "mediapipe", "nlf"] = "auto"
    """`auto` picks `nlf` when its weights are present or downloadable, else `mediapipe`."""
    fps: float = Field(16.0, gt=0)
    """Frame rate the driving video is resampled to (by timestamps). The model was trained at 16."""
    max_people: int = Field(1, ge=1, le=8)
    """How many people are tracked and rendered."""
    mediapipe_model: Literal["heavy", "full"] = "heavy"
    """The mediapipe backend's landmark model. `heavy` (the default): MediaPipe's largest pose model on
    each frame independently, as the official pipeline estimates each frame; fetched once into the pose
    env (scail/pose/landmark_model.py). `full`: the model in mediapipe's wheel, tracking from frame to
    frame; no download and about a quarter less time on CPU, less faithful (benchmarks/README.md, "pose_agreement.py")."""
    smoothing: bool = False
    """Temporal One-Euro smoothing of 3D and 2D points. Off by default: the official pipeline has none,
    and on examples/001 smoothing lowered agreement with the official pose video (it lags fast moves)."""
    fix_flips: bool = True
    """Undo left/right and front/back flips that last a few frames (scail/pose/flips.py): keeps the
    body's sides continuous over time; a real turn is kept."""
    max_gap_frames: int = Field(4, ge=0, le=64)
    """A person missing for at most this many frames is filled by interpolation; longer gaps stay empty."""
    device: str = "auto"
    """Torch device for the detector and the nlf backend ("cpu", "cuda", "auto": cuda when available)."""
    max_frames: int | None = Field(None, ge=1)
    """Keep at most this many frames of the driving video (after resampling)."""
    start_s: float = Field(0.0, ge=0)
    """Start of the used part of the driving video, in seconds (per example: `start` in scail.yaml)."""
    end_s: float | None = Field(None, gt=0)
    """End of the used part of the driving video, in seconds; None: to its end (`end` in scail.yaml)."""
    in_process: bool = False
    """Run the pose worker in this interpreter instead of the isolated pose venv."""
    timeout_s: float = Field(3600.0, gt=0)
    """Kill the pose worker if one example takes longer than this."""

    @model_validator(mode="after")
    def _range(self) -> PoseConfig:
        if self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError(f"end_s ({self.end_s}) must be after start_s ({self.start_s})")
        return self

    _device = field_validator("device")(_device_name)


# ----------------------------------------------------------------------------------------------
# Render stage (owned by scail/render)
# ----------------------------------------------------------------------------------------------


class RenderConfig(_Strict):
    """How pose data becomes the skeleton videos (rendered.mp4, rendered_aligned.mp4)."""

    person: int | None = Field(None, ge=0)
    """Render (and so animate) only this tracked person: a track id listed in .scail/pose_summary.json
    (`--person N`, or `person` in scail.yaml). None: every tracked person (multi-person palettes)."""
    radius_mm: float = Field(21.5, gt=0)
    """Capsule radius. The model was trained on 21.5 mm; other values are out of distribution."""
    overlay: bool = True
    """Paint the 2D face dots, hand lines and head lines over the 3D skeleton."""
    align: bool = True
    """Also write rendered_aligned.mp4, fitted to the reference image's pose (official alignment)."""
    retarget: bool = False
    """Re-pose the driving skeleton with the reference person's bone lengths (needs reference 3D joints)."""
    device: str = "cpu"
    """Torch device for the ray-capsule renderer ("cpu", "cuda", "cuda:1", or "auto")."""
    align_scale: tuple[float, float] = (0.7, 1.4)
    """Alignment bounds of m, the uniform camera scale (official: 0.7-1.4)."""
    align_stretch: tuple[float, float] = (0.8, 1.15)
    """Alignment bounds of s, the extra vertical scale fy/fx (official: 0.8-1.15)."""
    align_shift_frac: float = Field(1.0, ge=0)
    """Alignment bound of the principal-point shift, as a fraction of the width/height (official: 1)."""
    align_face_scale: tuple[float, float] = (0.8, 1.5)
    """Clip of the reference/driving face-size ratio applied to the 2D face (official: 0.8-1.5)."""
    multi_person_palettes: bool | None = None
    """Two-person palettes (pastel, saturated); default: when two or more people have 3D joints."""
    crf: int = Field(18, ge=0, le=51)
    """H.264 quality of the skeleton videos (official moviepy default: 23)."""
    cpu_threads: int | None = Field(1, ge=1)
    """Torch threads of the CPU renderer (null: torch's default); 1 is fastest on busy shared machines."""

    _device = field_validator("device")(_device_name)

    @field_validator("align_scale", "align_stretch", "align_face_scale")
    @classmethod
    def _ordered_bounds(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError(f"must be (low, high) with 0 < low <= high, got {v}")
        return v


# ----------------------------------------------------------------------------------------------
# Animate stage (owned by scail/animate)
# ----------------------------------------------------------------------------------------------


class LoraConfig(_Strict):
    """One LoRA file applied to the DiT (`animate.loras`; `--lora PATH[:STRENGTH]`)."""

    path: Path
    """A .safetensors (or .pt) LoRA in the ComfyUI/kijai/lightx2v, diffusers/PEFT or kohya layout."""
    strength: float = 1.0
    """Multiplies the LoRA's update (1.0 as trained; 0 leaves the weights as they are)."""

    @field_validator("strength")
    @classmethod
    def _finite(cls, v: float) -> float:
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError("strength must be a finite number")
        return v


MODEL_HEADS: dict[str, int] = {"scail-preview-14b": 40, "tiny-random": 2, "scail-2-14b": 40, "tiny-random-scail-2": 2}
"""Attention heads of each model's DiT (`DiTConfig.scail_14b`, `.tiny`): sequence parallel splits them."""


class ParallelConfig(_Strict):
    """Several GPUs on one sample (`--gpus N`): scail starts the processes itself (animate/launch.py)."""

    gpus: int = Field(1, ge=1, le=64)
    """Processes, one GPU each (cuda:<i>, cuda:<i+1>, ... from animate.device), that denoise one sample
    together: the token sequence is split across them (Ulysses sequence parallel). The DiT's heads must
    split evenly: 2, 4, 5 or 8 for the 40 heads of the 14B model. On the CPU: gloo processes (tests)."""
    cfg: bool = False
    """CFG parallel: the two CFG branches on two groups of gpus/2 (gpus must be even)."""
    timeout_s: float = Field(1800.0, gt=0)
    """A rank that does not answer for this long (crashed, hung) fails the sample on all ranks."""


class AnimateConfig(_Strict):
    """How the skeleton video, reference image and prompt become the animation (samples/*.mp4)."""

    model: Literal["scail-preview-14b", "tiny-random", "scail-2-14b", "tiny-random-scail-2"] = "scail-preview-14b"
    """Which model. `scail-2-14b`: SCAIL-2 (identity masks, animation or replacement, end-to-end, extra
    references, its own long-video continuation). `tiny-random`, `tiny-random-scail-2`: small random networks
    for tests and the offline demo: their output is noise."""
    weights_dir: Path | None = None
    """Folder of the model's download; default from $SCAIL_WEIGHTS_DIR or ~/.cache/scail/weights (SCAIL-2:
    its `scail-2/` subfolder)."""
    scail2_mode: Literal["auto", "end-to-end", "pose", "replacement"] = "auto"
    """SCAIL-2: `end-to-end` drives with the raw video, `pose` with a skeleton render, `replacement` replaces
    the masked person in the driving video. `auto`: replacement when replace_mask.mp4 exists, else
    end-to-end when there is a driving video, else pose (scail/animate/inputs2.py)."""
    masks: Literal["none", "embedded", "sam"] = "embedded"
    """SCAIL-2 identity masks missing from the example folder are made from the pose stage's person tracks:
    `embedded` (MediaPipe segmentation, offline on CPU; coarse), `sam` (ultralytics SAM, needs
    `mask_sam_weights`), `none` (the user provides them). Masks in the folder are always used as they are."""
    mask_sam_weights: Path | None = None
    """SCAIL-2 `masks: sam`: a SAM / SAM 2 / MobileSAM weights file in ultralytics' format (e.g. sam2.1_b.pt)."""
    solver: Literal["euler", "unipc", "dpm++"] = "euler"
    """`euler` is the official SAT sampler; `unipc` and `dpm++` are the wan branch's solvers."""
    steps: int = Field(50, ge=1, le=1000)
    shift: float = Field(5.0, gt=0)
    guide_scale: float = Field(4.0, ge=0)
    """Classifier-free guidance on the text (1 disables the unconditional branch)."""
    negative_prompt: str = ""
    seed: int = 42
    max_frames: int | None = Field(None, ge=1)
    """Animate only the first this many pose frames. Default: the whole pose video, output frame for frame."""
    window_frames: int = Field(81, ge=5, le=81)
    """Videos longer than this run in overlapping temporal windows of this many frames (4k + 1; the DiT's
    RoPE tables stop at 81 = 21 latent frames), denoised jointly at every step (animate/windows.py)."""
    window_overlap: int = Field(16, ge=0)
    """Frames shared by neighbouring windows (a multiple of 4; ComfyUI's context windows also use 16)."""
    window_blend: Literal["linear", "cosine", "triangular"] = "linear"
    """How overlapping windows' predictions are blended: ramps across the shared frames (`linear`, `cosine`)
    or the official RFSamplerLong's `triangular` profile over each whole window."""
    window_color: Literal["off", "first", "reference"] = "off"
    """Tie each window's per-channel latent mean/std to the previous window on their shared frames (`first`:
    a chain back to the first window) or to the reference image (`reference`). Off: on random weights no
    seam/drift gain could be shown (benchmarks/bench_long.py; rows in benchmarks/README.md)."""
    checkpoint_every_s: float | None = Field(300.0, ge=0)
    """Save the sampler state to .scail/ after this many seconds of work (and on Ctrl-C), so a rerun resumes
    mid-clip; null: only on Ctrl-C. Does not change the video."""
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    device: str = "auto"
    """Torch device: "auto" picks cuda when available, else cpu."""
    offload: Literal["none", "encoders", "blocks"] = "encoders"
    """`encoders`: T5 and CLIP leave the GPU after encoding; `blocks`: DiT blocks stream from CPU too."""
    compile: Literal["auto", "on", "off"] = "auto"
    """torch.compile each DiT block (fused norms/modulation/RoPE: faster and less memory; benchmarks/README.md).
    The first step of a new shape compiles. `auto`: on CUDA only."""
    fast: bool = False
    """Opt-in fast mode, NOT numerically the official model: FP8 block linears, FP8 self-attention (with
    flash-attn 3 on Hopper) and a step cache that reuses the blocks' output while their input barely
    changes (`fast_cache_threshold`). Its cost in quality and its speed are measured in benchmarks/README.md."""
    fast_cache_threshold: float = Field(0.1, ge=0)
    """Step-cache threshold of fast mode: accumulated relative change under which a step is skipped (0: none)."""
    fast_uncond_every: int = Field(1, ge=1)
    """Fast mode: run CFG's unconditional branch only every n-th step, reusing its difference to the
    conditional branch in between (such a step costs half). 2 lost too much quality on random weights
    (benchmarks/README.md), so the default is 1: every step."""
    vae_tiling: Literal["auto", "on", "off"] = "auto"
    """Decode the video in overlapping 256-px tiles (the VAE's TileConfig): bounded GPU memory, pixels
    close to but not equal to a whole-frame decode. `auto`: whole frames (as the official code, and about
    twice as fast) where the GPU's free memory holds them (~24 GiB per megapixel of frame), else tiles."""
    vae_decode_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """The VAE decoder's arithmetic. `auto`: float32 (the official) but in fast mode on a GPU, where
    the decoder runs in bfloat16 (half the bytes and tensor-core convolutions: 1.92 s against 3.37 s
    at 512x896x81 on an H100, benchmarks/README.md). The encoder stays float32."""
    size_hw: tuple[int, int] | None = None
    """Output (H, W), both multiples of 32. Default: by the reference's orientation, 512x896 or 896x512."""
    dit_file: Path | None = None
    """A DiT checkpoint to load instead of the weights folder's: any supported format (SAT, wan-named
    safetensors, ComfyUI/kijai fp8_e4m3fn_scaled, comfy-quant fp8 or int8); see `scail weights verify`."""
    loras: tuple[LoraConfig, ...] = ()
    """LoRAs applied to the DiT, in order: [{path, strength}] or "PATH[:STRENGTH]" strings. `--lora`
    (repeatable) replaces this list. Their file identities and strengths enter the fingerprint."""
    lora_merge: bool = True
    """Merge the LoRAs into the weights at load (in float32, then cast): no cost per step. false: add
    their low-rank updates to the block linears' outputs at run time (base weights stay as loaded)."""
    schedule: Literal["default", "comfyui-simple", "lightx2v"] = "default"
    """Noise levels: the solver's own (`default`), or a step-distilled recipe's for the euler solver:
    ComfyUI's `simple` scheduler (`steps` steps) or LightX2V's `denoising_step_list`."""
    denoising_step_list: tuple[int, ...] | None = None
    """Timesteps (1000 = pure noise, decreasing) of the `lightx2v` schedule, e.g. [1000, 750, 500, 250]."""
    requires_lora: bool = False
    """The preset is a step-distilled recipe (few steps, CFG 1) that only works with a distill LoRA:
    refuse to run without `animate.loras`."""
    parallel: ParallelConfig = ParallelConfig()
    """Sequence / CFG parallel across GPUs. Does not change the video (beyond float rounding)."""

    _device = field_validator("device")(_device_name)

    @field_validator("loras", mode="before")
    @classmethod
    def _lora_strings(cls, v: object) -> object:
        """"PATH[:STRENGTH]" strings (the --lora flag, short YAML) become {path, strength}."""
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list | tuple):
            from scail.animate.lora import LoraSpec

            out: list[object] = []
            for item in v:
                if isinstance(item, str):
                    spec = LoraSpec.parse(item)
                    out.append({"path": spec.path, "strength": spec.strength})
                else:
                    out.append(item)
            return out
        return v

    @model_validator(mode="after")
    def _distill_recipe(self) -> AnimateConfig:
        if self.schedule != "default" and self.solver != "euler":
            raise ValueError(f"animate.schedule={self.schedule} is sampled with the euler solver, not {self.solver}")
        if self.schedule == "lightx2v" and not self.denoising_step_list:
            raise ValueError("animate.schedule=lightx2v needs animate.denoising_step_list, e.g. [1000, 750, 500, 250]")
        if self.requires_lora and not self.loras:
            raise ValueError("this pipeline is a step-distilled recipe (few steps, CFG 1) and needs the distill LoRA: "
                             "add --lora PATH[:STRENGTH] (e.g. lightx2v's Wan2.1 I2V 14B cfg_step_distill rank-64 "
                             "LoRA) or animate.loras")
        return self

    @model_validator(mode="after")
    def _sam_needs_weights(self) -> AnimateConfig:
        if self.masks == "sam" and self.mask_sam_weights is None:
            raise ValueError("masks: sam needs animate.mask_sam_weights, a SAM / SAM 2 / MobileSAM .pt file in "
                             "ultralytics' format (e.g. sam2.1_b.pt); or use masks: embedded")
        return self

    @model_validator(mode="after")
    def _fast_without_block_offload(self) -> AnimateConfig:
        if self.fast and self.offload == "blocks":
            raise ValueError("animate.fast cannot be combined with animate.offload=blocks: FP8 halves the DiT "
                             "weights to ~16 GB, so try fast with offload=encoders, or turn fast off")
        return self

    @model_validator(mode="after")
    def _parallel_split(self) -> AnimateConfig:
        heads = MODEL_HEADS[self.model]
        groups = 2 if self.parallel.cfg else 1
        gpus = self.parallel.gpus
        if gpus % groups:
            raise ValueError(f"animate.parallel.gpus={gpus}: CFG parallel needs an even number of GPUs (2 groups)")
        if heads % (gpus // groups):
            valid = ", ".join(str(n * groups) for n in range(1, 17) if heads % n == 0 and n * groups <= 16)
            raise ValueError(f"animate.parallel.gpus={gpus}: the {self.model} DiT's {heads} attention heads do "
                             f"not split across {gpus // groups} sequence-parallel ranks; use one of {valid}")
        return self

    @model_validator(mode="after")
    def _window_shape(self) -> AnimateConfig:
        if (self.window_frames - 1) % 4:
            raise ValueError(f"window_frames {self.window_frames}: must be 4k + 1 (5, 9, ..., 81)")
        if self.window_overlap % 4 or self.window_overlap > self.window_frames - 5:
            raise ValueError(f"window_overlap {self.window_overlap}: must be a multiple of 4 and at most "
                             f"window_frames - 5 = {self.window_frames - 5}")
        return self

    @field_validator("size_hw")
    @classmethod
    def _size_multiple_of_32(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and (v[0] <= 0 or v[1] <= 0 or v[0] % 32 or v[1] % 32):
            raise ValueError(f"size_hw {list(v)}: height and width must be positive multiples of 32, e.g. [512, 896]")
        return v


# ----------------------------------------------------------------------------------------------
# The whole pipeline
# ----------------------------------------------------------------------------------------------

class PreviewsConfig(_Strict):
    """Look-before-you-spend previews in `<example>/previews/` (scail/previews/). Not part of any
    stage's fingerprint: turning them on or off never makes a stage stale."""

    enabled: bool = True
    """Write the contact sheet, overlay, turntable and side-by-side previews after the stages (--no-previews: off)."""
    turntable: bool = True
    """Also the 3D turntable clip of the skeleton (needs pyrender: pip install 'scail[previews3d]')."""


StageName = Literal["pose", "render", "animate"]
STAGES: tuple[StageName, ...] = ("pose", "render", "animate")


class PipelineConfig(_Strict):
    """A named preset: one block per stage. Loaded from `pipelines/<name>.yaml`."""

    name: str = "default"
    description: str = ""
    pose: PoseConfig = PoseConfig()
    render: RenderConfig = RenderConfig()
    animate: AnimateConfig = AnimateConfig()
    previews: PreviewsConfig = PreviewsConfig()

    @model_validator(mode="before")
    @classmethod
    def _track_the_chosen_person(cls, data: object) -> object:
        """`render.person: N` needs tracks 0..N: pose.max_people is raised to N + 1 when lower."""
        if isinstance(data, dict) and isinstance(data.get("render"), dict):
            person = data["render"].get("person")
            pose = data.setdefault("pose", {})
            if isinstance(person, int) and isinstance(pose, dict) and int(pose.get("max_people", 1)) <= person:
                data = {**data, "pose": {**pose, "max_people": person + 1}}
        return data


class Settings(_Strict):
    """Machine-level settings from the environment (the only place scail reads env vars)."""

    weights_dir: Path
    cache_dir: Path
    ray_address: str | None = None
    """$RAY_ADDRESS: the Ray cluster `scail doctor` reports (Ray's own variable)."""
    gpu_table: Path | None = None
    """$SCAIL_GPU_TABLE: a YAML file of measured GPU speeds added to scail/gpu_table.yaml (`scail plan`)."""

    @classmethod
    def from_env(cls) -> Settings:
        cache = expand_user(os.environ.get("SCAIL_CACHE_DIR", "~/.cache/scail"), "$SCAIL_CACHE_DIR (or ~/.cache/scail)")
        weights = expand_user(os.environ.get("SCAIL_WEIGHTS_DIR", cache / "weights"), "$SCAIL_WEIGHTS_DIR")
        table = os.environ.get("SCAIL_GPU_TABLE") or None
        return cls(weights_dir=weights, cache_dir=cache, ray_address=os.environ.get("RAY_ADDRESS") or None,
                   gpu_table=expand_user(table, "$SCAIL_GPU_TABLE") if table else None)


def resolve_weights_dir(explicit: Path | str | None = None) -> Path:
    """The SCAIL weights folder: `explicit` (--weights-dir, animate.weights_dir, `scail weights --dir`)
    when given, else $SCAIL_WEIGHTS_DIR, else `<$SCAIL_CACHE_DIR or ~/.cache/scail>/weights`."""
    return expand_user(explicit, "weights folder") if explicit else Settings.from_env().weights_dir


# ----------------------------------------------------------------------------------------------
# Loading presets (owned by the foundation: scail/batch.py, scail/cli.py)
# ----------------------------------------------------------------------------------------------

DEFAULT_PIPELINE = "scail-preview-512p"


def preset_dirs() -> list[Path]:
    """Where named presets live: the repo's `pipelines/`, then the copy installed as package data."""
    here = Path(__file__).resolve().parent
    return [here.parent / "pipelines", here / "pipelines"]


def list_presets() -> list[str]:
    """Names of the presets that `--pipeline NAME` accepts."""
    names = {p.stem for d in preset_dirs() if d.is_dir() for p in d.glob("*.yaml")}
    return sorted(names)


def _find_preset(name_or_file: str) -> Path:
    as_path = expand_user(name_or_file, "--pipeline")
    if as_path.suffix in (".yaml", ".yml") or as_path.is_file():
        if not as_path.is_file():
            raise InputError(f"{as_path}: pipeline file not found")
        return as_path
    for d in preset_dirs():
        candidate = d / f"{name_or_file}.yaml"
        if candidate.is_file():
            return candidate
    raise InputError(f"unknown pipeline '{name_or_file}'; choose one of {', '.join(list_presets()) or '(none)'}"
                     " or pass a .yaml file")


def _set_dotted(doc: dict, key: str, value: object, source: str) -> None:
    parts = key.split(".")
    node = doc
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise InputError(f"{source}: '{key}' does not name an option (use e.g. animate.steps=4)")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, object]:
    """`animate.steps=4` -> ("animate.steps", 4). Values are parsed as YAML scalars (4, 1.5, true, null)."""
    import yaml

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise InputError(f"--set {text}: expected KEY=VALUE, e.g. --set animate.steps=4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, (dict, list)):
        value = raw  # a bare string that happens to look like YAML structure
    return key, value


def load_pipeline(name_or_file: str | None = None, overrides: dict[str, object] | None = None,
                  typed: dict[str, str] | None = None) -> PipelineConfig:
    """Resolve a preset (name or YAML file) plus dotted overrides into a validated `PipelineConfig`.

    Precedence: model defaults < preset < overrides. Unknown keys are errors naming the key and file.
    `typed` says how the user wrote each override (`"--steps 0"`); an invalid value is reported that
    way. Default: `--set KEY=VALUE`.
    """
    import yaml
    from pydantic import ValidationError

    path = _find_preset(name_or_file or DEFAULT_PIPELINE)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a readable YAML file ({first})") from exc
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a mapping of stage blocks (pose:, render:, animate:)")
    doc.setdefault("name", path.stem)
    overrides = overrides or {}
    typed = {key: f"--set {key}={value}" for key, value in overrides.items()} | (typed or {})
    for key, value in overrides.items():
        _set_dotted(doc, key, value, typed[key].partition('=')[0])
    try:
        return PipelineConfig.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        err["msg"] = err["msg"].removeprefix("Value error, ")  # our validators' messages stand alone
        loc = ".".join(str(x) for x in err["loc"])
        if loc in overrides:
            if err["type"] == "extra_forbidden":
                raise InputError(f"{typed[loc].partition('=')[0]}: unknown key '{loc}'") from None
            raise InputError(f"{typed[loc]}: {err['msg']}") from None
        if err["type"] == "extra_forbidden":
            raise InputError(f"{path}: unknown key '{loc}'") from None
        # a check across a block's fields names the key it rejects ("animate.parallel.gpus=3: ..."):
        # when the user set that key, the error is theirs, not the file's
        named = next((k for k in overrides if err["msg"].startswith(f"{k}=")), None)
        if named is not None:
            raise InputError(f"{typed[named]}: {err['msg'].partition(': ')[2]}") from None
        raise InputError(f"{path}: {loc}: {err['msg']}") from None

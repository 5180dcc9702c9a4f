"""Random weights with the real key names, at any model size: for benchmarks and tests only.

A benchmark must time the pipeline `scail run` builds, and a test box has no 40 GB download. This
module stands in for the files and nothing else:

* `RandomWeights`: a weights source `build.build_pipeline(config, weights=RandomWeights())` takes
  instead of the weights folder. Every network is built on the meta device and filled through the
  loaders' own assign path (`checkpoint.assign_weights`, `dit_files.dit_with` with its LoRA merge
  and FP8 handling) with random tensors under the real names, drawn on the GPU when there is one
  (the 14B DiT in seconds) and moved to where the loader puts the network. The tokenizer is the
  character-level `UMT5Tokenizer.tiny` (the real one is a download); prompts keep their 512 slots.
* `write_weights_folder`: the same random networks written in the release layout
  (`weights.py`: SAT DiT, `.pth` VAE / umT5 / CLIP, a tokenizer.json), for a cold start from disk.
* `random_state` / `random_dit`: the one random initialisation (N(0, 1/fan_in) matrices, small
  biases, norm gains near 1, adaLN tables N(0, 1/D)), so activations stay O(1) at any size.

The output video of random weights is noise: these numbers are speed and memory, never quality.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch
    from torch import nn

    from scail.animate.clip import CLIPVisionTower
    from scail.animate.dit import DiT, DiTConfig
    from scail.animate.t5 import T5Encoder
    from scail.animate.tokenizer import UMT5Tokenizer
    from scail.animate.vae import WanVAE
    from scail.animate.weights import Architectures


def draw_device() -> torch.device:
    """Where random tensors are drawn: the GPU when there is one (fast), else the CPU."""
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def random_tensor(name: str, shape: tuple[int, ...], gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """One random tensor for the parameter `name`, drawn on the generator's device."""
    import torch

    t = torch.empty(shape, dtype=dtype, device=gen.device)
    if name.endswith("modulation"):
        return t.normal_(0.0, shape[-1] ** -0.5, generator=gen)
    if len(shape) == 1 and "norm" in name and name.endswith(("weight", "gamma")):
        return t.normal_(1.0, 0.1, generator=gen)
    if len(shape) <= 1:
        return t.normal_(0.0, 0.05, generator=gen)
    return t.normal_(0.0, math.prod(shape[1:]) ** -0.5, generator=gen)


def random_state(
    model: nn.Module,
    device: torch.device | str,
    dtype: torch.dtype,
    seed: int,
    fp32: Callable[[str], bool] = lambda name: False,
    draw_on: torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """Random tensors for every floating entry of `model.state_dict()` (the model may be on meta).

    Drawn on `draw_on` (default `device`) and moved to `device` one at a time, so a network bound
    for the CPU never sits whole on the GPU. `fp32(name)`: entries kept in float32.
    """
    import torch

    device = torch.device(device)
    gen = torch.Generator(device=draw_on or device).manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, p in model.state_dict().items():
        if not p.is_floating_point():
            continue
        t = random_tensor(name, tuple(p.shape), gen, torch.float32 if fp32(name) else dtype)
        state[name] = t.to(device)
    return state


def random_dit(cfg: DiTConfig, device: torch.device | str, dtype: torch.dtype, seed: int = 0) -> DiT:
    """A DiT (SCAIL-2's for a `SCAIL2Config`) built on meta with random weights made on `device`
    (`is_fp32_param` entries in float32)."""
    import torch

    from scail.animate.dit import is_fp32_param
    from scail.animate.dit2 import build_dit

    with torch.device("meta"):
        model = build_dit(cfg)
    model.load_state_dict(random_state(model, device, dtype, seed, is_fp32_param), strict=True, assign=True)
    return model.eval().requires_grad_(False)


FILE_DTYPES = {"dit": "bfloat16", "vae": "float32", "t5": "bfloat16", "clip": "float16"}
"""The dtype each network's tensors have in the release files: random ones are drawn in it, so a
network built from `RandomWeights` equals the one loaded from `write_weights_folder`'s files."""
_OFFSETS = {"dit": 0, "vae": 1, "t5": 2, "clip": 3}


@dataclass(frozen=True)
class RandomWeights:
    """A weights source of random networks at `architectures`' sizes (default: the released ones).

    `build.build_pipeline(config, weights=RandomWeights())` loads these instead of the weights
    folder's files; everything else (dtypes, placement, offload, compile, LoRAs, fast mode, tiling)
    follows the config exactly as for the files. Two sources with the same seed give the same networks.
    """

    seed: int = 0
    architectures: Architectures | None = None

    def arch(self, model: str) -> Architectures:
        from scail.animate.weights import Architectures

        return self.architectures or Architectures.released(model)

    def identity(self) -> dict[str, str]:
        """What stands in the animate fingerprint for the files' identities."""
        return {"random": f"seed {self.seed}"}

    def meta_model(self, component: str, model: str) -> nn.Module:
        """The network `component` (dit, vae, t5, clip) of `model` on the meta device."""
        import torch

        from scail.animate.clip import CLIPVisionTower
        from scail.animate.dit2 import build_dit
        from scail.animate.t5 import T5Encoder
        from scail.animate.vae import VideoVAE

        arch = self.arch(model)
        builders: dict[str, Callable[[], nn.Module]] = {
            "dit": lambda: build_dit(arch.dit), "vae": lambda: VideoVAE(arch.vae),
            "t5": lambda: T5Encoder(arch.t5), "clip": lambda: CLIPVisionTower(arch.clip),
        }
        with torch.device("meta"):
            return builders[component]()

    def state(self, component: str, model: str, device: torch.device | str) -> dict[str, torch.Tensor]:
        """`component`'s tensors under their file names (the DiT: wan names, as convert.py's and
        ComfyUI's safetensors), in the release files' dtype, on `device` (drawn on the GPU if any)."""
        import torch

        dtype = getattr(torch, FILE_DTYPES[component])
        meta = self.meta_model(component, model)
        return random_state(meta, device, dtype, self.seed + _OFFSETS[component], draw_on=draw_device())

    def dit_tensors(self, model: str, device: torch.device | str) -> dict[str, torch.Tensor]:
        """The DiT's tensors for `dit_files.dit_with` (as a bf16 checkpoint holds them)."""
        return self.state("dit", model, device)

    def _load(self, component: str, dtype: torch.dtype, device: torch.device | str, model: str, what: str) -> nn.Module:
        """Through the loaders' assign path: strict key/shape check, cast to `dtype`, assigned on `device`."""
        from scail.animate.checkpoint import assign_weights

        net = self.meta_model(component, model)
        return assign_weights(net, self.state(component, model, device), dtype, device, "random weights", what)

    def vae(self, dtype: torch.dtype, device: torch.device | str, model: str = "scail-preview-14b") -> WanVAE:
        from scail.animate.vae import WAN_VAE, VideoVAE, WanVAE

        net = self._load("vae", dtype, device, model, WAN_VAE)
        assert isinstance(net, VideoVAE)
        return WanVAE(net)

    def t5(self, dtype: torch.dtype, device: torch.device | str, model: str = "scail-preview-14b") -> T5Encoder:
        from scail.animate.t5 import T5Encoder

        net = self._load("t5", dtype, device, model, "the umT5 encoder")
        assert isinstance(net, T5Encoder)
        return net

    def clip(self, dtype: torch.dtype, device: torch.device | str, model: str = "scail-preview-14b") -> CLIPVisionTower:
        from scail.animate.clip import CLIPVisionTower

        net = self._load("clip", dtype, device, model, "the CLIP vision tower")
        assert isinstance(net, CLIPVisionTower)
        return net

    def tokenizer(self, model: str = "scail-preview-14b") -> UMT5Tokenizer:
        from scail.animate.tokenizer import UMT5Tokenizer

        return UMT5Tokenizer.tiny(text_len=self.arch(model).t5.text_len)


def write_weights_folder(root: Path, weights: RandomWeights | None = None, model: str = "scail-preview-14b",
                         dit_format: Literal["sat", "fp8_e4m3fn_scaled"] = "sat") -> Path:
    """Write `weights`' networks into `root` in the release layout (`weights.py`) and their dtypes
    (`FILE_DTYPES`), and return `root`. At 14B this is ~45 GB: the DiT's SAT file (~33 GB), umT5
    (~11 GB), CLIP and the VAE; the tokenizer is the character-level one as tokenizer.json.

    `dit_format` "fp8_e4m3fn_scaled" writes the DiT as ComfyUI's scaled fp8 file instead
    (`write_fp8_scaled_dit`, ~16 GB at 14B, as `model/<name>_fp8_e4m3fn_scaled.safetensors`, which
    the folder's layout accepts in place of the SAT checkpoint)."""
    import torch

    from scail.animate import weights as layout
    from scail.animate.dit_loader import wan_to_sat

    weights = weights or RandomWeights()
    root = Path(root)
    if dit_format == "fp8_e4m3fn_scaled":
        (root / layout.DIT_DIR).mkdir(parents=True, exist_ok=True)
        write_fp8_scaled_dit(root / layout.DIT_DIR / f"{model}_fp8_e4m3fn_scaled.safetensors", weights, model)
    elif dit_format == "sat":
        dit_dir = root / layout.DIT_DIR / "1"
        dit_dir.mkdir(parents=True, exist_ok=True)
        sat_file = layout.SCAIL2_SAT_FILE if layout.is_scail2(model) else layout.SAT_FILE
        torch.save({"module": wan_to_sat(weights.state("dit", model, "cpu"))}, dit_dir / sat_file)
        (root / layout.DIT_DIR / "latest").write_text("1\n", encoding="utf-8")
    else:
        raise ValueError(f"dit_format {dit_format!r}: choose sat or fp8_e4m3fn_scaled")
    torch.save(weights.state("vae", model, "cpu"), root / layout.VAE_FILE)
    (root / layout.T5_FILE).parent.mkdir(parents=True, exist_ok=True)
    torch.save(weights.state("t5", model, "cpu"), root / layout.T5_FILE)
    clip = {f"visual.{k}": v for k, v in weights.state("clip", model, "cpu").items()}
    clip["log_scale"] = torch.tensor(4.6052)
    torch.save(clip, root / layout.CLIP_FILES[0])
    weights.tokenizer(model).backend.save(str(root / layout.TOKENIZER_DIRS[0] / "tokenizer.json"))
    return root


def write_fp8_scaled_dit(path: Path, weights: RandomWeights | None = None, model: str = "scail-preview-14b") -> Path:
    """`weights`' DiT as ComfyUI's legacy scaled fp8 file (kijai's `*_fp8_e4m3fn_scaled_KJ`): the
    blocks' linears (`fast.FP8_LINEARS`) in float8 e4m3 with one float32 `scale_weight` each, the rest
    bf16, keys under `model.diffusion_model.`, and the `scaled_fp8` marker (`quant.py` reads it).
    Quantized on the GPU where there is one."""
    import torch
    from safetensors.torch import save_file

    from scail.animate.fast import FP8_LINEARS

    weights = weights or RandomWeights()
    state = weights.state("dit", model, draw_device())
    fp8 = torch.float8_e4m3fn
    linears = {f".{name}.weight" for name in FP8_LINEARS}
    out: dict[str, torch.Tensor] = {}
    for key in list(state):
        w = state.pop(key)
        if key.startswith("blocks.") and any(key.endswith(s) for s in linears):
            scale = (w.abs().amax().float() / torch.finfo(fp8).max).clamp_(min=1e-12)
            out[f"model.diffusion_model.{key}"] = (w.float() / scale).to(fp8).cpu()
            out[f"model.diffusion_model.{key.removesuffix('.weight')}.scale_weight"] = scale.reshape(1).cpu()
        else:
            out[f"model.diffusion_model.{key}"] = w.cpu()
    out["scaled_fp8"] = torch.empty(0, dtype=fp8)
    save_file(out, str(path))
    return path

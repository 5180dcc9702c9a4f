"""Building the animate pipeline from its config: which networks, on which device, in which dtype.

`build_pipeline(config)` is what the animate stage calls (and the benchmark, so both measure the
same thing). `AnimateConfig.model` picks the model set:

* `scail-preview-14b`: the files of `zai-org/SCAIL-Preview` under the weights folder
  (`weights.resolve`); a missing file is a one-line error naming `scail weights download --dir ...`.
* `tiny-random`: a DiT, VAE, umT5 and CLIP a few hundred kilobytes in size, built in code from a
  fixed seed, with a character-level tokenizer (`UMT5Tokenizer.tiny`), so the whole chain runs
  offline on a CPU in seconds.
  **Its output is noise**: it proves the plumbing (shapes, files, caching), not the model.

Benchmarks and tests pass `weights=RandomWeights()` (`random_weights.py`) to build the 14B pipeline
with random tensors under the real names in place of the weights folder's files: the same loaders,
dtypes, placement, LoRA merge, fast mode and memory plan, no download.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from scail.config import resolve_weights_dir
from scail.device import resolve_device

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import torch

    from scail.animate.dit import DiT
    from scail.animate.dit_files import LoadedDiT
    from scail.animate.lora import LoraSpec
    from scail.animate.offload import Visitor
    from scail.animate.pipeline import AnimatePipeline, DiTModels
    from scail.animate.prefetch import Prefetch
    from scail.animate.random_weights import RandomWeights
    from scail.animate.vae import TileConfig
    from scail.animate.weights import Architectures
    from scail.config import AnimateConfig

log = logging.getLogger(__name__)

TINY_RANDOM_SEED = 20240601
TINY_RANDOM_LABEL = "tiny-random (random weights: output is noise)"


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The DiT compute dtype: as configured on a GPU; float32 on the CPU (bf16 matmuls are slow there)."""
    import torch

    if device.type == "cpu" and name != "float32":
        log.info("running on the CPU: using float32 instead of %s", name)
        return torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def resolve_vae_tile(mode: str, device: torch.device) -> TileConfig | None:
    """AnimateConfig.vae_tiling -> the decode tiles: "auto" has tiles on a GPU (used only where whole
    frames do not fit, `AnimatePipeline.decode_tile`) and decodes whole frames on the CPU."""
    from scail.animate.vae import TileConfig

    return TileConfig() if mode == "on" or (mode == "auto" and device.type != "cpu") else None


def weights_dir(config: AnimateConfig) -> Path:
    """The model's weights folder: animate.weights_dir, else the default folder (`resolve_weights_dir`),
    for SCAIL-2 its `scail-2/` subfolder (where `scail weights download --model scail-2` puts it)."""
    from scail.animate import weights

    if config.weights_dir is not None:
        return resolve_weights_dir(config.weights_dir)
    return weights.model_dir(resolve_weights_dir(), config.model)


# ----------------------------------------------------------------------------------------------
# tiny-random
# ----------------------------------------------------------------------------------------------


def build_tiny_random(
    device: torch.device | str = "cpu",
    seed: int = TINY_RANDOM_SEED,
    vae_tile: TileConfig | None = None,
    scail2: bool = False,
) -> AnimatePipeline:
    """Tiny random DiT / VAE / umT5 / CLIP in float32 (same structure as the real ones; `scail2`: a
    SCAIL-2 DiT).

    The weights depend only on `seed` (the global RNG is left untouched), so two builds are equal.
    """
    import torch

    from scail.animate.clip import CLIPConfig, CLIPImageEncoder, CLIPVisionTower
    from scail.animate.dit import DiTConfig
    from scail.animate.dit2 import SCAIL2Config, build_dit
    from scail.animate.pipeline import AnimatePipeline
    from scail.animate.t5 import T5Config, T5Encoder, TextEncoder
    from scail.animate.tokenizer import UMT5Tokenizer
    from scail.animate.vae import VAEConfig, VideoVAE, WanVAE

    log.warning("model tiny-random: random weights, the output video is noise (for tests and demos only)")
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # first, so `tiny_random_dit` builds the same one
        dit = build_dit(SCAIL2Config.tiny() if scail2 else DiTConfig.tiny()).init_weights(gen)
        vae = VideoVAE(VAEConfig.tiny())
        t5_cfg = T5Config.tiny()
        t5 = T5Encoder(t5_cfg)
        clip = CLIPVisionTower(CLIPConfig.tiny())
        with torch.no_grad():  # zeros by default; random so the CLIP tokens differ from each other
            clip.cls_embedding.normal_(0, 0.02)
            clip.pos_embedding.normal_(0, 0.02)
    tokenizer = UMT5Tokenizer.tiny(text_len=t5_cfg.text_len)
    return AnimatePipeline(
        dit=dit.to(device).eval().requires_grad_(False),
        vae=WanVAE(vae.to(device)),
        text_encoder=TextEncoder(t5.eval().requires_grad_(False), tokenizer),
        image_encoder=CLIPImageEncoder(clip.eval().requires_grad_(False)),
        device=device,
        offload="none",
        label=TINY_RANDOM_LABEL.replace("tiny-random", "tiny-random-scail-2") if scail2 else TINY_RANDOM_LABEL,
        vae_tile=vae_tile,
    )


def tiny_random_dit(device: torch.device | str = "cpu", seed: int = TINY_RANDOM_SEED, scail2: bool = False) -> DiT:
    """The DiT of `build_tiny_random(seed=seed, scail2=scail2)` alone, with the same weights."""
    import torch

    from scail.animate.dit import DiTConfig
    from scail.animate.dit2 import SCAIL2Config, build_dit

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dit = build_dit(SCAIL2Config.tiny() if scail2 else DiTConfig.tiny())
        dit.init_weights(torch.Generator().manual_seed(seed))
    return dit.to(device).eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------
# SCAIL-Preview 14B
# ----------------------------------------------------------------------------------------------


def load_scail_dit(
    dit_path: Path | RandomWeights,
    num_heads: int,
    device: torch.device,
    dtype: torch.dtype,
    offload: str,
    compile_dit: bool,
    loras: Sequence[LoraSpec] = (),
    lora_merge: bool = True,
    fp8_linears: bool = False,
    model: str = "scail-preview-14b",
) -> tuple[LoadedDiT, object | None]:
    """The DiT of `build_scail_preview` with its memory plan: rows in turn on a GPU, the blocks
    streamed from the CPU with offload "blocks", compiled blocks. Returns it and the block streamer.

    `dit_path` may be a `RandomWeights` source (benchmarks, tests): its tensors of `model` take the
    file's place and go through the same load (LoRA merge, FP8 linears, placement).
    """
    import torch

    from scail.animate.dit_files import dit_with, load_dit_with
    from scail.animate.offload import offload_dit_blocks

    streamed = offload == "blocks"
    at = torch.device("cpu") if streamed else device
    fp8 = fp8_linears and not streamed
    if isinstance(dit_path, Path):
        loaded = load_dit_with(dit_path, num_heads=num_heads, dtype=dtype, device=at, loras=loras,
                               lora_merge=lora_merge, fp8_linears=fp8)
    else:  # random tensors under the real names, bf16 as the release file holds them
        loaded = dit_with(dit_path.dit_tensors(model, at), source="random weights", num_heads=num_heads,
                          dtype=dtype, device=at, loras=loras, lora_merge=lora_merge, fp8_linears=fp8)
    dit = loaded.dit
    # the CFG pair through each block one row after the other: same output and speed, less peak
    # memory (benchmarks/README.md)
    dit.set_rows_in_turn(device.type != "cpu")
    # offload "blocks": the blocks wait in pinned CPU memory and stream to the GPU one ahead of use
    block_offload = offload_dit_blocks(dit, device) if streamed else None
    if compile_dit:
        dit.compile_blocks()
    return loaded, block_offload


def build_scail_preview(
    root: Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    offload: str = "encoders",
    architectures: Architectures | None = None,
    vae_tile: TileConfig | None = None,
    compile_dit: bool = False,
    dit_file: Path | None = None,
    loras: Sequence[LoraSpec] = (),
    lora_merge: bool = True,
    fp8_linears: bool = False,
    model: str = "scail-preview-14b",
    weights: RandomWeights | None = None,
) -> AnimatePipeline:
    """The released model from a SCAIL-Preview (or, `model` scail-2-14b, SCAIL-2) folder (see
    `weights.py` for the layout); the DiT's kind is read from its keys and must match `model`.
    `weights`: random networks instead of the folder's files (`random_weights.py`; `root` unused).

    `architectures` gives the umT5 and CLIP sizes (default: the released ones; the DiT and VAE
    sizes are read from their files). `dit_file` replaces the folder's DiT (any format
    `dit_files.load_dit_with` reads); `loras` are merged into it at load (or, with `lora_merge`
    False, left in `pipeline.pending_loras` for `lora.attach_loras`); `fp8_linears` keeps an fp8
    checkpoint's block linears as stored (fast mode on FP8 hardware).

    DiT in `dtype` (norms/modulation/head stay float32), VAE float32, umT5 bfloat16 and CLIP float16
    on a GPU (official), everything float32 on the CPU. With offload="encoders" umT5 and CLIP wait
    on the CPU and visit the GPU only to encode.
    """
    import torch

    from scail.animate import weights as files
    from scail.animate.clip import CLIPImageEncoder, load_clip
    from scail.animate.pipeline import AnimatePipeline
    from scail.animate.t5 import TextEncoder, load_t5
    from scail.animate.tokenizer import UMT5Tokenizer
    from scail.animate.vae import load_vae

    device = torch.device(device)
    arch = architectures or (weights.arch(model) if weights is not None else files.Architectures.released(model))
    on_gpu = device.type != "cpu"
    dtype = dtype or (torch.bfloat16 if on_gpu else torch.float32)
    t5_dtype, clip_dtype = (torch.bfloat16, torch.float16) if on_gpu else (torch.float32, torch.float32)
    encoders_at = torch.device("cpu") if offload != "none" else device
    # the encoders first: their weights get their pinned CPU home on threads (`Visitor`) while the DiT
    # loads, instead of during the first clip's encoding (~7 s of a cold start for umT5)
    pinning: list[Visitor] = []
    if weights is not None:
        log.info("building %s with random weights (DiT %s on %s)", model, dtype, device)
        vae = weights.vae(torch.float32, device, model)
        t5 = weights.t5(t5_dtype, encoders_at, model)
        clip = weights.clip(clip_dtype, encoders_at, model)
        tokenizer = weights.tokenizer(model)
        pinning = _pin_encoders(t5, clip, device, offload)
        with _waiting_on_failure(pinning):
            loaded, block_offload = load_scail_dit(weights, arch.dit.num_heads, device, dtype, offload,
                                                   compile_dit, loras, lora_merge, fp8_linears, model)
    else:
        paths = files.resolve(root, need_dit=dit_file is None, model=model)  # raises with the download command
        log.info("loading %s from %s (DiT %s on %s)", model, root, dtype, device)
        # the files stream into the page cache on threads while the loaders copy what is there
        fetch = _prefetch(dit_file or paths.dit, paths.vae, paths.t5, paths.clip)
        try:
            vae = load_vae(paths.vae, dtype=torch.float32, device=device)
            t5 = load_t5(paths.t5, dtype=t5_dtype, device=encoders_at, config=arch.t5)
            clip = load_clip(paths.clip, dtype=clip_dtype, device=encoders_at, config=arch.clip)
            pinning = _pin_encoders(t5, clip, device, offload)
            with _waiting_on_failure(pinning):
                loaded, block_offload = load_scail_dit(dit_file or paths.dit, arch.dit.num_heads, device, dtype,
                                                       offload, compile_dit, loras, lora_merge, fp8_linears, model)
                check_dit_kind(loaded.dit, model, dit_file or paths.dit)
        finally:
            if fetch is not None:
                fetch.stop()
        tokenizer = UMT5Tokenizer.from_dir(paths.tokenizer, text_len=arch.t5.text_len)
    pipeline = AnimatePipeline(
        dit=loaded.dit,
        vae=vae,
        text_encoder=TextEncoder(t5, tokenizer),
        image_encoder=CLIPImageEncoder(clip),
        device=device,
        offload="encoders" if offload != "none" else "none",
        label=f"{model} (random weights, seed {weights.seed})" if weights is not None else f"{model} ({root})",
        vae_tile=vae_tile,
    )
    pipeline.block_offload = block_offload
    pipeline.pending_loras = [] if loaded.merged else loaded.loras
    pipeline.adopt_visitors(pinning)
    return pipeline


def _pin_encoders(t5: torch.nn.Module, clip: torch.nn.Module, device: torch.device, offload: str) -> list[Visitor]:
    """The encoders' `Visitor`s with their weights being pinned on threads (none where nothing is
    pinned: the CPU, or encoders that stay on the GPU)."""
    from scail.animate.offload import Visitor

    if device.type != "cuda" or offload == "none":
        return []
    visitors = [Visitor(t5, device), Visitor(clip, device)]
    for visitor in visitors:
        visitor.settle_in_background()
    return visitors


@contextmanager
def _waiting_on_failure(pinning: Sequence[Visitor]) -> Iterator[None]:
    """On an error, wait for the pinning threads before it propagates: the memory they hold goes with
    the failed build, not some time later."""
    try:
        yield
    except BaseException:
        for visitor in pinning:
            with suppress(Exception):
                visitor.wait_settled()
        raise


def _prefetch(dit: Path, *others: Path) -> Prefetch | None:
    """Start `prefetch.Prefetch` on the files the loaders read (None when off: SCAIL_PREFETCH=0),
    the DiT last as the loaders take it. A DiT folder is resolved to its file; one that does not
    resolve is left to the loader's own error."""
    from scail.animate import prefetch
    from scail.animate.dit_loader import resolve_dit_file
    from scail.errors import CheckpointError

    if not prefetch.enabled():
        return None
    try:
        dit = resolve_dit_file(dit)
    except CheckpointError:
        return prefetch.Prefetch(others)
    return prefetch.Prefetch([*others, dit])


def check_dit_kind(dit: object, model: str, source: Path) -> None:
    """A CheckpointError when the DiT file holds the other model (SCAIL-Preview vs SCAIL-2)."""
    from scail.animate.dit2 import SCAIL2DiT
    from scail.errors import CheckpointError

    is2 = isinstance(dit, SCAIL2DiT)
    if is2 != model.startswith("scail-2"):
        found, other = ("SCAIL-2", "scail-2-14b") if is2 else ("SCAIL-Preview", "scail-preview-14b")
        raise CheckpointError(
            f"{source}: holds a {found} DiT but animate.model is {model}; set animate.model={other} or "
            "point animate.weights_dir at the right download"
        )


def resolve_vae_decode_dtype(mode: str, fast: bool, device: torch.device) -> torch.dtype:
    """AnimateConfig.vae_decode_dtype -> the decoder's dtype ("auto": bfloat16 in fast mode on a GPU)."""
    import torch

    if mode == "auto":
        return torch.bfloat16 if fast and device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[mode]


def resolve_compile(mode: str, device: torch.device) -> bool:
    """AnimateConfig.compile -> whether to torch.compile the DiT blocks ("auto": on CUDA only)."""
    return mode == "on" or (mode == "auto" and device.type == "cuda")


def build_pipeline(config: AnimateConfig, weights: RandomWeights | None = None) -> AnimatePipeline:
    """The pipeline `config.model` names, on `config.device`; `weights`: random networks in place of
    the weights folder's files (benchmarks and tests; a 14B model only, on one device)."""
    device = resolve_device(config.device, what="animate device")
    vae_tile = resolve_vae_tile(config.vae_tiling, device)
    from scail.animate.fast import fp8_supported
    from scail.animate.lora import LoraSpec, apply_loras, attach_loras, load_loras

    loras = [LoraSpec(entry.path, entry.strength) for entry in config.loras]
    if config.model in ("tiny-random", "tiny-random-scail-2"):
        pipeline = build_tiny_random(device, vae_tile=vae_tile, scail2=config.model == "tiny-random-scail-2")
        if loras and config.lora_merge:
            apply_loras(pipeline.dit, loras)
        elif loras:
            pipeline.pending_loras = load_loras(loras, {k: tuple(v.shape) for k, v in pipeline.dit.state_dict().items()})
    elif config.model in ("scail-preview-14b", "scail-2-14b"):
        pipeline = build_scail_preview(
            weights_dir(config), device, resolve_dtype(config.dtype, device), config.offload,
            vae_tile=vae_tile, compile_dit=resolve_compile(config.compile, device), dit_file=config.dit_file,
            loras=loras, lora_merge=config.lora_merge, fp8_linears=config.fast and fp8_supported(device),
            model=config.model, weights=weights,
        )
    else:
        raise ValueError(f"unknown model {config.model!r}")
    pipeline.vae_tile_auto = config.vae_tiling == "auto"
    pipeline.vae.set_decode_dtype(resolve_vae_decode_dtype(config.vae_decode_dtype, config.fast, device))
    if loras:  # the label goes to the manifest and the sample's sidecar
        pipeline.label += " + " + ", ".join(f"{spec.path.name}@{spec.strength:g}" for spec in loras)
    if config.fast:
        from scail.animate.fast import apply_fast_mode

        pipeline = apply_fast_mode(pipeline, config.fast_cache_threshold, config.fast_uncond_every)
    else:  # FP8 attention is a process-wide switch: an earlier fast pipeline must not leave it on
        from scail.animate import attention

        attention.set_fp8(False)
    if pipeline.pending_loras:  # run-time LoRAs hook the linears fast mode may have swapped for FP8 ones
        attach_loras(pipeline.dit, pipeline.pending_loras)
        pipeline.pending_loras = []
    if config.parallel.gpus > 1 and weights is not None:
        raise ValueError("random weights run on one device: the other ranks of animate.parallel load files")
    if config.parallel.gpus > 1:  # the other ranks start here and load their DiT (build_dit_models)
        from scail.animate.launch import ParallelGroup

        pipeline.parallel = ParallelGroup(config, pipeline.dit, device)
    return pipeline


def build_dit_models(config: AnimateConfig, device: torch.device) -> DiTModels:
    """The DiT side of `build_pipeline(config)` alone, on `device`, the same network (dit file, LoRAs,
    fast mode): what the other ranks of a sequence-parallel group load (no VAE, umT5 or CLIP)."""
    from scail.animate import weights
    from scail.animate.fast import fp8_supported
    from scail.animate.lora import LoraSpec, apply_loras, attach_loras, load_loras
    from scail.animate.pipeline import DiTModels

    loras = [LoraSpec(entry.path, entry.strength) for entry in config.loras]
    pending = []
    if config.model in ("tiny-random", "tiny-random-scail-2"):
        models = DiTModels(tiny_random_dit(device, scail2=config.model == "tiny-random-scail-2"), device)
        if loras and config.lora_merge:
            apply_loras(models.dit, loras)
        elif loras:
            pending = load_loras(loras, {k: tuple(v.shape) for k, v in models.dit.state_dict().items()})
    else:
        paths = weights.resolve(weights_dir(config), need_dit=config.dit_file is None, model=config.model)
        loaded, streamer = load_scail_dit(
            config.dit_file or paths.dit, weights.Architectures.released(config.model).dit.num_heads, device,
            resolve_dtype(config.dtype, device), config.offload, resolve_compile(config.compile, device),
            loras, config.lora_merge, config.fast and fp8_supported(device))
        models = DiTModels(loaded.dit, device, block_offload=streamer)
        pending = [] if loaded.merged else loaded.loras
    if config.fast:
        from scail.animate.fast import StepCache, enable_fast

        enable_fast(models.dit)
        models.step_cache = StepCache(models.dit, config.fast_cache_threshold)
        models.uncond_every = config.fast_uncond_every
    else:
        from scail.animate import attention

        attention.set_fp8(False)
    if pending:
        attach_loras(models.dit, pending)
    return models

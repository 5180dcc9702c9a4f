"""LoRA files for the SCAIL DiT: read them in the layouts users have, map every key to a DiT
parameter, and merge them into the weights at load (default) or apply them at run time.

Layouts understood (each is detected per key, so a file may mix them):

* ComfyUI / kijai / lightx2v (`diffusion_model.<wan module>.lora_down.weight` / `.lora_up.weight` /
  `.alpha`, plus `.diff` full weight deltas, `.diff_b` bias deltas and `.diff_m` deltas of a block's
  adaLN `modulation` table, as the lightx2v step-distill LoRAs carry them). The official SCAIL wan
  branch's `--lora_path` (`wan/utils/lora.py` there) reads exactly this layout, with or without the
  `diffusion_model.` prefix.
* diffusers / PEFT (`lora_A` / `lora_B`, optionally with a PEFT adapter name such as `.default`, and
  `lora_B.bias` for bias deltas) under a `transformer.`, `base_model.model.`, `diffusion_model.` or no
  prefix, with either the wan module names (`blocks.0.self_attn.q`) or the diffusers
  `WanTransformer3DModel` names (`blocks.0.attn1.to_q`, `condition_embedder.*`, `proj_out`, ...).
* kohya / musubi-tuner (`lora_unet_blocks_0_self_attn_q.lora_down.weight`, `.alpha`).
* SAT, as zai-org releases SCAIL-2's own LoRAs (`bias-aware-dpo-lora.pt`, `relighting-lora.pt`: a
  DeepSpeed `module` dict): `model.diffusion_model.transformer.layers.<i>.<SAT module>.lora_layer[.<j>]
  .down.weight` / `.up.weight` / `.diff_b`, where `attention.query_key_value` j = 0, 1, 2 is
  `self_attn.q/k/v`, `attention.dense` `self_attn.o`, `cross_attention.query` / `.key_value` j = 0, 1 /
  `.dense` `cross_attn.q` / `k, v` / `o`, `mlp.dense_h_to_4h` / `dense_4h_to_h` `ffn.0` / `ffn.2`
  (the wan branch's `convert_lora.py` map; no alpha, so scale 1).

The update of a weight W (any shape; a conv's LoRA factors are flattened) is
`W + strength * (alpha / rank) * up @ down` for a low-rank pair (`alpha / rank` is 1 when the file has
no `.alpha`, as in the official loader, which ignores alpha) and `W + strength * diff` for full deltas.
Merging is done in float32 and the result cast to the parameter's dtype.

Every key of a file is either applied or reported: keys that name no DiT parameter, whose shapes do
not fit, or of an unsupported kind (DoRA, LoHa, LoKr, LoCon mid) are listed in one warning; a file
none of whose keys applies is a `CheckpointError` naming the file (a LoRA for another model).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from scail.errors import CheckpointError, InputError, expand_user

if TYPE_CHECKING:
    import torch
    from torch import nn

    from scail.animate.dit import DiTConfig

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# What the user asks for
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA to load: a file and its strength (1.0 = as trained)."""

    path: Path
    strength: float = 1.0

    @classmethod
    def parse(cls, text: str) -> LoraSpec:
        """`PATH[:STRENGTH]` -> LoraSpec. A colon followed by something that is not a number stays part
        of the path (so `C:\\loras\\x.safetensors` and names with colons work)."""
        path, sep, tail = text.rpartition(":")
        try:
            strength = float(tail) if sep else 1.0
        except ValueError:
            strength = 1.0
            path = text
        if not sep:
            path = text
        if not path.strip():
            raise InputError(f"--lora {text!r}: give a LoRA file, as PATH or PATH:STRENGTH (e.g. lora.safetensors:0.8)")
        if not math.isfinite(strength):
            raise InputError(f"--lora {text!r}: strength must be a finite number")
        return cls(expand_user(path, "--lora"), strength)


# --------------------------------------------------------------------------------------------------
# Key names
# --------------------------------------------------------------------------------------------------

# prefixes in front of the module name, stripped in this order (several may stack)
_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.", "model.")
# kohya / musubi / lycoris: the module path with "_" for ".", after this prefix
_UNDERSCORE_PREFIXES = ("lora_unet_", "lycoris_", "lora_transformer_")

# diffusers WanTransformer3DModel module names -> wan names (whole-name regex, applied once)
_DIFFUSERS_TO_WAN: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), r)
    for p, r in [
        (r"blocks\.(\d+)\.attn1\.to_q", r"blocks.\1.self_attn.q"),
        (r"blocks\.(\d+)\.attn1\.to_k", r"blocks.\1.self_attn.k"),
        (r"blocks\.(\d+)\.attn1\.to_v", r"blocks.\1.self_attn.v"),
        (r"blocks\.(\d+)\.attn1\.to_out\.0", r"blocks.\1.self_attn.o"),
        (r"blocks\.(\d+)\.attn1\.norm_q", r"blocks.\1.self_attn.norm_q"),
        (r"blocks\.(\d+)\.attn1\.norm_k", r"blocks.\1.self_attn.norm_k"),
        (r"blocks\.(\d+)\.attn2\.to_q", r"blocks.\1.cross_attn.q"),
        (r"blocks\.(\d+)\.attn2\.to_k", r"blocks.\1.cross_attn.k"),
        (r"blocks\.(\d+)\.attn2\.to_v", r"blocks.\1.cross_attn.v"),
        (r"blocks\.(\d+)\.attn2\.to_out\.0", r"blocks.\1.cross_attn.o"),
        (r"blocks\.(\d+)\.attn2\.add_k_proj", r"blocks.\1.cross_attn.k_img"),
        (r"blocks\.(\d+)\.attn2\.add_v_proj", r"blocks.\1.cross_attn.v_img"),
        (r"blocks\.(\d+)\.attn2\.norm_q", r"blocks.\1.cross_attn.norm_q"),
        (r"blocks\.(\d+)\.attn2\.norm_k", r"blocks.\1.cross_attn.norm_k"),
        (r"blocks\.(\d+)\.attn2\.norm_added_k", r"blocks.\1.cross_attn.norm_k_img"),
        (r"blocks\.(\d+)\.ffn\.net\.0\.proj", r"blocks.\1.ffn.0"),
        (r"blocks\.(\d+)\.ffn\.net\.2", r"blocks.\1.ffn.2"),
        (r"blocks\.(\d+)\.norm2", r"blocks.\1.norm3"),  # diffusers' norm2 is the cross-attention norm
        (r"blocks\.(\d+)\.scale_shift_table", r"blocks.\1.modulation"),
        (r"condition_embedder\.time_embedder\.linear_1", "time_embedding.0"),
        (r"condition_embedder\.time_embedder\.linear_2", "time_embedding.2"),
        (r"condition_embedder\.time_proj", "time_projection.1"),
        (r"condition_embedder\.text_embedder\.linear_1", "text_embedding.0"),
        (r"condition_embedder\.text_embedder\.linear_2", "text_embedding.2"),
        (r"condition_embedder\.image_embedder\.norm1", "img_emb.proj.0"),
        (r"condition_embedder\.image_embedder\.ff\.net\.0\.proj", "img_emb.proj.1"),
        (r"condition_embedder\.image_embedder\.ff\.net\.2", "img_emb.proj.3"),
        (r"condition_embedder\.image_embedder\.norm2", "img_emb.proj.4"),
        (r"proj_out", "head.head"),
        (r"scale_shift_table", "head.modulation"),
    ]
]

# <module>.<kind>[.<peft adapter>].<weight|bias>
_PAIR = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_down|lora_up|lora_A|lora_B)(?:\.(?P<adapter>[A-Za-z0-9_-]+))?"
                   r"\.(?P<param>weight|bias)$")
_SUFFIX_KINDS: tuple[tuple[str, str], ...] = (
    (".alpha", "alpha"),
    (".diff_b", "diff_b"),
    (".diff_m", "diff_m"),
    (".diff", "diff"),
)
_UNSUPPORTED = re.compile(r"\.(dora_scale|lora_mid\.weight|hada_\w+|lokr_\w+|[ab][12]\.weight|w_norm|b_norm|set_weight)$")

Kind = Literal["down", "up", "alpha", "diff", "diff_b", "diff_m", "bias_up"]
Layout = Literal["comfyui", "diffusers", "kohya", "sat"]

# SAT (SwissArmyTransformer) LoRA names of SCAIL-2's released LoRAs -> wan modules
_SAT = re.compile(r"^(?:module\.)?model\.diffusion_model\.transformer\.layers\.(?P<block>\d+)\.(?P<sat>[a-z_.0-9]+?)"
                  r"\.lora_layer(?:\.(?P<part>\d+))?\.(?P<kind>down\.weight|up\.weight|diff_b)$")
_SAT_MODULES: dict[tuple[str, str | None], str] = {
    ("attention.query_key_value", "0"): "self_attn.q",
    ("attention.query_key_value", "1"): "self_attn.k",
    ("attention.query_key_value", "2"): "self_attn.v",
    ("attention.dense", None): "self_attn.o",
    ("cross_attention.query", None): "cross_attn.q",
    ("cross_attention.key_value", "0"): "cross_attn.k",
    ("cross_attention.key_value", "1"): "cross_attn.v",
    ("cross_attention.dense", None): "cross_attn.o",
    ("mlp.dense_h_to_4h", None): "ffn.0",
    ("mlp.dense_4h_to_h", None): "ffn.2",
}
_SAT_KINDS: dict[str, Kind] = {"down.weight": "down", "up.weight": "up", "diff_b": "diff_b"}


def _strip_prefixes(key: str) -> tuple[str, bool]:
    """The key without its container prefixes; True when it used the underscore (kohya) naming."""
    for prefix in _UNDERSCORE_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):], True
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
                break
    return key, False


@dataclass(frozen=True)
class _Key:
    module: str  # wan module (or parameter) name as written in the file, before translation
    kind: Kind
    layout: Layout


def _parse_key(key: str) -> _Key | None:
    """Split one file key into (module, kind, layout); None when the key is no LoRA key we know."""
    sat = _SAT.match(key)
    if sat is not None:
        wan = _SAT_MODULES.get((sat["sat"], sat["part"]))
        if wan is None:
            return None
        return _Key(f"blocks.{sat['block']}.{wan}", _SAT_KINDS[sat["kind"]], "sat")
    name, underscored = _strip_prefixes(key)
    match = _PAIR.match(name)
    if match is not None:
        kind = match["kind"]
        if match["param"] == "bias":
            if kind != "lora_B":
                return None
            return _Key(match["module"], "bias_up", "diffusers")
        part: Kind = "down" if kind in ("lora_down", "lora_A") else "up"
        layout: Layout = "kohya" if underscored else ("comfyui" if kind in ("lora_down", "lora_up") else "diffusers")
        return _Key(match["module"], part, layout)
    for suffix, what in _SUFFIX_KINDS:
        if name.endswith(suffix):
            return _Key(name[: -len(suffix)], what, "kohya" if underscored else "comfyui")  # type: ignore[arg-type]
    return None


class _Names:
    """Resolves file module names to DiT parameter names, given the DiT's state-dict shapes."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        self.shapes = shapes
        modules = {k.rsplit(".", 1)[0] for k in shapes if k.endswith((".weight", ".bias"))}
        params = {k for k in shapes if not k.endswith((".weight", ".bias"))}  # e.g. blocks.0.modulation
        self.by_underscore = {m.replace(".", "_"): m for m in modules | params}

    def module(self, name: str, underscored: bool) -> str:
        if underscored:
            return self.by_underscore.get(name, name)
        for pattern, repl in _DIFFUSERS_TO_WAN:
            if pattern.fullmatch(name):
                return pattern.sub(repl, name)
        return name

    def weight_target(self, module: str) -> str | None:
        """The parameter a weight delta of `module` changes: `<module>.weight`, or `module` itself
        when it is a bare parameter (the adaLN `modulation` tables)."""
        if f"{module}.weight" in self.shapes:
            return f"{module}.weight"
        if module in self.shapes:
            return module
        return None

    def bias_target(self, module: str) -> str | None:
        return f"{module}.bias" if f"{module}.bias" in self.shapes else None

    def modulation_target(self, module: str) -> str | None:
        """`.diff_m` is keyed by the block (`blocks.3.diff_m`) or the head (`head.diff_m`)."""
        target = f"{module}.modulation"
        return target if target in self.shapes else None


# --------------------------------------------------------------------------------------------------
# Deltas
# --------------------------------------------------------------------------------------------------


@dataclass
class Delta:
    """One change to one DiT parameter: `scale * up @ down` (low rank) or a full `diff`.

    Tensors stay as read from the file (memory-mapped, their own dtype) until `materialize`.
    """

    target: str
    keys: tuple[str, ...]
    up: torch.Tensor | None = None
    down: torch.Tensor | None = None
    scale: float = 1.0
    diff: torch.Tensor | None = None

    @property
    def low_rank(self) -> bool:
        return self.up is not None

    def materialize(self, shape: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
        """The full float32 delta, reshaped to the parameter's `shape` (a conv's factors are flat)."""
        import torch

        if self.up is not None and self.down is not None:
            up = self.up.to(device=device, dtype=torch.float32).flatten(1)  # (out, r)
            down = self.down.to(device=device, dtype=torch.float32).flatten(1)  # (r, in * kernel)
            return (up @ down).mul_(self.scale).reshape(tuple(shape))
        assert self.diff is not None
        return self.diff.to(device=device, dtype=torch.float32).reshape(tuple(shape))

    def fits(self, shape: Sequence[int]) -> bool:
        numel = math.prod(shape)
        if self.up is not None and self.down is not None:
            return (self.up.ndim >= 2 and self.down.ndim >= 2 and self.up.shape[0] == shape[0]
                    and self.up.flatten(1).shape[1] == self.down.shape[0]
                    and self.up.shape[0] * self.down.flatten(1).shape[1] == numel)
        return self.diff is not None and tuple(self.diff.shape) in (tuple(shape), (numel,))


@dataclass
class LoraFile:
    """A LoRA file mapped onto the DiT: the deltas it applies and the keys it could not."""

    path: Path
    layouts: tuple[str, ...]
    deltas: list[Delta]
    unused: dict[str, str] = field(default_factory=dict)
    """file key -> why it is not applied."""
    num_keys: int = 0

    @property
    def rank(self) -> int | None:
        ranks = {int(d.down.shape[0]) for d in self.deltas if d.down is not None}
        return max(ranks) if ranks else None

    def summary(self) -> str:
        lr = sum(1 for d in self.deltas if d.low_rank)
        return (f"{self.path.name}: {len(self.deltas)} parameters ({lr} low-rank"
                f"{f', rank {self.rank}' if self.rank else ''}, {len(self.deltas) - lr} full deltas), "
                f"layout {'+'.join(self.layouts)}, {self.num_keys - len(self.unused)} of {self.num_keys} keys applied")


def read_lora(path: str | Path, shapes: Mapping[str, tuple[int, ...]]) -> LoraFile:
    """Read the LoRA file at `path` and map its keys onto a DiT with these state-dict `shapes`.

    Raises CheckpointError (naming the file) when the file cannot be read or none of its keys applies.
    """
    from scail.animate.checkpoint import read_tensors

    path = expand_user(path, "LoRA file")
    if not path.is_file():
        raise InputError(f"{path}: LoRA file not found; check the --lora / animate.loras path")
    return map_lora(read_tensors(path), shapes, path)


def map_lora(tensors: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple[int, ...]], path: Path) -> LoraFile:
    """`read_lora` on tensors already read (tests, benchmarks)."""
    names = _Names(shapes)
    unused: dict[str, str] = {}
    layouts: set[str] = set()
    # per target: the file keys of each part
    pairs: dict[str, dict[str, str]] = {}  # module -> {"down": key, "up": key, "alpha": key}
    deltas: list[Delta] = []

    unsupported_modules: set[str] = set()  # a DoRA/LoCon module's plain pair alone would be wrong
    for key in tensors:
        bad = _UNSUPPORTED.search(key)
        if bad:
            unused[key] = "unsupported LoRA kind (DoRA/LoHa/LoKr/LoCon); only plain LoRA and diffs are applied"
            name, underscored = _strip_prefixes(key[: bad.start()])
            unsupported_modules.add(names.module(name, underscored))
            continue
        parsed = _parse_key(key)
        if parsed is None:
            unused[key] = "not a LoRA key"
            continue
        underscored = parsed.layout == "kohya"
        module = names.module(parsed.module, underscored)
        layouts.add(parsed.layout)
        tensor = tensors[key]
        if parsed.kind in ("down", "up", "alpha"):
            pairs.setdefault(module, {})[parsed.kind] = key
            continue
        if parsed.kind == "diff":
            target = names.weight_target(module)
        elif parsed.kind == "diff_m":
            target = names.modulation_target(module)
        else:  # diff_b, bias_up
            target = names.bias_target(module)
        if target is None:
            unused[key] = f"no DiT parameter for {module!r}"
            continue
        delta = Delta(target, (key,), diff=tensor)
        if not delta.fits(shapes[target]):
            unused[key] = f"shape {list(tensor.shape)} does not fit {target} {list(shapes[target])}"
            continue
        deltas.append(delta)

    for module, parts in pairs.items():
        keys = tuple(parts.values())
        if module in unsupported_modules:
            for k in keys:
                unused[k] = f"{module}: part of a DoRA/LoCon/LoHa/LoKr module (unsupported)"
            continue
        if "down" not in parts or "up" not in parts:
            for k in keys:
                unused[k] = f"{module}: {'lora_up' if 'down' in parts else 'lora_down'} missing"
            continue
        target = names.weight_target(module)
        if target is None:
            for k in keys:
                unused[k] = f"no DiT parameter for {module!r}"
            continue
        up, down = tensors[parts["up"]], tensors[parts["down"]]
        rank = int(down.shape[0])
        scale = 1.0
        if "alpha" in parts:
            scale = float(tensors[parts["alpha"]].float().item()) / rank
        delta = Delta(target, keys, up=up, down=down, scale=scale)
        if not delta.fits(shapes[target]):
            for k in keys:
                unused[k] = (f"shapes up {list(up.shape)} / down {list(down.shape)} do not fit {target} "
                             f"{list(shapes[target])}")
            continue
        deltas.append(delta)

    lora = LoraFile(path, tuple(sorted(layouts)), sorted(deltas, key=lambda d: d.target), unused, len(tensors))
    if not deltas:
        example = next(iter(unused.items()), ("(no keys)", "empty file"))
        raise CheckpointError(
            f"{path}: none of its {len(tensors)} keys applies to the SCAIL DiT (e.g. {example[0]!r}: {example[1]}); "
            "is this a LoRA for Wan2.1-14B / SCAIL?"
        )
    if unused:
        shown = "; ".join(f"{k} ({why})" for k, why in list(unused.items())[:5])
        log.warning("LoRA %s: %d of %d keys not applied: %s%s", path.name, len(unused), len(tensors), shown,
                    " ..." if len(unused) > 5 else "")
    log.info("LoRA %s", lora.summary())
    return lora


# --------------------------------------------------------------------------------------------------
# Applying
# --------------------------------------------------------------------------------------------------

LoadedLoras = Sequence[tuple[LoraFile, float]]
"""(mapped file, strength) pairs, in the order given."""


def load_loras(specs: Iterable[LoraSpec], shapes: Mapping[str, tuple[int, ...]]) -> list[tuple[LoraFile, float]]:
    """Read every LoRA of `specs` against the DiT `shapes`."""
    return [(read_lora(spec.path, shapes), spec.strength) for spec in specs]


def merge_loras(
    state: Mapping[str, torch.Tensor],
    loras: LoadedLoras,
    dtype_of: Callable[[str], torch.dtype],
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """The merged parameters: for every parameter some LoRA changes, `W + sum(strength * delta)`
    computed in float32 on `device` and cast to `dtype_of(name)`. Parameters no LoRA touches are not
    in the result (the caller keeps its own tensors), so peak memory is one parameter in float32.
    """
    import torch

    by_target: dict[str, list[tuple[Delta, float]]] = {}
    for lora, strength in loras:
        for delta in lora.deltas:
            by_target.setdefault(delta.target, []).append((delta, strength))
    out: dict[str, torch.Tensor] = {}
    for target, parts in by_target.items():
        base = state[target]
        if all(s == 0.0 for _, s in parts):
            continue  # strength 0 leaves the weight bit for bit as loaded
        w = base.to(device=device, dtype=torch.float32, copy=True)
        for delta, strength in parts:
            if strength != 0.0:
                w.add_(delta.materialize(w.shape, device), alpha=strength)
        out[target] = w.to(dtype_of(target))
    return out


class _RuntimeLoRA:
    """Forward hook on a linear layer: adds `strength * scale * up(down(x))` (and bias deltas)."""

    def __init__(self, parts: list[tuple[Delta, float]], bias: list[tuple[Delta, float]]) -> None:
        self.parts, self.bias = parts, bias

    def __call__(self, module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        x = args[0]
        for delta, strength in self.parts:
            if delta.up is not None and delta.down is not None:
                down = delta.down.to(device=x.device, dtype=x.dtype)
                up = delta.up.to(device=x.device, dtype=x.dtype)
                out = out + F.linear(F.linear(x, down), up) * (strength * delta.scale)
            else:
                assert delta.diff is not None
                out = out + F.linear(x, delta.diff.to(device=x.device, dtype=x.dtype)) * strength
        for delta, strength in self.bias:
            assert delta.diff is not None
            out = out + delta.diff.to(device=x.device, dtype=out.dtype) * strength
        return out


def attach_loras(dit: nn.Module, loras: LoadedLoras) -> list[object]:
    """Apply `loras` at run time instead of merging: each changed linear layer of `dit` (an
    `nn.Linear` or fast mode's `FP8Linear`) gets a forward hook adding its low-rank update, so the
    base weights stay as loaded (e.g. FP8) and the LoRA runs at the activations' precision. Deltas of
    other parameters (norm weights, modulation tables, the embeddings and the head: under 2 % of the
    14B weights) are merged in place. Returns the hook handles (`.remove()` undoes the hooks, not the merges).
    """
    import torch

    linear_parts: dict[str, list[tuple[Delta, float]]] = {}
    bias_parts: dict[str, list[tuple[Delta, float]]] = {}
    merged: list[tuple[Delta, float]] = []
    modules = dict(dit.named_modules())
    for lora, strength in loras:
        for delta in lora.deltas:
            owner, _, param = delta.target.rpartition(".")
            module = modules.get(owner)
            # only the blocks' linears are always called as modules (the head calls F.linear on its weight)
            is_linear = (owner.startswith("blocks.") and module is not None and hasattr(module, "in_features")
                         and hasattr(module, "out_features"))
            if is_linear and param == "weight":
                linear_parts.setdefault(owner, []).append((delta, strength))
            elif is_linear and param == "bias":
                bias_parts.setdefault(owner, []).append((delta, strength))
            else:
                merged.append((delta, strength))
    handles: list[object] = []
    for owner in sorted(set(linear_parts) | set(bias_parts)):
        hook = _RuntimeLoRA(linear_parts.get(owner, []), bias_parts.get(owner, []))
        handles.append(modules[owner].register_forward_hook(hook))
    params = dict(dit.named_parameters())
    with torch.no_grad():
        for delta, strength in merged:
            p = params[delta.target]
            if strength != 0.0:
                p.copy_((p.float() + strength * delta.materialize(p.shape, p.device)).to(p.dtype))
    return handles


def dit_shapes(keys: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """{name: shape} as tuples (from a state dict's tensors or a keys_14B.json listing)."""
    return {k: tuple(getattr(v, "shape", v)) for k, v in keys.items()}


def random_lora(
    shapes: Mapping[str, tuple[int, ...]],
    rank: int = 64,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    std: float = 0.01,
) -> dict[str, torch.Tensor]:
    """A random LoRA in the lightx2v / kijai layout for a DiT with these state-dict `shapes`
    (benchmarks and tests): `diffusion_model.<module>.lora_down/lora_up/alpha` + `.diff_b` on every
    linear and patch-embedding conv, `.diff` (+ `.diff_b`) on norms, `.diff_m` on the modulation tables.
    With `device="meta"` only the names and shapes exist (alpha stays a real scalar).
    """
    import torch

    dtype = dtype or torch.bfloat16
    meta = torch.device(device).type == "meta"

    def rand(*shape: int) -> torch.Tensor:
        if meta:
            return torch.empty(shape, device="meta", dtype=dtype)
        return (torch.randn(shape, generator=generator) * std).to(device=device, dtype=dtype)

    out: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        module, _, param = key.rpartition(".")
        if key.endswith(".modulation"):
            out[f"diffusion_model.{key.removesuffix('.modulation')}.diff_m"] = rand(*shape)
        elif param == "weight" and len(shape) >= 2:  # linear or conv: low-rank pair
            out[f"diffusion_model.{module}.lora_down.weight"] = rand(rank, *shape[1:])
            out[f"diffusion_model.{module}.lora_up.weight"] = rand(shape[0], rank, *([1] * (len(shape) - 2)))
            out[f"diffusion_model.{module}.alpha"] = torch.tensor(float(rank))
        elif param == "weight":
            out[f"diffusion_model.{module}.diff"] = rand(*shape)
        elif param == "bias":
            out[f"diffusion_model.{module}.diff_b"] = rand(*shape)
    return out


def apply_loras(dit: nn.Module, specs: Sequence[LoraSpec], merge: bool = True) -> list[tuple[LoraFile, float]]:
    """Apply LoRA files to a DiT already built (the tiny-random model; `dit_files.load_dit_with` merges
    while loading instead): merged into its parameters in float32 (`merge`), else as run-time hooks."""
    import torch

    state = dit.state_dict()
    loras = load_loras(specs, {k: tuple(v.shape) for k, v in state.items()})
    if not merge:
        attach_loras(dit, loras)
        return loras
    merged = merge_loras(state, loras, dtype_of=lambda k: state[k].dtype, device=next(dit.parameters()).device)
    params = dict(dit.named_parameters())
    with torch.no_grad():
        for key, value in merged.items():
            params[key].copy_(value)
    return loras


def write_random_lora(path: str | Path, config: DiTConfig, rank: int = 64, seed: int = 0) -> Path:
    """Write `random_lora` for a DiT of `config` (the real key names; bf16) to a safetensors file, for
    benchmarks that must load a LoRA through the real loader (14B at rank 64: ~0.7 GB, seconds)."""
    import torch
    from safetensors.torch import save_file

    from scail.animate.dit import DiT

    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in DiT(config).state_dict().items()}
    path = Path(path)
    save_file(random_lora(shapes, rank, torch.Generator().manual_seed(seed)), str(path))
    return path

"""Scaled dot-product attention for the DiT, with the kernel chosen once.

`attention(q, k, v)` is the single seam every attention in the DiT goes through (self-attention,
text and CLIP cross-attention). No masks are needed: SCAIL attends to every token (the official
code passes full key lengths and no context lengths).

Backends, probed once per process:
  * ``flash_attn_3`` (package ``flash_attn_interface``, built by scripts/build_flash_attn3.sh),
    ``flash_attn_4`` (package ``flash_attn.cute`` from the PyPI wheel ``flash-attn-4``, the CuTe-DSL
    kernels for Hopper and Blackwell: no build step, `pip install 'scail[fa4]'`) and ``flash_attn_2``
    (package ``flash_attn``): used on CUDA for float16/bfloat16 inputs when importable;
  * ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention``; PyTorch picks the kernel;
  * ``sdpa_cudnn`` / ``sdpa_flash`` / ``sdpa_efficient``: SDPA with that CUDA kernel tried first and
    the others (then the math kernel) as fallbacks;
  * ``sdpa_math``: SDPA's reference math kernel (slow; for checks).
``auto`` (the default) takes flash-attn 3, then 4 (on compute capability 9 or 10), then 2, when they apply, else ``sdpa_cudnn`` for
float16/bfloat16 CUDA tensors (the fastest SDPA kernel on Hopper; benchmarks/README.md), else ``sdpa``. A backend that does
not apply to the inputs (CPU tensors, float32 for flash-attn) falls back to ``sdpa`` and logs once.

FP8 self-attention (`set_fp8`, part of the opt-in fast mode): queries, keys and values of the long
attentions (at least `FP8_MIN_KEYS` keys, i.e. the self-attention, not the text/CLIP cross-attention)
are quantized to float8 e4m3 and multiplied by an FP8 flash-attention kernel on Hopper (`fp8_kernel`):
flash-attn 3's (one scale per (batch, head)) where it is built, else cuDNN's through the
`nvidia-cudnn-frontend` wheel (one scale per tensor; `scail.animate.attention_cudnn`, `pip install
'scail[fp8-attn]'`). Where neither is present the CUDA path stays bf16 (logged once: emulating FP8
there would cost quality and buy no speed); on the CPU the flash-attn 3 quantization runs through
SDPA, so the tests exercise the arithmetic.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

AttentionBackend = Literal[
    "auto", "flash_attn_3", "flash_attn_4", "flash_attn_2", "sdpa", "sdpa_cudnn", "sdpa_flash", "sdpa_efficient",
    "sdpa_math",
]
FLASH_MODULES = {"flash_attn_3": "flash_attn_interface", "flash_attn_4": "flash_attn.cute", "flash_attn_2": "flash_attn"}
"""The package each flash-attn backend imports."""
BACKENDS: tuple[str, ...] = get_args(AttentionBackend)

_selected: str = "auto"
_fp8: bool = False

FP8_MIN_KEYS = 1024
"""Attentions with at least this many keys run in FP8 when `set_fp8(True)` (the self-attention)."""
FP8_MAX = 448.0  # largest finite float8 e4m3fn value


@functools.cache
def _has_module(name: str) -> bool:
    """Whether a kernel package imports cleanly, probed once per process.

    A package that is installed but broken (e.g. built for another CUDA) counts as absent.
    """
    try:
        if importlib.util.find_spec(name) is None:
            return False
    except ModuleNotFoundError:  # a dotted name whose parent package is absent
        return False
    try:
        importlib.import_module(name)
    except Exception as exc:  # ImportError, OSError from a mismatched binary, ...
        log.warning("attention: %s is installed but does not import (%s); using torch SDPA", name, exc)
        return False
    return True


@functools.cache
def _has_fa2() -> bool:
    """flash-attn 2 proper: the flash-attn-4 wheel also installs a bare `flash_attn` namespace (for
    `flash_attn.cute`), which has no `flash_attn_func`."""
    if not _has_module("flash_attn"):
        return False
    import flash_attn

    return hasattr(flash_attn, "flash_attn_func")


def _has_backend(name: str) -> bool:
    return _has_fa2() if name == "flash_attn_2" else _has_module(FLASH_MODULES[name])


def available_backends() -> list[str]:
    """The backends importable in this process (the SDPA ones always are)."""
    names = ["auto", "sdpa", "sdpa_cudnn", "sdpa_flash", "sdpa_efficient", "sdpa_math"]
    for name in ("flash_attn_2", "flash_attn_4", "flash_attn_3"):
        if _has_backend(name):
            names.insert(1, name)
    return names


def set_backend(name: AttentionBackend) -> None:
    """Choose the attention kernel for this process (``auto`` restores the default choice)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name.startswith("flash_attn") and not _has_backend(name):
        hint = {"flash_attn_3": "scripts/build_flash_attn3.sh", "flash_attn_4": "pip install 'scail[fa4]'",
                "flash_attn_2": "pip install flash-attn"}[name]
        raise ValueError(f"attention backend {name!r} is not installed here ({hint})")
    global _selected
    _selected = name


def set_fp8(on: bool) -> None:
    """FP8 (e4m3) self-attention for this process (fast mode); see the module docstring."""
    global _fp8
    _fp8 = on


def fp8_enabled() -> bool:
    return _fp8


def fp8_active(device: torch.device) -> bool:
    """Whether long attentions on `device` actually run in FP8 now (switched on and a kernel there)."""
    return _fp8 and (device.type == "cpu" or fp8_kernel_available(device))


def fp8_kernel(device: torch.device) -> str | None:
    """The FP8 attention kernel for `device`: ``flash_attn_3`` (built, Hopper), else ``cudnn`` (the
    cuDNN frontend wheel, Hopper), else None."""
    import torch

    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] != 9:
        return None
    if _has_module("flash_attn_interface"):
        return "flash_attn_3"
    from scail.animate import attention_cudnn

    return "cudnn" if attention_cudnn.available(device) else None


def fp8_kernel_available(device: torch.device) -> bool:
    """Whether an FP8 attention kernel can run on `device` (`fp8_kernel`)."""
    return fp8_kernel(device) is not None


def describe(device: torch.device, dtype: torch.dtype) -> str:
    """The kernels the DiT's attention runs on `device` for `dtype` now, for sidecars and logs:
    e.g. ``sdpa_cudnn`` or ``sdpa_cudnn, fp8 self-attention: cudnn``."""
    import torch

    name = resolve_backend(torch.empty(0, device=device, dtype=dtype))
    if not _fp8:
        return name
    kernel = fp8_kernel(device) if device.type == "cuda" else "cpu emulation"
    return f"{name}, fp8 self-attention: {kernel or 'none (bf16)'}"


def quantize_heads(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L, N, Dh) -> (float8 e4m3 values (B, L, N, Dh), descale (B, N) float32), x ~= values * descale."""
    import torch

    amax = x.abs().amax(dim=(1, 3)).float().clamp_(min=1e-12)  # (B, N)
    descale = amax / FP8_MAX
    inv = (1.0 / descale)[:, None, :, None].to(x.dtype)
    return (x * inv).to(torch.float8_e4m3fn), descale


def get_backend() -> str:
    """The backend selected with `set_backend` (``auto`` unless changed)."""
    return _selected


def resolve_backend(q: torch.Tensor) -> str:
    """The backend `attention` will actually use for tensors like `q`."""
    import torch

    is_half_cuda = q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)
    name = _selected
    if name == "auto":
        if is_half_cuda and _has_module("flash_attn_interface"):
            return "flash_attn_3"
        if is_half_cuda and _fa4_supported(q.device):
            return "flash_attn_4"
        if is_half_cuda and _has_fa2():
            return "flash_attn_2"
        if is_half_cuda:
            # cuDNN first, the other SDPA kernels as fallbacks: the fastest at the DiT's shape
            # (L = 48,832, 40 heads of 128; benchmarks/README.md)
            return "sdpa_cudnn"
        return "sdpa"
    if name.startswith("flash_attn") and not is_half_cuda:
        _log_fallback_once(name, f"{q.device.type} {q.dtype}")
        return "sdpa"
    if name in ("sdpa_cudnn", "sdpa_flash", "sdpa_efficient") and not q.is_cuda:
        _log_fallback_once(name, q.device.type)
        return "sdpa"
    return name


def _fa4_supported(device: torch.device) -> bool:
    """flash-attn 4's forward kernels exist for Hopper (9.x) and Blackwell (10.x, 11.x)."""
    import torch

    return _has_module("flash_attn.cute") and torch.cuda.get_device_capability(device)[0] in (9, 10, 11)


@functools.cache
def _log_fallback_once(name: str, what: str) -> None:
    log.info("attention backend %s does not apply to %s tensors; using sdpa", name, what)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Full (unmasked, non-causal) multi-head attention with softmax scale 1/sqrt(Dh).

    Args:
        q: (B, Lq, N, Dh) queries.
        k: (B, Lk, N, Dh) keys.
        v: (B, Lk, N, Dh) values, same dtype as q and k.

    Returns:
        (B, Lq, N, Dh) in the dtype of q. Runs in the inputs' dtype (flash-attn needs float16 or
        bfloat16; float32 inputs therefore use SDPA).

    Under torch.compile the call is the opaque custom op ``scail::attention`` (see
    `register_custom_op`), so the compiled graph has no break and the selected kernel runs as is.
    """
    import torch

    if torch.compiler.is_compiling():
        return torch.ops.scail.attention(q, k, v)
    return _attention_eager(q, k, v)


def register_custom_op() -> None:
    """Register ``torch.ops.scail.attention`` (once per process); `scail.animate.dit` calls this."""
    import torch

    if _op_registered():
        return

    @torch.library.custom_op("scail::attention", mutates_args=(), schema="(Tensor q, Tensor k, Tensor v) -> Tensor")
    def _op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return _attention_eager(q, k, v).contiguous()

    @_op.register_fake
    def _fake(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return q.new_empty(q.shape)  # contiguous (B, Lq, N, Dh), as the real op returns


def _op_registered() -> bool:
    import torch

    try:
        torch.ops.scail.attention  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True


def _attention_eager(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    if _fp8 and k.shape[1] >= FP8_MIN_KEYS:
        out = _attention_fp8(q, k, v)
        if out is not None:
            return out
    backend = resolve_backend(q)
    if backend == "flash_attn_3":
        import flash_attn_interface

        out = flash_attn_interface.flash_attn_func(q, k, v)
        return out[0] if isinstance(out, tuple) else out
    if backend == "flash_attn_4":
        from flash_attn.cute import flash_attn_func

        out = flash_attn_func(q, k, v)  # (out, lse)
        return out[0] if isinstance(out, tuple) else out
    if backend == "flash_attn_2":
        import flash_attn

        return flash_attn.flash_attn_func(q, k, v)
    return _sdpa(q, k, v, backend)


FP8_KERNEL_HINT = "pip install 'scail[fp8-attn]' (cuDNN's FP8 kernel) or scripts/build_flash_attn3.sh"


@functools.cache
def _log_no_fp8_kernel() -> None:
    log.warning("FP8 attention needs a Hopper GPU and an FP8 kernel (%s); the attention stays bf16 "
                "(FP8 linears still apply)", FP8_KERNEL_HINT)


def _attention_fp8(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
    """FP8 attention, or None where it does not apply (the caller runs the usual backend).

    Keys and values are centred over the tokens first, which changes nothing in exact arithmetic
    (softmax ignores a per-query constant, and its weights sum to 1, so the values' mean is added
    back after) but leaves FP8 a smaller range to cover when the tokens share a large component.
    """

    kernel = fp8_kernel(q.device) if q.is_cuda else None
    if q.is_cuda and kernel is None:
        _log_no_fp8_kernel()
        return None
    if kernel == "cudnn":  # the same centring, fused with its per-tensor quantizing
        from scail.animate import attention_cudnn

        return attention_cudnn.attention_centred(q, k, v)
    k, v, v_mean = centre_kv(k, v)
    (q8, dq), (k8, dk), (v8, dv) = quantize_heads(q), quantize_heads(k), quantize_heads(v)
    if q.is_cuda:
        import flash_attn_interface

        out = flash_attn_interface.flash_attn_func(q8, k8, v8, q_descale=dq, k_descale=dk, v_descale=dv)
        out = out[0] if isinstance(out, tuple) else out
    else:  # CPU: the same quantized values multiplied in the inputs' dtype (tests exercise the arithmetic)

        def back(x8: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
            return x8.to(q.dtype) * d[:, None, :, None].to(q.dtype)

        out = _sdpa(back(q8, dq), back(k8, dk), back(v8, dv), "sdpa")
    return (out.float() + v_mean).to(q.dtype)


def centre_kv(k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(k, v, v_mean): keys and values centred over the tokens (dim 1), float32 (one rounding, at
    the quantizing), and the values' mean (B, 1, N, Dh) float32, which the output gets back."""
    import torch

    k = k.float() - torch.mean(k, dim=1, keepdim=True, dtype=torch.float32)
    v_mean = torch.mean(v, dim=1, keepdim=True, dtype=torch.float32)
    return k, v.float() - v_mean, v_mean


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str) -> torch.Tensor:
    import torch.nn.functional as F

    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, N, L, Dh)
    if backend == "sdpa":
        out = F.scaled_dot_product_attention(q, k, v)
    else:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        first = {
            "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION,
            "sdpa_flash": SDPBackend.FLASH_ATTENTION,
            "sdpa_efficient": SDPBackend.EFFICIENT_ATTENTION,
            "sdpa_math": SDPBackend.MATH,
        }[backend]
        order = [first] + [
            b
            for b in (
                SDPBackend.CUDNN_ATTENTION,
                SDPBackend.FLASH_ATTENTION,
                SDPBackend.EFFICIENT_ATTENTION,
                SDPBackend.MATH,
            )
            if b != first
        ]
        if backend == "sdpa_math":
            order = [SDPBackend.MATH]
        with sdpa_kernel(order, set_priority=True):
            out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2)  # (B, Lq, N, Dh)

"""FP8 self-attention through cuDNN's fused flash-attention kernel (the `nvidia-cudnn-frontend` wheel).

Why this exists: fast mode's FP8 attention was flash-attn 3's kernel only, and flash-attn 3 has no
wheel (scripts/build_flash_attn3.sh builds it). cuDNN ships an FP8 flash-attention forward for
Hopper in the library torch already loads; the frontend wheel (`pip install 'scail[fp8-attn]'`,
~3 MiB, no build step) is all it takes to reach it. benchmarks/README.md has its speed against
cuDNN's bf16 kernel and flash-attn 3/4.

The kernel takes one scale per tensor (not per head, as flash-attn 3 does), so:

    q8 = e4m3(q / dq), k8 = e4m3(k / dk), v8 = e4m3(v / dv)     d* = amax(*) / 448 (per tensor)
    S  = (q8 k8^T) * dq * dk / sqrt(Dh)                         float32 inside the kernel
    P  = e4m3(exp(S - rowmax) * 448)                            P <= 1 before scaling: scale_s = 448
    O  = (P v8) * dv / 448 / rowsum                             |O| <= amax(v) (a convex combination)
    out: bf16 where this cuDNN writes it, else e4m3(O / dv) (scale_o = 1/dv: O cannot overflow)

`emulate` is that arithmetic in plain torch, for the tests on a CPU and for checking the kernel on
a GPU. Graphs are built once per shape and cached (building one takes a fraction of a second).
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from scail.animate.attention import FP8_MAX, centre_kv

log = logging.getLogger(__name__)

MIN_BACKEND_VERSION = 90100
"""cuDNN 9.1: the first backend with the FP8 flash-attention forward on Hopper."""


@functools.cache
def import_error() -> str | None:
    """Why the kernel cannot be reached in this process (None when it can), probed once."""
    try:
        import torch

        torch.backends.cudnn.version()  # torch's own cuDNN is loaded first, so the frontend binds to it
        import cudnn
    except Exception as exc:  # ImportError, or an OSError from a mismatched binary
        return f"nvidia-cudnn-frontend does not import ({type(exc).__name__}: {exc}): pip install 'scail[fp8-attn]'"
    try:
        version = int(cudnn.backend_version())
    except Exception as exc:
        return f"the cuDNN library did not load ({exc})"
    if version < MIN_BACKEND_VERSION:
        return f"cuDNN {version} is older than 9.1, the first with FP8 attention on Hopper"
    return None


def available(device: torch.device) -> bool:
    """Whether the FP8 kernel runs on `device`: a Hopper GPU (compute capability 9.x) and the wheel."""
    import torch

    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] == 9 and import_error() is None


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x -> (float8 e4m3 values, descale (1, 1, 1, 1) float32) with x ~= values * descale; one scale per tensor."""
    import torch

    amax = x.abs().amax().float().clamp_(min=1e-12)
    descale = (amax / FP8_MAX).reshape(1, 1, 1, 1)
    # scaled in float32: a bf16 copy of the scale would be off by up to 0.4 %, the whole tensor with it
    return (x.float() * (1.0 / descale)).to(torch.float8_e4m3fn), descale


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
    """Full non-causal attention of (B, L, N, Dh) tensors (any float dtype) in FP8, plus `add`
    (broadcast; e.g. the values' mean) when given; returns q's dtype. No centring (`attention_centred`)."""
    (q8, dq), (k8, dk), (v8, dv) = quantize(q), quantize(k), quantize(v)
    return attention_fp8(q8, k8, v8, dq, dk, dv, add).to(q.dtype)


def attention_centred(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Fast mode's self-attention: keys and values centred over the tokens, quantized, the kernel,
    the values' mean added back (`centre_and_quantize`, `finish`); returns q's dtype.

    On a GPU the steps around the kernel run as compiled (fused) programs: eagerly they are ~15
    passes over 0.5 GB tensors a call (5.5 ms at 48,832 tokens, 8 % of the kernel's time); fused,
    the centring and the three scales are two reductions and the quantizing one pass.
    """
    prepare = _fused(centre_and_quantize) if q.is_cuda else centre_and_quantize
    q8, k8, v8, dq, dk, dv, v_mean = prepare(q, k, v)
    return attention_fp8(q8, k8, v8, dq, dk, dv, v_mean).to(q.dtype)


def centre_and_quantize(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(q8, k8, v8, dq, dk, dv, v_mean): keys and values centred over the tokens (dim 1), then each
    tensor quantized with one scale (`quantize`); v_mean (B, 1, N, Dh) float32 is what the output
    gets back (softmax ignores a constant added to a query's scores, and its weights sum to 1).

    The centring (`attention.centre_kv`, float32: fused, its temporaries never exist) leaves e4m3 a
    smaller range to cover when the tokens share a large component."""
    k, v, v_mean = centre_kv(k, v)
    (q8, dq), (k8, dk), (v8, dv) = quantize(q), quantize(k), quantize(v)
    return q8, k8, v8, dq, dk, dv, v_mean


_fuse_failed: list[str] = []
"""Why torch.compile could not fuse the steps around the kernel (then they run eagerly; said once)."""


@functools.cache
def _fused(fn: Any) -> Any:
    """`fn` compiled (fused Triton kernels on a GPU); after a failure to compile, `fn` itself."""
    import torch

    compiled = torch.compile(fn, dynamic=False, fullgraph=True)

    def run(*args: Any) -> Any:
        if not _fuse_failed:
            try:
                return compiled(*args)
            except Exception as exc:  # no Triton, an inductor bug: the same arithmetic eagerly
                _fuse_failed.append(f"{type(exc).__name__}: {exc}")
                log.warning("FP8 attention: could not compile the quantizing (%s); it runs eagerly, ~5 ms "
                            "slower a call", _fuse_failed[0].splitlines()[0])
        return fn(*args)

    return run


def attention_fp8(q8: torch.Tensor, k8: torch.Tensor, v8: torch.Tensor, dq: torch.Tensor, dk: torch.Tensor,
                  dv: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
    """The kernel on quantized (B, L, N, Dh) e4m3 tensors and their (1, 1, 1, 1) descales -> bf16
    (B, Lq, N, Dh), plus `add` when given.

    An e4m3 output becomes bf16 exactly; its scale and `add` are applied in one bf16 pass
    (`addcmul`): the output is 48,832 x 5,120 values a call, so each float32 round trip would cost
    more memory traffic than the quantizing of q, k and v.
    """
    import torch

    b, lq, n, dh = q8.shape
    lk = k8.shape[1]
    q8, k8, v8 = q8.contiguous(), k8.contiguous(), v8.contiguous()
    index = q8.device.index if q8.device.index is not None else torch.cuda.current_device()
    graph = _graph(b, lq, lk, n, dh, index)
    stream = torch.cuda.current_stream(q8.device)
    out = torch.empty(b, lq, n, dh, device=q8.device, dtype=torch.bfloat16 if graph.out_bf16 else torch.float8_e4m3fn)
    c = graph.constants
    workspace = torch.empty(graph.workspace_bytes, device=q8.device, dtype=torch.uint8)
    t = graph.tensors
    pack = {t["q"]: q8, t["k"]: k8, t["v"]: v8, t["o"]: out, t["amax_s"]: c["amax_s"], t["amax_o"]: c["amax_o"],
            t["descale_q"]: dq.float().contiguous(), t["descale_k"]: dk.float().contiguous(),
            t["descale_v"]: dv.float().contiguous(), t["descale_s"]: c["descale_s"], t["scale_s"]: c["scale_s"],
            t["scale_o"]: c["one"] if graph.out_bf16 else 1.0 / dv.float()}
    with graph.lock:
        import cudnn

        cudnn.set_stream(graph.handle, stream.cuda_stream)
        graph.graph.execute(pack, workspace, handle=graph.handle)
    return _fused(finish)(out, None if graph.out_bf16 else dv, add)


def finish(out: torch.Tensor, descale: torch.Tensor | None, add: torch.Tensor | None) -> torch.Tensor:
    """The kernel's output -> bf16 `out * descale + add`: `descale` for an e4m3 output (None for a
    bf16 one), `add` broadcast (None: nothing). One pass after the exact e4m3 -> bf16 conversion."""
    import torch

    bf16 = torch.bfloat16
    out = out.to(bf16)
    if descale is None:
        return out if add is None else out + add.to(bf16)
    scale = descale.reshape(()).to(bf16)
    return out * scale if add is None else torch.addcmul(add.to(bf16), out, scale)


@dataclass
class _Graph:
    graph: Any  # cudnn.pygraph, built
    handle: Any
    tensors: dict[str, Any]
    workspace_bytes: int
    out_bf16: bool
    lock: threading.Lock
    constants: dict[str, torch.Tensor]
    """(1, 1, 1, 1) float32 on the graph's device: the softmax's fixed scales, 1, and the amax
    outputs the kernel writes (unread: written under `lock`, so one pair serves every call)."""


@functools.cache
def _handle(device_index: int) -> Any:
    import cudnn
    import torch

    with torch.cuda.device(device_index):
        return cudnn.create_handle()


@functools.cache
def _graph(b: int, lq: int, lk: int, n: int, dh: int, device_index: int) -> _Graph:
    """The built graph for one shape: bf16 output where this cuDNN supports it (Blackwell, newer
    versions), else e4m3 output."""

    handle = _handle(device_index)
    try:
        return _build(handle, b, lq, lk, n, dh, device_index, out_bf16=True)
    except Exception as exc:  # cudnnGraphNotSupportedError and friends: the e4m3-output graph instead
        log.debug("cuDNN FP8 attention with a bf16 output is not supported here (%s); e4m3 output", exc)
    return _build(handle, b, lq, lk, n, dh, device_index, out_bf16=False)


def _build(handle: Any, b: int, lq: int, lk: int, n: int, dh: int, device_index: int, *, out_bf16: bool) -> _Graph:
    import cudnn

    fp8, f32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
    graph = cudnn.pygraph(io_data_type=fp8, intermediate_data_type=f32, compute_data_type=f32, handle=handle)

    def bshd(name: str, length: int) -> Any:  # logical (B, N, L, Dh) over the DiT's (B, L, N, Dh) memory
        return graph.tensor(name=name, dim=[b, n, length, dh], stride=[length * n * dh, dh, n * dh, 1], data_type=fp8)

    def scalar(name: str) -> Any:
        return graph.tensor(name=name, dim=[1, 1, 1, 1], stride=[1, 1, 1, 1], data_type=f32)

    t = {"q": bshd("q", lq), "k": bshd("k", lk), "v": bshd("v", lk)}
    for name in ("descale_q", "descale_k", "descale_v", "descale_s", "scale_s", "scale_o"):
        t[name] = scalar(name)
    o, _stats, amax_s, amax_o = graph.sdpa_fp8(
        q=t["q"], k=t["k"], v=t["v"], descale_q=t["descale_q"], descale_k=t["descale_k"], descale_v=t["descale_v"],
        descale_s=t["descale_s"], scale_s=t["scale_s"], scale_o=t["scale_o"], is_inference=True,
        attn_scale=1.0 / math.sqrt(dh), name="scail_fp8_attention",
    )
    o.set_output(True).set_dim([b, n, lq, dh]).set_stride([lq * n * dh, dh, n * dh, 1])
    o.set_data_type(cudnn.data_type.BFLOAT16 if out_bf16 else fp8)
    for amax in (amax_s, amax_o):
        amax.set_output(True).set_dim([1, 1, 1, 1]).set_stride([1, 1, 1, 1]).set_data_type(f32)
    t.update(o=o, amax_s=amax_s, amax_o=amax_o)
    graph.validate()
    graph.build_operation_graph()
    graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    graph.check_support()
    graph.build_plans()
    import torch

    one = torch.ones(1, 1, 1, 1, device=torch.device("cuda", device_index), dtype=torch.float32)
    constants = {"one": one, "descale_s": one / FP8_MAX, "scale_s": one * FP8_MAX, "amax_s": torch.empty_like(one),
                 "amax_o": torch.empty_like(one)}
    return _Graph(graph, handle, t, int(graph.get_workspace_size()), out_bf16, threading.Lock(), constants)


def emulate(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, out_bf16: bool = False) -> torch.Tensor:
    """The kernel's arithmetic (module docstring) in float32 torch, with the exact row maximum where
    the kernel keeps a running one; (B, L, N, Dh) in, q's dtype out. For tests, not for speed."""
    import torch

    (q8, dq), (k8, dk), (v8, dv) = quantize(q), quantize(k), quantize(v)
    qf, kf, vf = (x.float().transpose(1, 2) for x in (q8, k8, v8))  # (B, N, L, Dh)
    s = (qf @ kf.transpose(-1, -2)) * (dq * dk).reshape(()) / math.sqrt(q.shape[-1])
    p = torch.exp(s - s.amax(dim=-1, keepdim=True))
    p8 = (p * FP8_MAX).to(torch.float8_e4m3fn).float()
    o = (p8 @ vf) * (dv.reshape(()) / FP8_MAX) / p.sum(dim=-1, keepdim=True)
    if not out_bf16:
        o = (o / dv.reshape(())).to(torch.float8_e4m3fn).float() * dv.reshape(())
    return o.transpose(1, 2).to(q.dtype)

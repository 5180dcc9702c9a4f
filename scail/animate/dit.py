"""The SCAIL DiT: Wan2.1-I2V-14B blocks with a reference frame and a pose branch in one sequence.

Specification: research/scail-model.md §4 (SAT branch) and research/scail-wan-branch.md §2-4 (wan branch);
both branches compute the same function. Module and parameter names are the wan-branch names, so
`state_dict()` keys equal the official `SCAILModel`'s (`keys_14B.json`); `dit_loader.py` maps the SAT names.

Token sequence per sample, all attending to each other in every block:

    [ ref (hp*wp) | video (T*hp*wp) | pose (T*(hp/2)*(wp/2)) ]     hp, wp = h/2, w/2 (latent grid / patch)

Precision (as the wan branch under bf16 autocast): the block linears, patch and text/CLIP embeddings run
in the weights' dtype (bfloat16 on GPU); the time embedding, the adaLN modulation, the gates, the residual
stream, all LayerNorm/RMSNorm statistics and the output head run in float32; RoPE runs in float64
(`DiTConfig.rope_dtype`). With float32 weights everything is float32 and matches the fixtures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from scail.animate.attention import attention

if TYPE_CHECKING:
    from scail.animate.parallel import SequenceParallel

# Parameters kept in float32 whatever dtype the rest of the model uses (see `DiT.cast_`): the time
# embedding, the adaLN tables and the output head (the wan branch runs these under float32 autocast).
FP32_PREFIXES: tuple[str, ...] = ("time_embedding.", "time_projection.", "head.")
FP32_SUFFIXES: tuple[str, ...] = (".modulation",)


def is_fp32_param(name: str) -> bool:
    """Whether the parameter `name` (a state-dict key) is kept in float32."""
    return name.startswith(FP32_PREFIXES) or name.endswith(FP32_SUFFIXES)


@dataclass(frozen=True)
class DiTConfig:
    """Architecture hyper-parameters of the SCAIL DiT."""

    dim: int  # hidden width D
    num_heads: int  # N; head dim Dh = D / N (128 for the released models)
    num_layers: int
    ffn_dim: int
    freq_dim: int = 256  # width of the sinusoidal timestep embedding
    text_dim: int = 4096  # umT5-XXL output width
    clip_dim: int = 1280  # CLIP ViT-H/14 token width
    latent_channels: int = 16  # VAE latent channels (= output channels)
    mask_channels: int = 4  # constant mask channels appended inside the model: 0 video, 1 ref/pose
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (t, h, w)
    eps: float = 1e-6  # LayerNorm and qk-RMSNorm epsilon
    rope_theta: float = 10000.0
    # official: pose tokens sit at w + 120 in the RoPE grid (h shift 0)
    pose_rope_shift_hw: tuple[int, int] = (0, 120)
    # float64: wan-branch numerics (tables and rotation in float64); float32: SAT-branch tables
    # (computed in float32, rotation in float32).
    rope_dtype: Literal["float64", "float32"] = "float64"
    text_len: int = 512  # the wan branch zero-pads T5 output to this many tokens (see `pad_context`)

    def __post_init__(self) -> None:
        if self.num_heads <= 0 or self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head dim {self.head_dim} must be even for RoPE")
        if self.patch_size[0] != 1:
            raise ValueError(f"temporal patch size must be 1, got {self.patch_size}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def in_channels(self) -> int:
        return self.latent_channels + self.mask_channels

    @classmethod
    def scail_14b(cls) -> DiTConfig:
        """SCAIL-Preview 14B (configs/config-14b.json; 16,394,965,824 parameters)."""
        return cls(dim=5120, num_heads=40, num_layers=40, ffn_dim=13824)

    @classmethod
    def scail_1_3b(cls) -> DiTConfig:
        """The 1.3B configuration of the official repo (no weights were released)."""
        return cls(dim=1536, num_heads=12, num_layers=30, ffn_dim=8960)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DiTConfig:
        """From an official config: wan `configs/config-14b.json`, `SCAILModel` constructor kwargs
        (`{"constructor_kwargs": {...}}` as in fixtures/scail/dit) or the plain names of fixtures/scail-dit.

        Settings the SCAIL model never uses (t2v, no qk-norm, windowed attention) raise ValueError.
        """
        d: dict[str, Any] = dict(data.get("constructor_kwargs", data))
        if d.get("model_type", "i2v") != "i2v":
            raise ValueError(f"model_type {d['model_type']!r} is not supported; SCAIL is an i2v model")
        if not d.get("qk_norm", True) or not d.get("cross_attn_norm", True):
            raise ValueError("qk_norm and cross_attn_norm must be true for SCAIL")
        if tuple(d.get("window_size", (-1, -1))) != (-1, -1):
            raise ValueError(f"window_size {d['window_size']} is not supported; SCAIL attends globally")
        latent = int(d.get("out_dim", d.get("out_channels", 16)))
        in_channels = int(d.get("in_dim", d.get("in_channels", latent + 4)))
        shift = d.get("pose_rope_shift", [0, 0, d.get("pose_rope_w_offset", 120)])
        return cls(
            dim=int(d["dim"]),
            num_heads=int(d["num_heads"]),
            num_layers=int(d["num_layers"]),
            ffn_dim=int(d["ffn_dim"]),
            freq_dim=int(d.get("freq_dim", 256)),
            text_dim=int(d.get("text_dim", 4096)),
            clip_dim=int(d.get("clip_dim", 1280)),
            latent_channels=latent,
            mask_channels=in_channels - latent,
            patch_size=tuple(int(p) for p in d.get("patch_size", (1, 2, 2))),  # type: ignore[arg-type]
            eps=float(d.get("eps", 1e-6)),
            rope_theta=float(d.get("rope_theta", 10000.0)),
            pose_rope_shift_hw=(int(shift[1]), int(shift[2])),
            text_len=int(d.get("text_len", 512)),
        )

    @classmethod
    def tiny(cls) -> DiTConfig:
        """A few-hundred-thousand-parameter model for tests and the offline tiny-random preset."""
        return cls(dim=64, num_heads=2, num_layers=2, ffn_dim=128, freq_dim=32, text_dim=32, clip_dim=32)


# --------------------------------------------------------------------------------------------------
# Embedding and RoPE helpers
# --------------------------------------------------------------------------------------------------


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of `timesteps` (B,) -> (B, dim) float32, computed in float64."""
    half = dim // 2
    position = timesteps.to(torch.float64)
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=position.device).div(half))
    angles = torch.outer(position, freqs)  # (B, dim/2)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).float()


def pad_context(context: torch.Tensor, text_len: int = 512) -> torch.Tensor:
    """Zero-pad T5 features (B, L, C) to (B, text_len, C), as the wan branch does before the DiT."""
    b, length, c = context.shape
    if length > text_len:
        raise ValueError(f"context has {length} tokens, more than text_len {text_len}")
    return torch.cat([context, context.new_zeros(b, text_len - length, c)], dim=1)


def _axis_pairs(head_dim: int) -> tuple[int, int, int]:
    """Complex pairs per RoPE axis (t, h, w): 22/21/21 for Dh=128."""
    c = head_dim // 2
    return c - 2 * (c // 3), c // 3, c // 3


def _grid_angles(
    head_dim: int, theta: float, t: torch.Tensor, h: torch.Tensor, w: torch.Tensor
) -> torch.Tensor:
    """RoPE angles (len t, len h, len w, Dh/2) for the position grid t x h x w, in the positions' dtype."""
    parts = []
    for pos, pairs in zip((t, h, w), _axis_pairs(head_dim), strict=True):
        inv_freq = 1.0 / torch.pow(
            theta, torch.arange(0, 2 * pairs, 2, dtype=pos.dtype, device=pos.device) / (2 * pairs)
        )
        parts.append(torch.outer(pos, inv_freq))  # (len, pairs)
    at, ah, aw = parts
    nt, nh, nw = len(t), len(h), len(w)
    return torch.cat(
        [
            at[:, None, None, :].expand(nt, nh, nw, -1),
            ah[None, :, None, :].expand(nt, nh, nw, -1),
            aw[None, None, :, :].expand(nt, nh, nw, -1),
        ],
        dim=-1,
    )


def scail_rope_tables(
    config: DiTConfig, frames: int, grid_h: int, grid_w: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (L, Dh/2) for the [ref | video | pose] sequence, in `config.rope_dtype`.

    Args:
        frames: T, latent frames of the video (and pose) segment.
        grid_h, grid_w: hp, wp, the token grid of one video frame (latent h, w divided by the patch).

    Positions (t, h, w): ref (0, i, j); video frame f (f+1, i, j); pose frame f, cell (i', j'): the
    cos and sin tables of the full-resolution block t=f+1, h in [sh, sh+hp), w in [sw, sw+wp) (sh, sw =
    `pose_rope_shift_hw`), each average-pooled over 2x2. official: pooled factors are not pure
    rotations (magnitude cos(freq/2) on the h and w pairs); reproduced exactly, not as half positions.
    """
    return _segment_rope_tables(config, frames, grid_h, grid_w, device, ref_frames=1, ref_h=0, video_t=1)


def _segment_rope_tables(
    config: DiTConfig,
    frames: int,
    grid_h: int,
    grid_w: int,
    device: torch.device,
    *,
    ref_frames: int,
    ref_h: int,
    video_t: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (L, Dh/2) for [references | video | pose], in `config.rope_dtype`.

    The references are frames 0..ref_frames-1 of one grid starting at h = ref_h; video and pose
    start at t = video_t (pose cells 2x2-pooled as `scail_rope_tables` says). SCAIL-Preview:
    (1, 0, 1); SCAIL-2 (`scail.animate.dit2.scail2_rope_tables`) moves them by mode and extra refs.
    """
    dtype = torch.float64 if config.rope_dtype == "float64" else torch.float32
    d, theta = config.head_dim, config.rope_theta

    def arange(start: int, n: int) -> torch.Tensor:
        return torch.arange(start, start + n, dtype=dtype, device=device)

    sh, sw = config.pose_rope_shift_hw
    refs = _grid_angles(d, theta, arange(0, ref_frames), arange(ref_h, grid_h), arange(0, grid_w))
    video = _grid_angles(d, theta, arange(video_t, frames), arange(0, grid_h), arange(0, grid_w))
    pose = _grid_angles(d, theta, arange(video_t, frames), arange(sh, grid_h), arange(sw, grid_w))

    def pooled(table: torch.Tensor) -> torch.Tensor:  # (T, hp, wp, P) -> (T*(hp/2)*(wp/2), P)
        out = F.avg_pool2d(table.permute(0, 3, 1, 2), kernel_size=2, stride=2)  # (T, P, hp/2, wp/2)
        return out.permute(0, 2, 3, 1).flatten(0, 2)

    cos = torch.cat([refs.cos().flatten(0, 2), video.cos().flatten(0, 2), pooled(pose.cos())])
    sin = torch.cat([refs.sin().flatten(0, 2), video.sin().flatten(0, 2), pooled(pose.sin())])
    return cos, sin  # (L, Dh/2) each


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[2j], x[2j+1]) of x (B, L, N, Dh) by the tables (L, Dh/2).

    Computed in the tables' dtype and returned in x's dtype; equals the complex product
    (x[2j] + i x[2j+1]) * (cos + i sin) of the official code.
    """
    b, length, n, d = x.shape
    xr = x.to(cos.dtype).reshape(b, length, n, d // 2, 2)
    x0, x1 = xr.unbind(-1)  # (B, L, N, Dh/2) each
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    out = torch.stack([x0 * c - x1 * s, x1 * c + x0 * s], dim=-1)  # (B, L, N, Dh/2, 2)
    return out.flatten(3).to(x.dtype)


# --------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """RMSNorm over the last dim with a learned scale; statistics in float32."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return xf.to(x.dtype) * self.weight.to(x.dtype)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 (weights upcast if needed); returns float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps)


class SelfAttention(nn.Module):
    """Multi-head self-attention with qk RMSNorm over the full width and SCAIL RoPE on q and k."""

    def __init__(self, dim: int, num_heads: int, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)
        # sequence parallel (`scail.animate.parallel.install`): x holds this rank's slice of the tokens
        # and this attends over the whole sequence (Ulysses all-to-all); None: plain attention
        self.seq_parallel: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, rope_cos: torch.Tensor, rope_sin: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D) -> (B, L, D); rope tables (L, Dh/2)."""
        b, length, d = x.shape
        n = self.num_heads
        q = self.norm_q(self.q(x)).view(b, length, n, d // n)  # (B, L, N, Dh)
        k = self.norm_k(self.k(x)).view(b, length, n, d // n)  # (B, L, N, Dh)
        v = self.v(x).view(b, length, n, d // n)  # (B, L, N, Dh)
        q = apply_rope(q, rope_cos, rope_sin)
        k = apply_rope(k, rope_cos, rope_sin)
        attend = attention if self.seq_parallel is None else self.seq_parallel
        out = attend(q, k, v).reshape(b, length, d)  # (B, L, D)
        return self.o(out)


class CrossAttention(nn.Module):
    """Cross-attention to text and CLIP tokens with a shared query and output projection (Wan I2V)."""

    def __init__(self, dim: int, num_heads: int, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.k_img = nn.Linear(dim, dim)
        self.v_img = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)
        self.norm_k_img = RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D), text: (B, Lt, D), image: (B, Li, D) -> (B, L, D)."""
        b, length, d = x.shape
        n = self.num_heads
        q = self.norm_q(self.q(x)).view(b, length, n, d // n)  # (B, L, N, Dh)
        k = self.norm_k(self.k(text)).view(b, -1, n, d // n)  # (B, Lt, N, Dh)
        v = self.v(text).view(b, -1, n, d // n)  # (B, Lt, N, Dh)
        k_img = self.norm_k_img(self.k_img(image)).view(b, -1, n, d // n)  # (B, Li, N, Dh)
        v_img = self.v_img(image).view(b, -1, n, d // n)  # (B, Li, N, Dh)
        out_img = attention(q, k_img, v_img).reshape(b, length, d)
        out_text = attention(q, k, v).reshape(b, length, d)
        return self.o(out_text + out_img)


class FeedForward(nn.Sequential):
    """Linear -> GELU (tanh) -> Linear, optionally on `chunks` slices of the tokens.

    Every token goes through the FFN alone, so slicing the tokens changes nothing but memory: the
    (L, ffn_dim) hidden is 1/chunks the size. `chunks` is part of the DiT's memory plan
    (`DiT.set_ffn_chunks`); 1 runs all tokens at once.
    """

    def __init__(self, dim: int, ffn_dim: int) -> None:
        super().__init__(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        self.chunks = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D) -> (B, L, D) in the linears' dtype."""
        if self.chunks == 1:
            return super().forward(x)
        out = torch.empty_like(x)
        step = -(-x.shape[1] // self.chunks)
        for start in range(0, x.shape[1], step):
            out[:, start : start + step] = super().forward(x[:, start : start + step])
        return out


class DiTBlock(nn.Module):
    """norm -> modulate -> self-attn -> gate; affine norm -> cross-attn; norm -> modulate -> FFN -> gate."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        dim, eps = config.dim, config.eps
        self.norm1 = LayerNorm(dim, eps, elementwise_affine=False)
        self.self_attn = SelfAttention(dim, config.num_heads, eps)
        self.norm3 = LayerNorm(dim, eps, elementwise_affine=True)
        self.cross_attn = CrossAttention(dim, config.num_heads, eps)
        self.norm2 = LayerNorm(dim, eps, elementwise_affine=False)
        self.ffn = FeedForward(dim, config.ffn_dim)
        # this block's learned offset to the shared adaLN projection (shift, scale, gate) x 2
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the block's linears take (bfloat16 on GPU); read off a norm weight, since the
        linears may be replaced by quantized ones (`scail.animate.fast`)."""
        return self.self_attn.norm_q.weight.dtype

    def forward(
        self,
        x: torch.Tensor,
        e0: torch.Tensor,
        text: torch.Tensor,
        image: torch.Tensor,
        rope_cos: torch.Tensor,
        rope_sin: torch.Tensor,
    ) -> torch.Tensor:
        """One block (what `DiT.compile_blocks` compiles; `DiT.run_blocks` decides how rows are fed).

        Args:
            x: (B, L, D) float32 residual stream.
            e0: (B, 6, D) float32 shared adaLN projection of the time embedding.
            text: (B | 1, Lt, D) embedded text tokens, in the block's compute dtype.
            image: (B | 1, Li, D) embedded CLIP tokens, in the block's compute dtype.
            rope_cos, rope_sin: (L, Dh/2) RoPE tables.

        Returns:
            (B, L, D) float32, the updated residual stream.
        """
        dtype = self.compute_dtype
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = (self.modulation.float() + e0).chunk(
            6, dim=1
        )  # (B, 1, D) each, float32

        h = self.norm1(x) * (1 + scale_sa) + shift_sa  # (B, L, D) float32
        x = x + self.self_attn(h.to(dtype), rope_cos, rope_sin).float() * gate_sa
        x = x + self.cross_attn(self.norm3(x).to(dtype), text, image).float()
        h = self.norm2(x) * (1 + scale_ff) + shift_ff  # (B, L, D) float32
        return x + self.ffn(h.to(dtype)).float() * gate_ff


class MLPProj(nn.Module):
    """CLIP token projection: LayerNorm -> Linear -> GELU (exact) -> Linear -> LayerNorm."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            LayerNorm(in_dim),
            nn.Linear(in_dim, in_dim),
            nn.GELU(),
            nn.Linear(in_dim, out_dim),
            LayerNorm(out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, Li, clip_dim) -> (B, Li, D) in the linears' dtype."""
        ln0, fc1, act, fc2, ln4 = self.proj
        dtype = fc1.weight.dtype
        h = fc2(act(fc1(ln0(x).to(dtype))))
        return ln4(h).to(dtype)


class Head(nn.Module):
    """Final adaLN (shift, scale) + linear to patch pixels, all in float32."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.norm = LayerNorm(config.dim, config.eps, elementwise_affine=False)
        self.head = nn.Linear(config.dim, math.prod(config.patch_size) * config.latent_channels)
        self.modulation = nn.Parameter(torch.randn(1, 2, config.dim) / config.dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D) float32, e: (B, D) float32 time embedding -> (B, L, pt*ph*pw*C) float32."""
        shift, scale = (self.modulation.float() + e.unsqueeze(1)).chunk(2, dim=1)
        h = self.norm(x) * (1 + scale) + shift
        return F.linear(h, self.head.weight.float(), self.head.bias.float())


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


@dataclass
class Conditioning:
    """What every block of one forward needs besides the tokens (built once by `DiT.embed`)."""

    e: torch.Tensor  # (B, D) float32 time embedding (the head's modulation input)
    e0: torch.Tensor  # (B, 6, D) float32 shared adaLN projection
    text: torch.Tensor  # (B, Lt, D) embedded T5 tokens, compute dtype
    image: torch.Tensor  # (B, Li, D) embedded CLIP tokens, compute dtype
    rope_cos: torch.Tensor  # (L, Dh/2)
    rope_sin: torch.Tensor  # (L, Dh/2)
    shape: tuple[int, int, int, int]  # (B, T, h, w) of the latent x
    prefix_tokens: int = 0  # tokens before the reference's (SCAIL-2's extra references)


def _row(t: torch.Tensor, i: int) -> torch.Tensor:
    """Row i of a (B, ...) tensor as (1, ...); a (1, ...) tensor shared by every row as is."""
    return t if t.shape[0] == 1 else t[i : i + 1]


class DiT(nn.Module):
    """SCAIL diffusion transformer: predicts the flow velocity of the video latent."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        d = config.dim
        self.patch_embedding = nn.Conv3d(
            config.in_channels, d, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.patch_embedding_pose = nn.Conv3d(
            config.in_channels, d, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.text_embedding = nn.Sequential(
            nn.Linear(config.text_dim, d), nn.GELU(approximate="tanh"), nn.Linear(d, d)
        )
        self.time_embedding = nn.Sequential(nn.Linear(config.freq_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.blocks = nn.ModuleList(DiTBlock(config) for _ in range(config.num_layers))
        self.head = Head(config)
        self.img_emb = MLPProj(config.clip_dim, d)
        self._rope_cache: dict[tuple[object, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        self.rows_in_turn = False  # memory plan (`set_rows_in_turn`; FFN chunks: `set_ffn_chunks`)
        self.parallel: SequenceParallel | None = None
        """Sequence/CFG parallel across processes (`scail.animate.parallel.install`); None: this process alone."""

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the blocks compute in (`DiTBlock.compute_dtype`)."""
        block: DiTBlock = self.blocks[0]  # type: ignore[assignment]
        return block.compute_dtype

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        ref_latent: torch.Tensor,
        pose_latent: torch.Tensor,
        clip_features: torch.Tensor,
        **inputs: Any,
    ) -> torch.Tensor:
        """Velocity for the video latent.

        Args:
            x: (B, T, 16, h, w) noisy video latent (layout B, T, C, H, W; h, w multiples of 4).
            timesteps: (B,) or (1,) diffusion time, sigma * 1000 (float or int).
            context: (B, Lt, text_dim) or (1, Lt, text_dim) T5 features, used as given (no padding
                or mask; the wan branch pads to 512 with zeros first, see `pad_context`).
            ref_latent: (B | 1, 1, 16, h, w) VAE latent of the reference image.
            pose_latent: (B | 1, T, 16, h/2, w/2) VAE latent of the half-resolution pose video.
            clip_features: (B | 1, Li, clip_dim) CLIP ViT tokens of the reference (Li = 257).
                Inputs with batch 1 are shared by every row (the CFG pair).
            inputs: a subclass's further inputs to `embed` (SCAIL-2's masks and references:
                `scail.animate.dit2.SCAIL2DiT.embed_latents`); SCAIL-Preview takes none.

        Returns:
            (B, T, 16, h, w) float32 velocity for the video frames (ref and pose outputs are dropped).
        """
        tokens, cond = self.embed(x, timesteps, context, ref_latent, pose_latent, clip_features, **inputs)
        box = [tokens]
        del tokens  # the blocks' loop drops the embedded tokens after the first block (1.9 GiB at 14B)
        return self.unembed(self.run_blocks(box, cond), cond)

    def embed(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        ref_latent: torch.Tensor,
        pose_latent: torch.Tensor,
        clip_features: torch.Tensor,
        **inputs: Any,
    ) -> tuple[torch.Tensor, Conditioning]:
        """The part of `forward` before the blocks: (B, L, D) float32 tokens and what every block needs.

        `inputs` go to `embed_latents` (a subclass's further inputs: SCAIL-2's masks and references).
        """
        b, t, _, h, w = x.shape
        _check_inputs(self.config, x, timesteps, context, ref_latent, pose_latent, clip_features)
        tokens, prefix, (rope_cos, rope_sin) = self.embed_latents(x, ref_latent, pose_latent, **inputs)
        e, e0, text, image = self.embed_conditions(b, timesteps, context, clip_features)
        cond = Conditioning(e, e0, text, image, rope_cos, rope_sin, (b, t, h, w), prefix_tokens=prefix)
        return tokens, cond

    def embed_latents(
        self, x: torch.Tensor, ref_latent: torch.Tensor, pose_latent: torch.Tensor
    ) -> tuple[torch.Tensor, int, tuple[torch.Tensor, torch.Tensor]]:
        """The token sequence [ref | video | pose] (B, L, D) in float32 (the residual stream), the
        number of tokens before the reference's (none here) and the sequence's RoPE tables (L, Dh/2)."""
        b, t, _, h, w = x.shape
        pt, ph, pw = self.config.patch_size
        # embeddings: masks appended after the latent channels (0 video, 1 ref and pose)
        video = torch.cat([self.with_mask(ref_latent, 1.0, b), self.with_mask(x, 0.0, b)], dim=2)
        video = tokens_of(self.patch_embedding(video))  # (B, 20, 1+T, h, w) -> (B, (1+T)*hp*wp, D)
        pose = self.patch_embedding_pose(self.with_mask(pose_latent, 1.0, b))  # (B, D, T, hp/2, wp/2)
        pose = tokens_of(pose)  # (B, T*hp/2*wp/2, D)
        tokens = torch.cat([video, pose], dim=1).float()
        return tokens, 0, self.rope_tables(t // pt, h // ph, w // pw, x.device)

    def with_mask(self, lat: torch.Tensor, mask: torch.Tensor | float, b: int) -> torch.Tensor:
        """(B|1, F, 16, y, x) latent + the 4 mask channels (a constant, or (B|1, F, 4, y, x)) ->
        (B, 20, F, y, x) in the compute dtype, channels first for a patch embedding."""
        dtype = self.patch_embedding.weight.dtype
        lat = lat.to(dtype).expand(b, -1, -1, -1, -1)
        if isinstance(mask, float):
            shape = (*lat.shape[:2], self.config.mask_channels, *lat.shape[3:])
            mask = torch.full(shape, mask, dtype=dtype, device=lat.device)
        return torch.cat([lat, mask.to(dtype).expand(b, -1, -1, -1, -1)], dim=2).transpose(1, 2)

    def embed_conditions(
        self, b: int, timesteps: torch.Tensor, context: torch.Tensor, clip_features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Time, text and CLIP embeddings for a batch of b rows: e (B, D) and e0 (B, 6, D) float32,
        text (B, Lt, D) and image (B, Li, D) in the compute dtype (inputs of batch 1 are shared)."""
        cfg = self.config
        dtype = self.patch_embedding.weight.dtype
        timesteps = timesteps.reshape(-1).expand(b)
        tdtype = next(self.time_projection.parameters()).dtype  # float32 unless the whole model was cast
        e = self.time_embedding(timestep_embedding(timesteps, cfg.freq_dim).to(tdtype)).float()  # (B, D)
        e0 = self.time_projection(e.to(tdtype)).float().unflatten(1, (6, cfg.dim))  # (B, 6, D) float32
        text = self.text_embedding(context.to(dtype)).expand(b, -1, -1)  # (B, Lt, D)
        image = self.img_emb(clip_features).expand(b, -1, -1)  # (B, Li, D)
        return e, e0, text, image

    def rope_tables(self, frames: int, grid_h: int, grid_w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """`scail_rope_tables` for this model, built once per (shape, device) and kept."""
        return self.cached_rope(
            (frames, grid_h, grid_w, str(device)),
            lambda: scail_rope_tables(self.config, frames, grid_h, grid_w, device),
        )

    def cached_rope(
        self, key: tuple[object, ...], build: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The RoPE tables kept under `key` (shape, device, ...), built by `build` when new; one
        shape at a time is kept (a few tens of MB at 512x896)."""
        tables = self._rope_cache.get(key)
        if tables is None:
            tables = build()
            self._rope_cache.clear()
            self._rope_cache[key] = tables
        return tables

    def run_blocks(self, tokens: torch.Tensor | list[torch.Tensor], cond: Conditioning) -> torch.Tensor:
        """The transformer blocks on (B, L, D) float32 tokens, following the memory plan.

        The memory plan changes how much memory a forward needs, never its result:
          * rows in turn (`set_rows_in_turn`): the rows of a batch (the CFG pair) go through each
            block one after the other, each written back into the residual stream in place once
            computed (a row only reads itself), so a block's activations are those of one row;
          * FFN chunks (`set_ffn_chunks`): each FFN runs on slices of the tokens (`FeedForward`).

        Pass the tokens inside a one-element list to hand them over: the list is emptied, so the
        input can be freed once the first block has run (the caller keeps no reference), and with
        rows in turn even the first block writes into it.
        """
        if self.parallel is not None:  # each rank runs its slice of the tokens; all of them come back
            return self.parallel.run_blocks(self._run_blocks_here, tokens, cond)
        return self._run_blocks_here(tokens, cond)

    def _run_blocks_here(self, tokens: torch.Tensor | list[torch.Tensor], cond: Conditioning) -> torch.Tensor:
        """`run_blocks` on the tokens this process holds."""
        owned = isinstance(tokens, list)
        x: torch.Tensor = tokens.pop() if isinstance(tokens, list) else tokens
        b = x.shape[0]
        for i, block in enumerate(self.blocks):
            if not self.rows_in_turn or b == 1:
                x = block(x, cond.e0, cond.text, cond.image, cond.rope_cos, cond.rope_sin)
                continue
            # x is ours to overwrite after block 0, or from the start when the caller handed it over
            out = x if owned or i > 0 else torch.empty_like(x)
            for r in range(b):
                out[r : r + 1] = block(
                    x[r : r + 1], cond.e0[r : r + 1], _row(cond.text, r), _row(cond.image, r),
                    cond.rope_cos, cond.rope_sin,
                )  # (1, L, D)
            x = out
        return x

    def unembed(self, tokens: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """Head and un-patchify of the video tokens: (B, L, D) -> (B, T, 16, h, w) float32."""
        cfg = self.config
        b, t, h, w = cond.shape
        pt, ph, pw = cfg.patch_size
        hp, wp = h // ph, w // pw
        ref_len, video_len = cond.prefix_tokens + hp * wp, (t // pt) * hp * wp
        out = self.head(tokens[:, ref_len : ref_len + video_len], cond.e)  # (B, T*hp*wp, pt*ph*pw*16)
        out = out.view(b, t // pt, hp, wp, pt, ph, pw, cfg.latent_channels)
        out = out.permute(0, 1, 4, 7, 2, 5, 3, 6)  # (B, T/pt, pt, C, hp, ph, wp, pw)
        return out.reshape(b, t, cfg.latent_channels, h, w)

    def set_ffn_chunks(self, n: int) -> DiT:
        """Memory plan: run each FFN on `n` token chunks (same output; the 14B FFN hidden at
        512x896x81 is 2.5 GiB per copy, so n=4 lowers peak memory by a few GiB)."""
        if n < 1:
            raise ValueError(f"ffn chunks must be >= 1, got {n}")
        for block in self.blocks:
            cast(DiTBlock, block).ffn.chunks = n
        return self

    def set_rows_in_turn(self, on: bool) -> DiT:
        """Memory plan: run the rows of a batch (the CFG pair) through each block one after the other.

        Same result; the block's activations are those of one row, and the residual stream is
        updated in place, so peak memory drops by about half the activations (14B at 512x896x81:
        ~4 GiB). Everything outside the blocks (embeddings, head, sampler) still runs the pair as
        one batch, and the matmuls keep 48,832 rows each, enough to fill a GPU.
        """
        self.rows_in_turn = on
        return self

    def compile_blocks(self, mode: str | None = None, backend: str = "inductor") -> DiT:
        """torch.compile each block's `forward` (regional compilation: one graph serves all blocks).

        Fuses the elementwise work around the matmuls and attention (adaLN modulation, LayerNorm,
        qk-RMSNorm, RoPE, gates, residual adds) into a few kernels; attention stays one opaque call
        (the custom op `scail::attention`, registered here), so the selected kernel runs unchanged.
        Same function as eager; the first forward of a shape compiles (tens of seconds on a GPU).
        Speed and memory: benchmarks/README.md. Compile errors fall back to eager (logged by torch).
        """
        import torch._dynamo

        from scail.animate.attention import register_custom_op

        register_custom_op()
        # one graph per block is reused by all 40 blocks, but each distinct shape is an entry
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        # a machine that cannot compile (no C compiler for Triton, ...) runs the blocks eagerly
        torch._dynamo.config.suppress_errors = True
        for module in self.blocks:
            block = cast(DiTBlock, module)
            block.forward = torch.compile(block.forward, mode=mode, backend=backend, dynamic=False)  # type: ignore[method-assign]
        return self

    def cast_(self, dtype: torch.dtype) -> DiT:
        """Cast parameters to `dtype` in place, keeping those `is_fp32_param` names in float32."""
        for name, p in self.named_parameters():
            p.data = p.data.to(torch.float32 if is_fp32_param(name) else dtype)
        return self

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> DiT:
        """Random weights for tiny test models: N(0, 1/fan_in) weights, N(0, 0.05^2) biases, norms ~1.

        Unlike Wan's training init the head is not zeroed, so a random model gives non-zero output.
        """
        for name, p in self.named_parameters():
            if name.endswith("modulation"):
                p.copy_(torch.randn(p.shape, generator=generator) / self.config.dim**0.5)
            elif p.dim() == 1 and ("norm" in name or name.startswith(("img_emb.proj.0", "img_emb.proj.4"))):
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=generator))
            elif p.dim() == 1:
                p.copy_(0.05 * torch.randn(p.shape, generator=generator))
            else:
                fan_in = math.prod(p.shape[1:])
                p.copy_(torch.randn(p.shape, generator=generator) / fan_in**0.5)
        return self


def _check_inputs(
    cfg: DiTConfig,
    x: torch.Tensor,
    timesteps: torch.Tensor,
    context: torch.Tensor,
    ref_latent: torch.Tensor,
    pose_latent: torch.Tensor,
    clip_features: torch.Tensor,
) -> None:
    """Raise ValueError naming the tensor whose shape does not fit `x` (B, T, C, h, w)."""
    if x.dim() != 5 or x.shape[2] != cfg.latent_channels:
        raise ValueError(f"x must be (B, T, {cfg.latent_channels}, h, w), got {tuple(x.shape)}")
    b, t, c, h, w = x.shape
    if h % 4 or w % 4:
        raise ValueError(f"latent h, w must be multiples of 4 (pixels multiples of 32), got {h}x{w}")
    expected = {
        "ref_latent": (ref_latent, (1, c, h, w)),
        "pose_latent": (pose_latent, (t, c, h // 2, w // 2)),
    }
    check_batched_shapes(expected, b)
    if context.dim() != 3 or context.shape[0] not in (1, b) or context.shape[2] != cfg.text_dim:
        raise ValueError(f"context must be (1 or {b}, L, {cfg.text_dim}), got {tuple(context.shape)}")
    if (
        clip_features.dim() != 3
        or clip_features.shape[0] not in (1, b)
        or clip_features.shape[2] != cfg.clip_dim
    ):
        raise ValueError(
            f"clip_features must be (1 or {b}, L, {cfg.clip_dim}), got {tuple(clip_features.shape)}"
        )
    if timesteps.numel() not in (1, b):
        raise ValueError(f"timesteps must have 1 or {b} values, got shape {tuple(timesteps.shape)}")


def check_batched_shapes(expected: Mapping[str, tuple[torch.Tensor, tuple[int, ...]]], b: int) -> None:
    """Raise ValueError naming the first input that is not (1 or b, *tail): `expected` maps each
    input's name to (the tensor, its tail)."""
    for name, (tensor, tail) in expected.items():
        if tensor.dim() != 5 or tuple(tensor.shape[1:]) != tail or tensor.shape[0] not in (1, b):
            raise ValueError(
                f"{name} must be (1 or {b}, {', '.join(map(str, tail))}), got {tuple(tensor.shape)}"
            )


def tokens_of(emb: torch.Tensor) -> torch.Tensor:
    """A patch embedding's output as tokens: (B, D, F, y, x) -> (B, F*y*x, D)."""
    return emb.flatten(2).transpose(1, 2)

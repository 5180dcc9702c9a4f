"""The Wan2.1 video VAE: causal 3D convolutions, 4x8x8 compression, 16 latent channels.

Video in [-1, 1] of shape (B, 3, T, H, W) becomes latents (B, 16, F, H/8, W/8) with
F = 1 + (T - 1) // 4: the first frame is encoded on its own, then the rest in chunks of 4 frames
(frames past the last full chunk are dropped, as in the official code). Decoding runs one latent
frame at a time. Both stream through the network chunk by chunk; every causal layer keeps the
last frames it saw in a `CausalCache`, so a chunked run equals one pass over the whole video.

Layout and parameter names follow the official `wan/modules/vae.py`, so `Wan2.1_VAE.pth` loads
without a key map. `WanVAE` wraps the network with the per-channel latent mean/std and optional
spatial tiling (`TileConfig`) that bounds peak memory.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from scail.animate.checkpoint import assign_weights, read_state_dict
from scail.errors import CheckpointError

if TYPE_CHECKING:
    from scail.stage import ProgressFn

log = logging.getLogger(__name__)

WAN_VAE = "a Wan2.1 VAE checkpoint"
"""What the key check calls the file it expected (`check_state_dict`'s closing question)."""


# Per-channel statistics of the Wan2.1 latent space (official wan/modules/vae.py, WanVAE).
WAN21_LATENT_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN21_LATENT_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip


@dataclass(frozen=True)
class VAEConfig:
    """Architecture of the causal video VAE."""

    dim: int = 96  # base width; stages run at dim * dim_mult
    z_dim: int = 16  # latent channels
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2  # per encoder stage; the decoder has one more
    temporal_downsample: tuple[bool, ...] = (False, True, True)  # per encoder downsample
    latent_mean: tuple[float, ...] = WAN21_LATENT_MEAN
    latent_std: tuple[float, ...] = WAN21_LATENT_STD

    def __post_init__(self) -> None:
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise ValueError("temporal_downsample needs one entry per downsample (len(dim_mult) - 1)")
        if not len(self.latent_mean) == len(self.latent_std) == self.z_dim:
            raise ValueError(f"latent_mean and latent_std need z_dim={self.z_dim} values each")

    @classmethod
    def wan21(cls) -> VAEConfig:
        """The released Wan2.1 VAE (`Wan2.1_VAE.pth`, 126.9M parameters)."""
        return cls()

    @classmethod
    def tiny(cls) -> VAEConfig:
        """Same structure at width 4 (the parity fixture's size); for tests and the tiny preset."""
        return cls(dim=4)

    @property
    def spatial_stride(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_stride(self) -> int:
        return 2 ** sum(self.temporal_downsample)


# ----------------------------------------------------------------------------------------------
# Streaming state
# ----------------------------------------------------------------------------------------------

CACHE_FRAMES = 2  # history a temporal kernel of 3 needs


@dataclass
class CausalCache:
    """The last input frames each causal layer has seen, while a video streams through in chunks.

    A layer that has not run yet has no entry. An entry with zero frames means "started, no
    history": zeros are padded in front, exactly as at the start of the video.
    """

    history: dict[nn.Module, torch.Tensor] = field(default_factory=dict)

    def get(self, layer: nn.Module) -> torch.Tensor | None:
        return self.history.get(layer)

    def set(self, layer: nn.Module, frames: torch.Tensor) -> None:
        self.history[layer] = frames


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------


class CausalConv3d(nn.Conv3d):
    """Conv3d padded only towards the past in time (zeros, or the cached previous frames)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        kernel_size: int | tuple[int, int, int],
        stride: int | tuple[int, int, int] = 1,
        padding: int | tuple[int, int, int] = 0,
    ) -> None:
        pt, ph, pw = (padding,) * 3 if isinstance(padding, int) else padding
        # the conv zero-pads space itself; time is padded here, all of it in front (frame t sees
        # frames <= t), with cached frames where there are some
        super().__init__(in_dim, out_dim, kernel_size, stride=stride, padding=(0, ph, pw))
        self.time_pad = 2 * pt

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        """x: (B, C, T, H, W) -> (B, C', T', H', W'); with a cache, x continues the cached stream."""
        front = self.time_pad
        if cache is not None and self.time_pad > 0:
            history = cache.get(self)
            if history is not None:
                x = torch.cat([history, x], dim=2)  # (B, C, h + T, H, W)
                front -= history.shape[2]
            cache.set(self, x[:, :, -CACHE_FRAMES:].clone())
        if front > 0:
            x = F.pad(x, (0, 0, 0, 0, front, 0))
        return super().forward(x)


class RMSNorm(nn.Module):
    """Normalise over channels (dim 1) to unit RMS, then scale by a learned gain `gamma`."""

    def __init__(self, dim: int, is_video: bool = True) -> None:
        super().__init__()
        self.scale = dim**0.5
        # official: gamma is (C, 1, 1, 1) for video layers and (C, 1, 1) for per-frame ones
        self.gamma = nn.Parameter(torch.ones(dim, 1, 1, 1) if is_video else torch.ones(dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1).mul_(self.scale).mul_(self.gamma)  # in place: one temporary


def _per_frame(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D op to every frame: (B, C, T, H, W) -> (B, C', T, H', W')."""
    b, c, t, h, w = x.shape
    y = fn(x.transpose(1, 2).reshape(b * t, c, h, w))  # (B*T, C', H', W')
    return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)


class ResidualBlock(nn.Module):
    """norm -> SiLU -> conv -> norm -> SiLU -> conv, plus a (1x1x1 conv) shortcut."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        # indices are the checkpoint's (residual.0.gamma, residual.2.weight, ...); 5 was dropout
        self.residual = nn.Sequential(
            RMSNorm(in_dim),
            nn.SiLU(inplace=True),  # on the norm's fresh output
            CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim),
            nn.SiLU(inplace=True),
            nn.Identity(),
            CausalConv3d(out_dim, out_dim, 3, padding=1),
        )
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """x: (B, C_in, T, H, W) -> (B, C_out, T, H, W)."""
        h = self.shortcut(x)
        return _run(self.residual, x, cache) + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no attention across time)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, is_video=False)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)
        nn.init.zeros_(self.proj.weight)  # official init: the block starts as an identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, T, H, W) -> same shape."""
        return x + _per_frame(self._attend, x)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape  # n = B*T frames
        qkv = self.to_qkv(self.norm(x))  # (n, 3C, H, W)
        qkv = qkv.reshape(n, 1, 3 * c, h * w).transpose(2, 3)  # (n, 1, HW, 3C)
        q, k, v = qkv.contiguous().chunk(3, dim=-1)  # (n, 1, HW, C) each
        o = F.scaled_dot_product_attention(q, k, v)  # (n, 1, HW, C)
        o = o.squeeze(1).transpose(1, 2).reshape(n, c, h, w)  # (n, C, H, W)
        return self.proj(o)


class Resample(nn.Module):
    """2x spatial down/upsampling, optionally with 2x in time (a causal conv over time)."""

    def __init__(self, dim: int, is_up: bool, use_time: bool) -> None:
        super().__init__()
        self.is_up = is_up
        self.time_conv: CausalConv3d | None
        if is_up:
            # nearest-exact 2x, then a conv that halves the channels
            self.resample = nn.Sequential(
                nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                nn.Conv2d(dim, dim // 2, 3, padding=1),
            )
            # predicts two frames per input frame, stacked on channels
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0)) if use_time else None
        else:
            # pad right/bottom by one, then a stride-2 conv
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1)) if use_time else None

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """Up: (B, C, T, H, W) -> (B, C/2, T', 2H, 2W). Down: -> (B, C, T', H/2, W/2)."""
        if self.is_up and self.time_conv is not None:
            x = self._double_frames(x, cache)
        x = _per_frame(self.resample, x)
        if not self.is_up and self.time_conv is not None:
            x = self._halve_frames(x, cache)
        return x

    def _double_frames(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        assert self.time_conv is not None
        if cache.get(self.time_conv) is None:
            # official: the first chunk (the first latent frame) stays one frame; the time
            # conv's stream starts at the next chunk, with zeros before it
            cache.set(self.time_conv, x[:, :, :0])
            return x
        b, c, t, h, w = x.shape
        x = self.time_conv(x, cache)  # (B, 2C, T, H, W)
        x = x.reshape(b, 2, c, t, h, w).permute(0, 2, 3, 1, 4, 5)  # (B, C, T, 2, H, W)
        return x.reshape(b, c, 2 * t, h, w)  # frames interleaved: t0a, t0b, t1a, ...

    def _halve_frames(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        assert self.time_conv is not None
        previous = cache.get(self.time_conv)
        cache.set(self.time_conv, x[:, :, -1:].clone())
        if previous is None:
            return x  # official: the first chunk (the first frame) passes through unchanged
        # kernel 3, stride 2 over [last frame of the previous chunk, this chunk]
        return self.time_conv(torch.cat([previous, x], dim=2))  # (B, C, T/2, H, W)


_Streamed = (CausalConv3d, ResidualBlock, Resample)


def _run(layers: nn.Sequential, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
    """Run a Sequential, handing the cache to the layers that stream."""
    for layer in layers:
        x = layer(x, cache) if isinstance(layer, _Streamed) else layer(x)
    return x


# ----------------------------------------------------------------------------------------------
# Encoder, decoder
# ----------------------------------------------------------------------------------------------


class Encoder(nn.Module):
    """Video (B, 3, T, H, W) -> (B, 2*z_dim, F, H/8, W/8) moments (mean, log-variance)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        dims = [cfg.dim * m for m in (1, *cfg.dim_mult)]  # [96, 96, 192, 384, 384]
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        blocks: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(itertools.pairwise(dims)):
            for j in range(cfg.num_res_blocks):
                blocks.append(ResidualBlock(in_dim if j == 0 else out_dim, out_dim))
            if i < len(cfg.dim_mult) - 1:
                blocks.append(Resample(out_dim, is_up=False, use_time=cfg.temporal_downsample[i]))
        self.downsamples = nn.Sequential(*blocks)
        top = dims[-1]
        self.middle = nn.Sequential(ResidualBlock(top, top), AttentionBlock(top), ResidualBlock(top, top))
        self.head = nn.Sequential(
            RMSNorm(top), nn.SiLU(inplace=True), CausalConv3d(top, 2 * cfg.z_dim, 3, padding=1)
        )

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """One chunk: 1 frame first, then 4 frames per call (continuing `cache`)."""
        x = self.conv1(x, cache)
        x = _run(self.downsamples, x, cache)
        x = _run(self.middle, x, cache)
        return _run(self.head, x, cache)


class Decoder(nn.Module):
    """Latents (B, z_dim, F, h, w) -> video (B, 3, T, 8h, 8w), unclamped."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        mults = (cfg.dim_mult[-1], *reversed(cfg.dim_mult))
        dims = [cfg.dim * m for m in mults]  # [384, 384, 384, 192, 96]
        temporal_upsample = tuple(reversed(cfg.temporal_downsample))
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        top = dims[0]
        self.middle = nn.Sequential(ResidualBlock(top, top), AttentionBlock(top), ResidualBlock(top, top))
        blocks: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(itertools.pairwise(dims)):
            in_dim = in_dim // 2 if i > 0 else in_dim  # every upsample halves the channels
            for j in range(cfg.num_res_blocks + 1):
                blocks.append(ResidualBlock(in_dim if j == 0 else out_dim, out_dim))
            if i < len(cfg.dim_mult) - 1:
                blocks.append(Resample(out_dim, is_up=True, use_time=temporal_upsample[i]))
        self.upsamples = nn.Sequential(*blocks)
        out = dims[-1]
        self.head = nn.Sequential(RMSNorm(out), nn.SiLU(inplace=True), CausalConv3d(out, 3, 3, padding=1))

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """One latent frame per call (continuing `cache`): 1 video frame first, then 4 each."""
        x = self.conv1(x, cache)
        x = _run(self.middle, x, cache)
        x = _run(self.upsamples, x, cache)
        return _run(self.head, x, cache)


class VideoVAE(nn.Module):
    """Encoder + decoder with the official chunking; its state dict is `Wan2.1_VAE.pth`'s."""

    def __init__(self, cfg: VAEConfig, with_encoder: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        if with_encoder:  # without: the decoding half alone (`WanVAE.set_decode_dtype`'s copy)
            self.encoder = Encoder(cfg)
            self.conv1 = CausalConv3d(2 * cfg.z_dim, 2 * cfg.z_dim, 1)  # moments projection
        self.conv2 = CausalConv3d(cfg.z_dim, cfg.z_dim, 1)  # latent projection before decoding
        self.decoder = Decoder(cfg)

    def encode(self, video: torch.Tensor, on_chunk: Callable[[], None] | None = None) -> torch.Tensor:
        """video: (B, 3, T, H, W) -> mu (B, z_dim, F, H/8, W/8), F = 1 + (T - 1) // 4.

        The posterior mean only (the official pipeline never samples). Frames past the last
        full chunk of 4 are dropped.
        """
        stride = self.cfg.temporal_stride
        num_latent = 1 + (video.shape[2] - 1) // stride
        chunks = (video[:, :, 0 if i == 0 else 1 + stride * (i - 1) : 1 + stride * i] for i in range(num_latent))
        return torch.cat(list(self.encode_stream(chunks, on_chunk)), dim=2)

    def encode_stream(
        self, chunks: Iterable[torch.Tensor], on_chunk: Callable[[], None] | None = None
    ) -> Iterator[torch.Tensor]:
        """Encode a video given as consecutive chunks: the first frame alone, then 4 frames each.

        Yields mu (B, z_dim, 1, H/8, W/8) per chunk. Equal, bit for bit, to `encode` of the whole
        video: every layer is either causal with a cache or per frame, and the moments projection
        runs per latent frame too (one 1x1x1 conv over the whole latent would sum in another
        order for another length, so a prefix would differ from the full encode by float rounding).
        """
        stride = self.cfg.temporal_stride
        cache = CausalCache()
        for i, chunk in enumerate(chunks):
            want = 1 if i == 0 else stride
            if chunk.shape[2] != want:
                raise ValueError(f"encode_stream: chunk {i} has {chunk.shape[2]} frames, expected {want}")
            moments = self.conv1(self.encoder(chunk, cache))  # (B, 2Z, 1, h, w)
            if on_chunk is not None:
                on_chunk()
            yield moments[:, : self.cfg.z_dim]  # the log-variance half is unused

    def decode(self, z: torch.Tensor, on_chunk: Callable[[], None] | None = None) -> torch.Tensor:
        """z: (B, z_dim, F, h, w) -> video (B, 3, T, 8h, 8w) float32, T = 1 + 4 (F - 1), unclamped."""
        out: torch.Tensor | None = None
        t = 0
        for frames in self.decode_stream(z, on_chunk):  # (B, 3, 1 or 4, H, W)
            if out is None:
                b, c, _, h, w = frames.shape
                total = 1 + self.cfg.temporal_stride * (z.shape[2] - 1)
                out = frames.new_empty(b, c, total, h, w, dtype=torch.float32)  # filled in place
            out[:, :, t : t + frames.shape[2]] = frames
            t += frames.shape[2]
        assert out is not None and t == out.shape[2]
        return out

    def decode_stream(self, z: torch.Tensor, on_chunk: Callable[[], None] | None = None) -> Iterator[torch.Tensor]:
        """Decode latent frame by latent frame: yields (B, 3, 1, H, W) first, then (B, 3, 4, H, W) each.

        Only one latent frame's activations and the causal caches are alive at a time, so memory
        does not grow with the length. A prefix of the latent decodes to exactly (bit for bit) the
        same frames as the whole latent: the latent projection `conv2` runs per frame (see
        `encode_stream` for why), the decoder is causal with its cache.
        """
        cache = CausalCache()
        for i in range(z.shape[2]):
            frames = self.decoder(self.conv2(z[:, :, i : i + 1]), cache)  # (B, 3, 1 or 4, H, W)
            if on_chunk is not None:
                on_chunk()
            yield frames


# ----------------------------------------------------------------------------------------------
# Spatial tiling
# ----------------------------------------------------------------------------------------------


UNTILED_DECODE_GIB_PER_MPX = 24.0
"""Peak memory of a whole-frame decode per megapixel of output frame (float32): 20.7 GiB/Mpx measured
on an H200 at 512x896 (18-20 on the CPU; the steady 4-frame chunk dominates), plus a margin
(benchmarks/README.md, bench_vae.py)."""


def untiled_decode_bytes(h_px: int, w_px: int) -> int:
    """What decoding whole (h_px, w_px) frames needs on top of what is already allocated (bytes)."""
    return int((UNTILED_DECODE_GIB_PER_MPX * h_px * w_px / 1e6 + 1.0) * 2**30)


@dataclass(frozen=True)
class TileConfig:
    """Spatial tiles for encode/decode, in latent pixels (x8 for video pixels).

    Each tile runs through the whole network on its own (all frames, streamed in time), and
    overlapping tiles are blended with linear ramps. Peak memory then scales with the tile, not
    the frame. The result is close to, not equal to, the untiled one: near a tile edge the
    convolutions see zero padding where the untiled run sees the neighbouring pixels.
    """

    size: int = 32  # tile side in latent pixels (256 video pixels)
    overlap: int = 8  # latent pixels shared by neighbouring tiles

    def __post_init__(self) -> None:
        if self.size < 2 or not 0 <= self.overlap <= self.size // 2:
            raise ValueError(f"TileConfig: need size >= 2 and 0 <= overlap <= size/2, got {self}")


def _tile_spans(length: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Start/end of each tile along an axis; the last tile is aligned to the end."""
    if length <= size:
        return [(0, length)]
    stride = size - overlap
    starts = [*list(range(0, length - size, stride)), length - size]
    return [(s, s + size) for s in starts]


def _ramp(spans: list[tuple[int, int]], k: int, scale: int, device: torch.device) -> torch.Tensor:
    """Blend weight of tile k along one axis: ramps over the parts shared with its neighbours."""
    start, end = spans[k]
    n = (end - start) * scale
    w = torch.ones(n, dtype=torch.float32, device=device)
    if k > 0:
        shared = (spans[k - 1][1] - start) * scale
        w[:shared] = (torch.arange(shared, device=device) + 0.5) / shared
    if k < len(spans) - 1:
        shared = (end - spans[k + 1][0]) * scale
        w[n - shared :] = torch.minimum(
            w[n - shared :], (torch.arange(shared, 0, -1, device=device) - 0.5) / shared
        )
    return w


def _tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    grid_hw: tuple[int, int],
    in_scale: int,
    out_scale: int,
    tile: TileConfig,
) -> torch.Tensor:
    """Run `fn` on overlapping spatial tiles of x (B, C, T, H, W) and blend the outputs.

    `grid_hw` is the latent grid; a latent span [a, b) is x[..., a*in_scale : b*in_scale] in the
    input and out[..., a*out_scale : b*out_scale] in the output.
    """
    rows = _tile_spans(grid_hw[0], tile.size, tile.overlap)
    cols = _tile_spans(grid_hw[1], tile.size, tile.overlap)
    out: torch.Tensor | None = None
    weight_sum = torch.zeros(grid_hw[0] * out_scale, grid_hw[1] * out_scale, device=x.device)
    for i, (r0, r1) in enumerate(rows):
        wy = _ramp(rows, i, out_scale, x.device)
        for j, (c0, c1) in enumerate(cols):
            wx = _ramp(cols, j, out_scale, x.device)
            y = fn(x[..., r0 * in_scale : r1 * in_scale, c0 * in_scale : c1 * in_scale]).float()
            if out is None:
                out = y.new_zeros(*y.shape[:3], grid_hw[0] * out_scale, grid_hw[1] * out_scale)
            weight = wy[:, None] * wx[None, :]  # (h, w)
            out[..., r0 * out_scale : r1 * out_scale, c0 * out_scale : c1 * out_scale] += y * weight
            weight_sum[r0 * out_scale : r1 * out_scale, c0 * out_scale : c1 * out_scale] += weight
    assert out is not None
    return out.div_(weight_sum)


# ----------------------------------------------------------------------------------------------
# The wrapper users call
# ----------------------------------------------------------------------------------------------


class WanVAE:
    """VideoVAE plus the latent normalisation: video in [-1, 1] <-> normalised latents.

    Latents are `(mu - mean) / std` per channel (official: `(mu - mean) * (1 / std)`), returned in
    float32 whatever the network's dtype.
    """

    def __init__(self, model: VideoVAE) -> None:
        self.model = model.eval().requires_grad_(False)
        self.cfg = model.cfg
        self.decoding = self.model
        """The network `decode` runs: `model`, or its decoding half in another dtype (`set_decode_dtype`)."""
        self._set_stats()

    def _set_stats(self) -> None:
        device = self.device
        self.mean = torch.tensor(self.cfg.latent_mean, dtype=torch.float32, device=device)
        self.inv_std = 1.0 / torch.tensor(self.cfg.latent_std, dtype=torch.float32, device=device)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> WanVAE:
        """Move (and cast) the network in place; returns self. A decoding copy in its own dtype moves
        along and keeps that dtype."""
        self.model.to(device=device, dtype=dtype)
        if self.decoding is not self.model:
            self.decoding.to(device=device)
        self._set_stats()
        return self

    @property
    def decode_dtype(self) -> torch.dtype:
        return next(self.decoding.parameters()).dtype

    def set_decode_dtype(self, dtype: torch.dtype) -> None:
        """Decode in `dtype`: a copy of the decoding half (latent projection + decoder, ~73M parameters)
        in that dtype, the encoder untouched (fast mode's bfloat16 decode: 3.5 % relative error on
        the official fixture's random weights, tests/animate/test_vae.py); the network's own dtype
        drops the copy."""
        if dtype == self.dtype:
            self.decoding = self.model
            return
        with torch.device("meta"):
            half = VideoVAE(self.cfg, with_encoder=False)
        state = {k: v for k, v in self.model.state_dict().items() if k.startswith(("conv2.", "decoder."))}
        half.load_state_dict(state, assign=True)  # the model's tensors, then cast: a copy in `dtype`
        self.decoding = half.to(dtype=dtype).eval().requires_grad_(False)

    def normalize(self, mu: torch.Tensor) -> torch.Tensor:
        """mu (B, Z, F, h, w) any dtype -> normalised latents, float32."""
        view = (1, -1, 1, 1, 1)
        return (mu.float() - self.mean.view(view)) * self.inv_std.view(view)

    def denormalize(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, Z, F, h, w) -> the decoder's input scale, float32."""
        view = (1, -1, 1, 1, 1)
        return latent.float() / self.inv_std.view(view) + self.mean.view(view)

    @torch.inference_mode()
    def encode(
        self, video: torch.Tensor, tile: TileConfig | None = None, on_progress: ProgressFn | None = None
    ) -> torch.Tensor:
        """Encode a video.

        Args:
            video: (B, 3, T, H, W) in [-1, 1]; H and W multiples of 8. A single image is T=1.
            tile: encode in overlapping spatial tiles (bounded memory, approximate), or None.
            on_progress: called as (done, total) after each chunk of frames.

        Returns:
            (B, z_dim, F, H/8, W/8) float32 normalised latents, F = 1 + (T - 1) // 4.
        """
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"encode expects video (B, 3, T, H, W), got {tuple(video.shape)}")
        s = self.cfg.spatial_stride
        _b, _, t, h, w = video.shape
        if h % s or w % s:
            raise ValueError(f"encode needs H and W divisible by {s}, got {h}x{w}")
        dropped = (t - 1) % self.cfg.temporal_stride
        if dropped:
            log.warning(
                "VAE encode: %d trailing frame(s) of %d do not fill a chunk and are dropped", dropped, t
            )
        video = video.to(device=self.device, dtype=self.dtype)
        grid = (h // s, w // s)
        counter = _Counter(on_progress, (1 + (t - 1) // self.cfg.temporal_stride) * _num_tiles(grid, tile))
        if tile is None:
            return self.normalize(self.model.encode(video, counter.step))
        mu = _tiled(lambda v: self.model.encode(v, counter.step), video, grid, s, 1, tile)
        return self.normalize(mu)

    @torch.inference_mode()
    def decode(
        self, latent: torch.Tensor, tile: TileConfig | None = None, on_progress: ProgressFn | None = None
    ) -> torch.Tensor:
        """Decode latents.

        Args:
            latent: (B, z_dim, F, h, w) normalised latents (as `encode` returns).
            tile: decode in overlapping spatial tiles (bounded memory, approximate), or None.
            on_progress: called as (done, total) after each latent frame.

        Returns:
            (B, 3, 1 + 4 (F - 1), 8h, 8w) float32 video clamped to [-1, 1].
        """
        if latent.ndim != 5 or latent.shape[1] != self.cfg.z_dim:
            raise ValueError(
                f"decode expects latents (B, {self.cfg.z_dim}, F, h, w), got {tuple(latent.shape)}"
            )
        z = self.denormalize(latent.to(self.device)).to(self.decode_dtype)
        grid = (z.shape[3], z.shape[4])
        counter = _Counter(on_progress, z.shape[2] * _num_tiles(grid, tile))
        if tile is None:
            video = self.decoding.decode(z, counter.step)
        else:
            video = _tiled(
                lambda t: self.decoding.decode(t, counter.step), z, grid, 1, self.cfg.spatial_stride, tile
            )
        return video.float().clamp_(-1.0, 1.0)


    @torch.inference_mode()
    def encode_stream(
        self, chunks: Iterable[torch.Tensor], on_chunk: Callable[[], None] | None = None
    ) -> Iterator[torch.Tensor]:
        """Encode a video streamed as chunks (B, 3, 1 | 4, H, W) in [-1, 1]: the first frame alone,
        then 4 frames each. Yields (B, z_dim, 1, H/8, W/8) float32 normalised latents, bit for bit
        the frames of `encode` of the whole video (untiled); only one chunk is in memory at a time."""
        def moved() -> Iterator[torch.Tensor]:
            for chunk in chunks:
                yield chunk.to(device=self.device, dtype=self.dtype)

        for mu in self.model.encode_stream(moved(), on_chunk):
            yield self.normalize(mu)

    @torch.inference_mode()
    def decode_stream(
        self, latent: torch.Tensor, tile: TileConfig | None = None, on_chunk: Callable[[], None] | None = None
    ) -> Iterator[torch.Tensor]:
        """Decode latent frame by latent frame: yields (B, 3, 1, 8h, 8w), then (B, 3, 4, 8h, 8w) pieces
        clamped to [-1, 1], bit for bit the frames of `decode(latent, tile)`.

        Peak memory is that of one latent frame (per tile), whatever the length: with tiles, every
        tile keeps its own causal cache and the tiles of one latent frame are blended as `decode` does.
        """
        if latent.ndim != 5 or latent.shape[1] != self.cfg.z_dim:
            raise ValueError(
                f"decode expects latents (B, {self.cfg.z_dim}, F, h, w), got {tuple(latent.shape)}"
            )
        z = self.denormalize(latent.to(self.device)).to(self.decode_dtype)
        if tile is None:
            for frames in self.decoding.decode_stream(z, on_chunk):
                yield frames.float().clamp_(-1.0, 1.0)
            return
        grid = (z.shape[3], z.shape[4])
        s = self.cfg.spatial_stride
        rows = _tile_spans(grid[0], tile.size, tile.overlap)
        cols = _tile_spans(grid[1], tile.size, tile.overlap)
        tiles = [(r, c) for r in range(len(rows)) for c in range(len(cols))]
        streams = [
            self.decoding.decode_stream(z[..., rows[r][0] : rows[r][1], cols[c][0] : cols[c][1]]) for r, c in tiles
        ]
        weights = [
            _ramp(rows, r, s, z.device)[:, None] * _ramp(cols, c, s, z.device)[None, :] for r, c in tiles
        ]  # (h, w) each
        for pieces in zip(*streams, strict=True):  # one latent frame of every tile
            out = pieces[0].new_zeros(*pieces[0].shape[:3], grid[0] * s, grid[1] * s, dtype=torch.float32)
            weight_sum = torch.zeros(grid[0] * s, grid[1] * s, device=z.device)
            for (r, c), y, weight in zip(tiles, pieces, weights, strict=True):
                region = (slice(rows[r][0] * s, rows[r][1] * s), slice(cols[c][0] * s, cols[c][1] * s))
                out[..., region[0], region[1]] += y.float() * weight
                weight_sum[region[0], region[1]] += weight
            if on_chunk is not None:
                on_chunk()
            yield out.div_(weight_sum).clamp_(-1.0, 1.0)


def _num_tiles(grid_hw: tuple[int, int], tile: TileConfig | None) -> int:
    if tile is None:
        return 1
    return len(_tile_spans(grid_hw[0], tile.size, tile.overlap)) * len(
        _tile_spans(grid_hw[1], tile.size, tile.overlap)
    )


class _Counter:
    """Turns per-chunk ticks into on_progress(done, total) calls."""

    def __init__(self, on_progress: ProgressFn | None, total: int) -> None:
        self.on_progress, self.total, self.done = on_progress, total, 0

    def step(self) -> None:
        self.done += 1
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def build_vae(
    cfg: VAEConfig, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> WanVAE:
    """A VAE with random weights (PyTorch default init), e.g. for the tiny preset or benchmarks."""
    model = VideoVAE(cfg).to(device=device, dtype=dtype)
    return WanVAE(model)


def load_vae(
    path: Path,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    cfg: VAEConfig | None = None,
) -> WanVAE:
    """Load `Wan2.1_VAE.pth` (a plain state dict) or a safetensors file with the same key names.

    The network is built on the meta device and the file's tensors are assigned to it, so the
    weights exist once in memory. Without `cfg` the width and latent channels are read from the
    file (the real VAE gives `VAEConfig.wan21()`). Raises CheckpointError if the file is missing,
    unreadable, or its keys/shapes do not match.
    """
    path = Path(path)
    state = read_state_dict(path)
    cfg = cfg or _infer_config(state, path)
    with torch.device("meta"):
        model = VideoVAE(cfg)
    log.info("loading VAE %s (dim %d, %s, %s)", path, cfg.dim, dtype, device)
    return WanVAE(assign_weights(model, state, dtype, device, path, WAN_VAE))


def _infer_config(state: dict[str, torch.Tensor], path: Path) -> VAEConfig:
    if "encoder.conv1.weight" not in state or "conv2.weight" not in state:
        hint = (
            " (looks like a diffusers AutoencoderKLWan file; use the Wan-named Wan2.1_VAE.pth)"
            if any(k.startswith(("encoder.down_blocks", "quant_conv")) for k in state)
            else ""
        )
        raise CheckpointError(
            f"{path}: no 'encoder.conv1.weight'/'conv2.weight'; not a Wan2.1 VAE checkpoint{hint}"
        )
    return VAEConfig(dim=state["encoder.conv1.weight"].shape[0], z_dim=state["conv2.weight"].shape[0])



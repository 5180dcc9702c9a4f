"""The SCAIL-2 DiT: SCAIL-Preview's DiT plus a 28-channel identity-mask stream, clean-history
channels, extra reference frames and mode-dependent RoPE positions.

Specification: research/scail2-model.md §1 (official `wan/modules/model_scail2.py::SCAIL2Model`);
parity with the official code is checked against fixtures/scail2. Everything not listed here is
SCAIL-Preview's (`scail.animate.dit`): blocks, head, time/text/CLIP embeddings, precision rules.

What SCAIL-2 adds:

* `patch_embedding_mask`, one Conv3d (28 -> D, kernel = stride = patch) whose output is *added* to
  the patch embedding of the reference (its 28-channel identity mask), of the pose/driving video
  (the driving mask) and of every extra reference (its mask). The video frames get a zero mask, so
  they receive only this conv's bias (official: `null_noisy_mask`).
* The 4 constant channels of the noisy video are the history mask: 1 on the leading latent frames
  that hold a clean anchor (long-video continuation), else 0 as in Preview.
* N extra references, each one latent frame, prepended to the sequence:

      [ extra refs (N*hp*wp) | ref (hp*wp) | video (T*hp*wp) | pose (T*(hp/2)*(wp/2)) ]

* RoPE positions (t, h, w) by mode (`replace`) and N (`scail2_rope_tables`):

      segment            animation                replacement
      extra ref k        (k, i, j)                (k, 120 + i, j)
      reference          (N, i, j)                (N, 120 + i, j)
      video frame f      (N + 1 + f, i, j)        (N + f, i, j)
      pose frame f       t as video; h, w: 2x2-averaged factors at (2a.., 120 + 2b..) (as Preview)

  With N = 0 in animation mode this is exactly SCAIL-Preview's table. official: the pose factors
  are averaged complex factors (|f| < 1), not ComfyUI's unit rotations at half positions.

The end-to-end and pose-driven modes feed the DiT the same way: only the video that becomes
`pose_latent` differs (the raw driving video or its skeleton render).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn as nn

from scail.animate.dit import (
    DiT,
    DiTConfig,
    _segment_rope_tables,
    check_batched_shapes,
    tokens_of,
)

MASK_COLOURS = 7
"""Colours of the identity masks: white, red, green, blue, yellow, magenta, cyan (scail2-model.md §2.1)."""


@dataclass(frozen=True)
class SCAIL2Config(DiTConfig):
    """SCAIL-Preview's hyper-parameters plus the mask stream's width and the replacement RoPE shift."""

    mask_dim: int = 4 * MASK_COLOURS  # 7 colour planes x the 4 pixel frames of a latent frame
    # replacement mode: reference (and extra reference) tokens sit at h + 120 in the RoPE grid
    replace_ref_rope_h: int = 120

    @classmethod
    def of(cls, base: DiTConfig, mask_dim: int = 4 * MASK_COLOURS) -> SCAIL2Config:
        """SCAIL-Preview's hyper-parameters `base` with the mask stream."""
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(DiTConfig)}
        return cls(**fields, mask_dim=mask_dim)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SCAIL2Config:
        """As `DiTConfig.from_json`, reading `mask_dim` from the official `SCAIL2Model` kwargs."""
        d = dict(data.get("constructor_kwargs", data))
        return cls.of(DiTConfig.from_json(data), int(d.get("mask_dim", 4 * MASK_COLOURS)))

    @classmethod
    def scail_14b(cls) -> SCAIL2Config:
        """SCAIL-2 14B (16,395,544,384 parameters: SCAIL-Preview's plus the mask conv)."""
        return cls.of(DiTConfig.scail_14b())

    @classmethod
    def tiny(cls) -> SCAIL2Config:
        """`DiTConfig.tiny` with the mask stream (tests and the tiny-random-scail-2 preset)."""
        return cls.of(DiTConfig.tiny())


# --------------------------------------------------------------------------------------------------
# RoPE
# --------------------------------------------------------------------------------------------------


def scail2_rope_tables(
    config: DiTConfig,
    frames: int,
    grid_h: int,
    grid_w: int,
    device: torch.device,
    extra_refs: int = 0,
    replace: bool = False,
    replace_ref_rope_h: int = 120,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (L, Dh/2) for [extra refs | ref | video | pose], in `config.rope_dtype`.

    Args:
        frames: T, latent frames of the video (and pose) segment.
        grid_h, grid_w: hp, wp, the token grid of one video frame.
        extra_refs: N, the number of extra reference frames prepended to the sequence.
        replace: replacement mode (official `replace_flag`): references at h + `replace_ref_rope_h`,
            video and pose from t = N instead of N + 1.
    """
    n = extra_refs
    # the extra refs and the reference are frames 0..N of one grid
    return _segment_rope_tables(
        config, frames, grid_h, grid_w, device,
        ref_frames=n + 1, ref_h=replace_ref_rope_h if replace else 0, video_t=n if replace else n + 1,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


class SCAIL2DiT(DiT):
    """SCAIL-2 diffusion transformer: predicts the flow velocity of the video latent.

    The blocks, head, memory options (`set_ffn_chunks`, `set_rows_in_turn`, `compile_blocks`),
    `cast_`, `forward`, `embed` and `run_blocks` are SCAIL-Preview's; `embed_latents` builds the
    SCAIL-2 token sequence, and Preview's `unembed` skips its extra-reference tokens (the
    conditioning's `prefix_tokens`) before the head and un-patchify.
    """

    config: SCAIL2Config

    def __init__(self, config: SCAIL2Config) -> None:
        super().__init__(config)
        self.patch_embedding_mask = nn.Conv3d(
            config.mask_dim, config.dim, kernel_size=config.patch_size, stride=config.patch_size
        )

    def embed_latents(
        self,
        x: torch.Tensor,
        ref_latent: torch.Tensor,
        pose_latent: torch.Tensor,
        *,
        ref_mask: torch.Tensor | None = None,
        driving_mask: torch.Tensor | None = None,
        extra_refs: torch.Tensor | None = None,
        extra_ref_masks: torch.Tensor | None = None,
        history_frames: int = 0,
        replace: bool = False,
    ) -> tuple[torch.Tensor, int, tuple[torch.Tensor, torch.Tensor]]:
        """The SCAIL-2 token sequence [extra refs | ref | video | pose] (B, L, D) in float32, the
        number of extra-reference tokens before the reference's, and the sequence's RoPE tables.

        `forward` and `embed` (SCAIL-Preview's) pass their keyword inputs here.

        Args:
            x, ref_latent, pose_latent: as `DiT.forward` (layout (B, T, C, h, w); `pose_latent` is
                the skeleton render's latent, or the raw driving video's in end-to-end mode).
            ref_mask: (B | 1, 1, 28, h, w) 28-channel identity mask of the reference
                (`preprocess2.compress_mask`). Required.
            driving_mask: (B | 1, T, 28, h/2, w/2) 28-channel mask of the driving video. Required.
            extra_refs: (B | 1, N, 16, h, w) latents of N extra references (one frame each), or None.
            extra_ref_masks: (B | 1, N, 28, h, w) their masks; given exactly when `extra_refs` is.
            history_frames: the leading latent frames of x that are a clean history anchor
                (history mask 1 there); 0 outside long-video continuation.
            replace: replacement mode (official `replace_flag`); False: animation.
        """
        cfg = self.config
        b, t, _, h, w = x.shape
        ref_mask, driving_mask = _check_scail2_inputs(
            cfg, x, ref_mask, driving_mask, extra_refs, extra_ref_masks, history_frames
        )
        dtype = self.patch_embedding.weight.dtype
        pt, ph, pw = cfg.patch_size
        hp, wp = h // ph, w // pw
        n = 0 if extra_refs is None else int(extra_refs.shape[1])

        def channels_first(lat: torch.Tensor) -> torch.Tensor:  # (B|1, F, C, y, x) -> (B, C, F, y, x)
            return lat.to(dtype).expand(b, -1, -1, -1, -1).transpose(1, 2)

        with_mask = partial(self.with_mask, b=b)

        # noisy video: the history mask (1 on the clean anchor frames) in the 4 mask channels
        video_mask = torch.zeros(1, t, cfg.mask_channels, h, w, dtype=dtype, device=x.device)
        video_mask[:, :history_frames] = 1.0
        main = torch.cat([with_mask(ref_latent, 1.0), with_mask(x, video_mask)], dim=2)  # (B, 20, 1+T, h, w)
        main = self.patch_embedding(main)  # (B, D, 1+T, hp, wp)
        mask_conv = self.patch_embedding_mask
        # official: the mask conv sees [ref mask | zeros(T)]; a zero frame's output is the bias alone
        main[:, :, :1] += mask_conv(channels_first(ref_mask))
        if mask_conv.bias is not None:
            main[:, :, 1:] += mask_conv.bias.to(main.dtype)[:, None, None, None]
        pose = self.patch_embedding_pose(with_mask(pose_latent, 1.0)) + mask_conv(channels_first(driving_mask))
        parts = [tokens_of(main), tokens_of(pose)]  # (B, (1+T)*hp*wp, D), (B, T*hp/2*wp/2, D)
        if extra_refs is not None and extra_ref_masks is not None:
            extra = self.patch_embedding(with_mask(extra_refs, 1.0)) + mask_conv(channels_first(extra_ref_masks))
            parts.insert(0, tokens_of(extra))  # (B, N*hp*wp, D), before the reference
        tokens = torch.cat(parts, dim=1).float()  # (B, L, D) residual stream in float32
        rope = self.cached_rope(  # built once per (shape, N, mode, device) and kept
            (t // pt, hp, wp, n, replace, str(x.device)),
            lambda: scail2_rope_tables(cfg, t // pt, hp, wp, x.device, n, replace, cfg.replace_ref_rope_h),
        )
        return tokens, n * hp * wp, rope


def _check_scail2_inputs(
    cfg: SCAIL2Config,
    x: torch.Tensor,
    ref_mask: torch.Tensor | None,
    driving_mask: torch.Tensor | None,
    extra_refs: torch.Tensor | None,
    extra_ref_masks: torch.Tensor | None,
    history_frames: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raise ValueError naming the SCAIL-2 input whose shape does not fit x (B, T, C, h, w); return
    the two masks (no longer optional)."""
    b, t, c, h, w = x.shape
    if ref_mask is None or driving_mask is None:
        raise ValueError("SCAIL-2 needs ref_mask and driving_mask (28-channel identity masks)")
    if (extra_refs is None) != (extra_ref_masks is None):
        raise ValueError("extra_refs and extra_ref_masks go together: give both or neither")
    m = cfg.mask_dim
    expected: dict[str, tuple[torch.Tensor, tuple[int, ...]]] = {
        "ref_mask": (ref_mask, (1, m, h, w)),
        "driving_mask": (driving_mask, (t, m, h // 2, w // 2)),
    }
    if extra_refs is not None and extra_ref_masks is not None:
        n = int(extra_refs.shape[1]) if extra_refs.dim() == 5 else -1
        expected["extra_refs"] = (extra_refs, (max(n, 1), c, h, w))
        expected["extra_ref_masks"] = (extra_ref_masks, (max(n, 1), m, h, w))
    check_batched_shapes(expected, b)
    if not 0 <= history_frames <= t:
        raise ValueError(f"history_frames must be in [0, {t}], got {history_frames}")
    return ref_mask, driving_mask


def build_dit(config: DiTConfig) -> DiT:
    """The DiT for `config`: SCAIL-2's when it is a `SCAIL2Config` (a checkpoint with a mask conv)."""
    return SCAIL2DiT(config) if isinstance(config, SCAIL2Config) else DiT(config)

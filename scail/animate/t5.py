"""The umT5-XXL text encoder (encoder half only), as Wan2.1 and SCAIL run it.

Architecture (research/scail-model.md §2): token embedding -> 24 pre-norm blocks -> RMS norm.
Each block has its own bidirectional relative-position bias (umT5: not shared between layers),
self-attention without the 1/sqrt(Dh) scale (T5 folds it into the weights) and a gated tanh-GELU
FFN `fc2(fc1(x) * gelu(gate(x)))`. Module and parameter names equal the official `T5Encoder`, so
`models_t5_umt5-xxl-enc-bf16.pth` loads without renaming.

Pipeline behaviour reproduced by `TextEncoder`: prompts are cleaned, tokenized to exactly 512
ids (`</s>` appended, pad id 0), encoded with the padding masked out of attention, and each
output is cut to its real length (official wan branch); the DiT then zero-pads the text context
back to 512 rows (SAT branch: `context * mask`, the same numbers).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from scail.animate.checkpoint import assign_weights, check_state_dict, read_state_dict

if TYPE_CHECKING:
    from scail.animate.tokenizer import UMT5Tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class T5Config:
    """Hyper-parameters of the umT5 encoder."""

    vocab_size: int = 256384
    dim: int = 4096
    dim_attn: int = 4096  # q/k/v width (num_heads * Dh)
    dim_ffn: int = 10240
    num_heads: int = 64
    num_layers: int = 24
    num_buckets: int = 32  # relative-position buckets, half per direction
    max_distance: int = 128  # distances beyond this share the last bucket
    eps: float = 1e-6
    text_len: int = 512  # official: prompts are padded/truncated to 512 tokens

    @classmethod
    def umt5_xxl(cls) -> T5Config:
        """The released encoder (`models_t5_umt5-xxl-enc-bf16.pth`)."""
        return cls()

    @classmethod
    def tiny(cls) -> T5Config:
        """A small encoder for tests and the tiny-random pipeline (= fixtures/scail/t5/config.json)."""
        return cls(vocab_size=64, dim=32, dim_attn=32, dim_ffn=64, num_heads=4, num_layers=2)


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------


def _clamp_fp16(x: torch.Tensor) -> torch.Tensor:
    """official: float16 activations that overflowed are clamped back to the finite range."""
    if x.dtype == torch.float16 and torch.isinf(x).any():
        limit = torch.finfo(torch.float16).max - 1000
        x = x.clamp(-limit, limit)
    return x


class T5RMSNorm(nn.Module):
    """T5 layer norm: scale by 1/RMS (no mean, no bias), statistics in float32."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt(x.float().pow(2).mean(dim=-1, keepdim=True) + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.type_as(self.weight)
        return self.weight * x


class T5RelativeBias(nn.Module):
    """Bidirectional bucketed relative-position bias, one scalar per (bucket, head)."""

    def __init__(self, num_buckets: int, num_heads: int, max_distance: int) -> None:
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.embedding = nn.Embedding(num_buckets, num_heads)

    def buckets(self, length: int) -> torch.Tensor:
        """(L, L) int64 bucket of key position j relative to query position i."""
        device = self.embedding.weight.device
        rel = torch.arange(length, device=device)[None, :] - torch.arange(length, device=device)[:, None]
        half = self.num_buckets // 2
        bucket = (rel > 0).long() * half  # keys after the query use the upper half
        dist = rel.abs()
        exact = half // 2  # distances below this get a bucket each
        # log-spaced buckets for larger distances (float32, as official); clamp(1) only avoids log(0)
        # in entries that torch.where discards below.
        log_ratio = torch.log(dist.clamp(min=1).float() / exact) / math.log(self.max_distance / exact)
        large = exact + (log_ratio * (half - exact)).long()
        large = large.clamp(max=half - 1)
        return bucket + torch.where(dist < exact, dist, large)

    def forward(self, length: int) -> torch.Tensor:
        """Bias (1, N, L, L) in the weight dtype."""
        bias = self.embedding(self.buckets(length))  # (L, L, N)
        return bias.permute(2, 0, 1)[None].contiguous()  # (1, N, L, L)


class T5Attention(nn.Module):
    """Multi-head self-attention without score scaling; softmax in float32."""

    def __init__(self, dim: int, dim_attn: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim_attn, bias=False)
        self.k = nn.Linear(dim, dim_attn, bias=False)
        self.v = nn.Linear(dim, dim_attn, bias=False)
        self.o = nn.Linear(dim_attn, dim, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (B, L, D) hidden states.
            bias: (B or 1, N, L, L) additive score bias (relative position + padding mask), x's dtype.
        """
        b, n_tok, _ = x.shape
        n = self.num_heads
        q = self.q(x).view(b, n_tok, n, -1).transpose(1, 2)  # (B, N, L, Dh)
        k = self.k(x).view(b, n_tok, n, -1).transpose(1, 2)  # (B, N, L, Dh)
        v = self.v(x).view(b, n_tok, n, -1).transpose(1, 2)  # (B, N, L, Dh)
        scores = q @ k.transpose(-1, -2) + bias  # (B, N, L, L), no 1/sqrt(Dh) in T5
        attn = F.softmax(scores.float(), dim=-1).type_as(scores)
        out = (attn @ v).transpose(1, 2).reshape(b, n_tok, -1)  # (B, L, N*Dh)
        return self.o(out)  # (B, L, D)


class T5FeedForward(nn.Module):
    """Gated-GELU FFN: fc2(fc1(x) * gelu_tanh(gate(x)))."""

    def __init__(self, dim: int, dim_ffn: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(dim, dim_ffn, bias=False), nn.GELU(approximate="tanh"))
        self.fc1 = nn.Linear(dim, dim_ffn, bias=False)
        self.fc2 = nn.Linear(dim_ffn, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x) * self.gate(x))


class T5Block(nn.Module):
    """Pre-norm self-attention + FFN, with this layer's own relative-position bias."""

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.norm1 = T5RMSNorm(cfg.dim, cfg.eps)
        self.attn = T5Attention(cfg.dim, cfg.dim_attn, cfg.num_heads)
        self.norm2 = T5RMSNorm(cfg.dim, cfg.eps)
        self.ffn = T5FeedForward(cfg.dim, cfg.dim_ffn)
        self.pos_embedding = T5RelativeBias(cfg.num_buckets, cfg.num_heads, cfg.max_distance)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """x: (B, L, D); keep: (B, L) bool, False at padding (masked out as keys)."""
        b, n_tok, _ = x.shape
        # official: zeros(x.dtype) + position bias, then padding keys set to the dtype's minimum
        bias = self.pos_embedding(n_tok).to(x.dtype).expand(b, -1, -1, -1)  # (B, N, L, L)
        if keep is not None:
            bias = bias.masked_fill(~keep[:, None, None, :], torch.finfo(x.dtype).min)
        x = _clamp_fp16(x + self.attn(self.norm1(x), bias))
        x = _clamp_fp16(x + self.ffn(self.norm2(x)))
        return x


class T5Encoder(nn.Module):
    """umT5 encoder: ids (B, L) -> hidden states (B, L, D)."""

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList([T5Block(cfg) for _ in range(cfg.num_layers)])
        self.norm = T5RMSNorm(cfg.dim, cfg.eps)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            ids: (B, L) int64 token ids.
            mask: (B, L) attention mask, nonzero on real tokens; padding is excluded as attention key.
        Returns:
            (B, L, D) in the weight dtype. Rows at padding positions hold values too (official): cut
            or zero them (`TextEncoder` does).
        """
        keep = None if mask is None else mask.ne(0)
        x = self.token_embedding(ids)  # (B, L, D)
        for block in self.blocks:
            x = block(x, keep)
        return self.norm(x)  # (B, L, D)


# ----------------------------------------------------------------------------------------------
# Checkpoint loading
# ----------------------------------------------------------------------------------------------


_HF_T5_NAMES = {
    "layer.0.SelfAttention.q.weight": "attn.q.weight",
    "layer.0.SelfAttention.k.weight": "attn.k.weight",
    "layer.0.SelfAttention.v.weight": "attn.v.weight",
    "layer.0.SelfAttention.o.weight": "attn.o.weight",
    "layer.0.SelfAttention.relative_attention_bias.weight": "pos_embedding.embedding.weight",
    "layer.0.layer_norm.weight": "norm1.weight",
    "layer.1.DenseReluDense.wi_0.weight": "ffn.gate.0.weight",  # GELU branch
    "layer.1.DenseReluDense.wi_1.weight": "ffn.fc1.weight",  # linear branch
    "layer.1.DenseReluDense.wo.weight": "ffn.fc2.weight",
    "layer.1.layer_norm.weight": "norm2.weight",
}


def _from_hf_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face `UMT5EncoderModel`/`UMT5Model` state dict to the official names.

    The decoder and LM head of a full model are dropped. Keys that match no rule keep their name,
    so the strict check reports them.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(("decoder.", "lm_head.")) or key == "spiece_model":
            continue  # decoder, LM head, or a tokenizer some converters embed
        if key in ("shared.weight", "encoder.embed_tokens.weight"):
            out["token_embedding.weight"] = value
        elif key == "encoder.final_layer_norm.weight":
            out["norm.weight"] = value
        elif key.startswith("encoder.block."):
            index, _, rest = key[len("encoder.block.") :].partition(".")
            out[f"blocks.{index}.{_HF_T5_NAMES.get(rest, rest)}"] = value
        else:
            out[key] = value
    return out


def read_t5_state(path: Path, config: T5Config | None = None) -> dict[str, torch.Tensor]:
    """A umT5 checkpoint's tensors under the official names (memory-mapped), checked strictly.

    Accepts the layouts `load_t5` accepts; raises a one-line `CheckpointError` on any missing,
    unexpected or misshapen key. `scail weights verify` uses it without loading the weights.
    """
    path = Path(path)
    state = read_state_dict(path)
    if any(k.startswith("encoder.block.") for k in state):
        state = _from_hf_names(state)
    with torch.device("meta"):
        model = T5Encoder(config or T5Config.umt5_xxl())
    check_state_dict(model, state, path, "the umT5-XXL encoder (models_t5_umt5-xxl-enc-bf16.pth)")
    return state


def load_t5(
    path: Path,
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu",
    config: T5Config | None = None,
) -> T5Encoder:
    """Build the encoder on the meta device and fill it from a checkpoint, strictly.

    Args:
        path: `models_t5_umt5-xxl-enc-bf16.pth` (official names), a safetensors file with the same
            names, or a Hugging Face umT5 safetensors (`encoder.block.*`; decoder keys are ignored).
        dtype: parameter dtype (official: bfloat16).
        config: architecture; default `T5Config.umt5_xxl()`.
    Returns:
        The encoder in eval mode, gradients off, on `device`.
    """
    path = Path(path)
    cfg = config or T5Config.umt5_xxl()
    state = read_t5_state(path, cfg)
    with torch.device("meta"):
        model = T5Encoder(cfg)
    log.debug("loading %s (%d tensors) as %s", path, len(state), dtype)
    return assign_weights(model, state, dtype, device, path, "the umT5-XXL encoder (models_t5_umt5-xxl-enc-bf16.pth)")


# ----------------------------------------------------------------------------------------------
# The pipeline's text encoder: tokenizer + encoder + length handling
# ----------------------------------------------------------------------------------------------


def pad_context(contexts: Sequence[torch.Tensor], text_len: int = 512) -> torch.Tensor:
    """Zero-pad trimmed text features [(L_i, D)] to one (B, text_len, D) tensor, as the DiT does.

    official (wan model_scail.py): each context is concatenated with zeros up to 512 rows before
    `text_embedding`; the padding rows are not masked in cross-attention.
    """
    dim = contexts[0].shape[-1]
    out = contexts[0].new_zeros(len(contexts), text_len, dim)
    for i, c in enumerate(contexts):
        if c.shape[0] > text_len:
            raise ValueError(f"text context has {c.shape[0]} rows, more than text_len={text_len}")
        out[i, : c.shape[0]] = c
    return out


class TextEncoder:
    """Prompts -> umT5 features, with the official cleaning, tokenization and trimming."""

    def __init__(self, model: T5Encoder, tokenizer: UMT5Tokenizer) -> None:
        self.model = model
        self.tokenizer = tokenizer

    @classmethod
    def load(
        cls,
        checkpoint: Path,
        tokenizer_dir: Path,
        dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str = "cpu",
        config: T5Config | None = None,
    ) -> TextEncoder:
        """`load_t5(checkpoint)` + `UMT5Tokenizer.from_dir(tokenizer_dir)` (SCAIL-Preview: both in `umt5-xxl/`)."""
        from scail.animate.tokenizer import UMT5Tokenizer

        cfg = config or T5Config.umt5_xxl()
        tokenizer = UMT5Tokenizer.from_dir(tokenizer_dir, text_len=cfg.text_len)
        return cls(load_t5(checkpoint, dtype, device, cfg), tokenizer)

    @torch.no_grad()
    def encode_trimmed(self, prompts: Sequence[str]) -> list[torch.Tensor]:
        """One (L_i, D) tensor per prompt, L_i = its token count incl. `</s>` ("" -> 1 row).

        Exactly what the official `T5EncoderModel.__call__` returns (the wan pipeline's `context`).
        """
        device = self.model.token_embedding.weight.device
        ids, mask = self.tokenizer(list(prompts))  # (B, 512) int64 each
        ids, mask = ids.to(device), mask.to(device)
        lengths = mask.gt(0).sum(dim=1).tolist()
        hidden = self.model(ids, mask)  # (B, 512, D)
        return [h[:n] for h, n in zip(hidden, lengths, strict=True)]

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """(B, text_len, D) features, zero past each prompt's tokens: the DiT's `context` input."""
        return pad_context(self.encode_trimmed(prompts), self.model.cfg.text_len)

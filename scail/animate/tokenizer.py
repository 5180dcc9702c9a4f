"""Prompt cleaning and the umT5 tokenizer, without `transformers`.

The official pipeline (Wan `HuggingfaceTokenizer(clean='whitespace')` + `AutoTokenizer` of the
`google/umt5-xxl` folder) cleans each prompt, tokenizes it, appends `</s>`, truncates to 512
tokens (keeping `</s>` last) and pads with id 0 to exactly 512, returning ids and an attention
mask. `UMT5Tokenizer` does the same from the folder's `tokenizer.json` (read with the `tokenizers`
library, as the fast HF tokenizer does) or, when that is absent, its `spiece.model`
(sentencepiece). `</s>` is appended here rather than by the file's post-processor, so the result
does not depend on how a converted `tokenizer.json` spells it.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scail.errors import CheckpointError

if TYPE_CHECKING:
    import torch

TEXT_LEN = 512


def clean_text(text: str) -> str:
    """The official 'whitespace' cleaning of a prompt.

    ftfy.fix_text (mojibake, stray HTML entities), html.unescape twice, strip, then every run of
    Unicode whitespace becomes one space (the `regex` module's `\\s`, as official).
    """
    import ftfy
    import regex

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return regex.sub(r"\s+", " ", text).strip()


class UMT5Tokenizer:
    """Text -> fixed-length umT5 ids and mask, identical to the official HF tokenizer call."""

    def __init__(self, backend: Any, pad_id: int, eos_id: int, text_len: int = TEXT_LEN) -> None:
        """Use `from_dir`; `backend` is a `tokenizers.Tokenizer` or `sentencepiece.SentencePieceProcessor`."""
        self.backend = backend
        self.pad_id = pad_id
        self.eos_id = eos_id
        self.text_len = text_len

    @classmethod
    def from_dir(cls, folder: Path, text_len: int = TEXT_LEN) -> UMT5Tokenizer:
        """Load the tokenizer folder (`umt5-xxl/` of SCAIL-Preview: tokenizer.json and/or spiece.model)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"{folder}: tokenizer folder not found; check the weights folder")
        json_file, spm_file = folder / "tokenizer.json", folder / "spiece.model"
        if json_file.is_file():
            return cls._from_json(json_file, text_len)
        if spm_file.is_file():
            return cls._from_spm(spm_file, text_len)
        raise CheckpointError(
            f"{folder}: no tokenizer.json or spiece.model; download the umt5-xxl tokenizer files again"
        )

    @classmethod
    def tiny(cls, text_len: int = TEXT_LEN) -> UMT5Tokenizer:
        """A character-level tokenizer built in code (46 ids, no files) for the tiny-random preset.

        Same special ids as umT5 (pad 0, `</s>` 1, unk 2); fits `T5Config.tiny()`'s vocabulary of 64.
        """
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

        pieces = ["<pad>", "</s>", "<unk>", *"\u2581abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"]
        vocab = [(piece, 0.0 if i < 3 else -1.0) for i, piece in enumerate(pieces)]
        backend = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
        backend.normalizer = normalizers.Lowercase()
        backend.pre_tokenizer = pre_tokenizers.Metaspace()
        backend.add_special_tokens(["<pad>", "</s>", "<unk>"])
        return cls(backend, pad_id=0, eos_id=1, text_len=text_len)

    @classmethod
    def _from_json(cls, path: Path, text_len: int) -> UMT5Tokenizer:
        from tokenizers import Tokenizer

        try:
            backend = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises plain Exception subclasses
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{path}: cannot read the tokenizer ({reason}); download it again") from exc
        # the call decides truncation and padding, as HF does, whatever the file says
        backend.no_truncation()
        backend.no_padding()
        pad_id, eos_id = backend.token_to_id("<pad>"), backend.token_to_id("</s>")
        if pad_id is None or eos_id is None:
            raise CheckpointError(f"{path}: no '<pad>' or '</s>' token; is this the umT5 tokenizer?")
        return cls(backend, pad_id, eos_id, text_len)

    @classmethod
    def _from_spm(cls, path: Path, text_len: int) -> UMT5Tokenizer:
        import sentencepiece

        backend = sentencepiece.SentencePieceProcessor()
        try:
            backend.Load(str(path))
        except (OSError, RuntimeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{path}: cannot read the sentencepiece model ({reason})") from exc
        pad_id, eos_id = backend.pad_id(), backend.eos_id()
        if pad_id < 0 or eos_id < 0:
            raise CheckpointError(f"{path}: the model defines no pad or eos id; is this the umT5 tokenizer?")
        return cls(backend, pad_id, eos_id, text_len)

    def token_ids(self, text: str) -> list[int]:
        """Ids of already-cleaned text, without `</s>`, padding or truncation."""
        if hasattr(self.backend, "encode_batch"):  # tokenizers.Tokenizer
            return list(self.backend.encode(text, add_special_tokens=False).ids)
        return list(self.backend.encode(text))  # sentencepiece

    def overflow(self, prompt: str) -> tuple[int, int]:
        """(tokens in the cleaned prompt, how many of them `__call__` cuts to fit `text_len` with `</s>`)."""
        n = len(self.token_ids(clean_text(prompt)))
        return n, max(0, n - (self.text_len - 1))

    def __call__(self, prompts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            prompts: one prompt or a list (cleaned here with `clean_text`).
        Returns:
            ids: (B, text_len) int64, `</s>` after the (truncated) tokens, then pad ids.
            mask: (B, text_len) int64, 1 on the tokens and `</s>`, 0 on padding.
        """
        import torch

        if isinstance(prompts, str):
            prompts = [prompts]
        ids = torch.full((len(prompts), self.text_len), self.pad_id, dtype=torch.int64)
        mask = torch.zeros((len(prompts), self.text_len), dtype=torch.int64)
        for row, prompt in enumerate(prompts):
            tokens = [*self.token_ids(clean_text(prompt))[: self.text_len - 1], self.eos_id]
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.int64)
            mask[row, : len(tokens)] = 1
        return ids, mask

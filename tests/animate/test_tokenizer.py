"""Prompt cleaning and the umT5 tokenizer wrapper, on tiny tokenizers built here."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from scail.animate.tokenizer import UMT5Tokenizer, clean_text
from scail.errors import CheckpointError

SENTENCES = [
    "a person is dancing on the stage",
    "the quick brown fox jumps over the lazy dog",
    "hello world this is a test of the tokenizer",
    "she waves her hands and turns around slowly",
] * 5


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  a   b\n\tc  ", "a b c"),  # whitespace runs collapse, ends stripped
        ("a\u00a0\u3000b\u2009c\u2028d", "a b c d"),  # Unicode spaces count as whitespace
        ("caf\u00c3\u00a9 au lait", "caf\u00e9 au lait"),  # UTF-8 read as Latin-1 (mojibake)
        ("Don\u00e2\u20ac\u2122t stop", "Don't stop"),  # mojibake curly quote, then uncurled by ftfy
        ("&amp;lt;b&amp;gt; bold", "<b> bold"),  # entities escaped twice
        ("x &amp;amp;amp; y", "x & y"),  # escaped three times: ftfy + two html.unescape
        ("", ""),
        ("   \n ", ""),
    ],
)
def test_clean_text(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


def _json_tokenizer(folder: Path) -> Path:
    """A tiny unigram tokenizer.json with umT5's special ids and a `$A </s>` post-processor."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=60, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(SENTENCES, trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def _spm_tokenizer(folder: Path) -> Path:
    """A tiny sentencepiece model (pad 0, eos 1, unk 2, no bos) saved as spiece.model."""
    import sentencepiece

    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES),
        model_writer=buf,
        vocab_size=40,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(buf.getvalue())
    return folder


def test_json_tokenizer_matches_the_fast_tokenizer_call(tmp_path: Path) -> None:
    """Ids and mask equal what the HF fast path computes with the same file (truncate 512, pad 0)."""
    from tokenizers import Tokenizer

    folder = _json_tokenizer(tmp_path / "umt5-xxl")
    tok = UMT5Tokenizer.from_dir(folder)
    long_prompt = " ".join(SENTENCES * 8)  # far more than 512 tokens
    prompts = ["a person is dancing", "", long_prompt]
    ids, mask = tok(prompts)
    assert ids.shape == mask.shape == (3, 512)
    assert ids.dtype == mask.dtype == torch.int64

    # The reference: the tokenizers library configured as transformers' fast tokenizer configures it
    # for padding='max_length', truncation=True, max_length=512, add_special_tokens=True.
    ref = Tokenizer.from_file(str(folder / "tokenizer.json"))
    ref.enable_truncation(max_length=512)
    ref.enable_padding(length=512, pad_id=0, pad_token="<pad>")
    expected = ref.encode_batch([clean_text(p) for p in prompts])
    assert ids.tolist() == [e.ids for e in expected]
    assert mask.tolist() == [e.attention_mask for e in expected]

    assert ids[1, :2].tolist() == [1, 0] and mask[1].sum() == 1  # "" -> just </s>
    assert mask[2].sum() == 512 and ids[2, 511] == 1  # truncated, </s> kept last
    n = int(mask[0].sum())
    assert ids[0, n - 1] == 1 and (ids[0, n:] == 0).all()


def test_tokenizer_cleans_prompts(tmp_path: Path) -> None:
    tok = UMT5Tokenizer.from_dir(_json_tokenizer(tmp_path / "t"))
    a, _ = tok(["  hello   world&amp;amp; \n"])
    b, _ = tok(["hello world&"])
    assert torch.equal(a, b)


def test_sentencepiece_fallback(tmp_path: Path) -> None:
    import sentencepiece

    folder = _spm_tokenizer(tmp_path / "spm")
    tok = UMT5Tokenizer.from_dir(folder, text_len=16)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(folder / "spiece.model"))
    ids, mask = tok(["the lazy dog", "", " ".join(SENTENCES)])
    body = sp.encode("the lazy dog")
    assert ids[0].tolist() == [*body, 1] + [0] * (16 - len(body) - 1)
    assert mask[0].tolist() == [1] * (len(body) + 1) + [0] * (16 - len(body) - 1)
    assert ids[1, 0] == 1 and mask[1].sum() == 1
    assert ids[2].tolist() == [*sp.encode(" ".join(SENTENCES))[:15], 1]


def test_tokenizer_json_preferred_over_spm(tmp_path: Path) -> None:
    folder = _json_tokenizer(tmp_path / "both")
    _spm_tokenizer(folder)
    tok = UMT5Tokenizer.from_dir(folder)
    assert hasattr(tok.backend, "encode_batch")  # the tokenizers backend, as AutoTokenizer's fast path


def test_tokenizer_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="tokenizer folder not found"):
        UMT5Tokenizer.from_dir(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"no tokenizer\.json or spiece\.model"):
        UMT5Tokenizer.from_dir(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    with pytest.raises(CheckpointError, match="cannot read the tokenizer") as info:
        UMT5Tokenizer.from_dir(bad)
    assert "\n" not in str(info.value)


def test_tiny_tokenizer_fits_the_tiny_encoder() -> None:
    tok = UMT5Tokenizer.tiny()
    ids, mask = tok(["A person, dancing! \u4f60\u597d", ""])
    n = int(mask[0].sum())
    # "▁a▁person,▁dancing!▁<unk>" -> one id per character, then </s>
    assert n == len("_a_person,_dancing!_") + 2
    assert ids[0, n - 1] == 1 and ids[0, n - 2] == 2  # unknown characters -> <unk>, then </s>
    assert int(ids.max()) < 64  # T5Config.tiny().vocab_size
    assert ids[1, 0] == 1 and mask[1].sum() == 1

"""umT5 encoder: parity with the official code (fixtures/scail/t5, pipeline), loaders, real config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tensor_checks import assert_close, errors

from scail.animate.t5 import T5Config, T5Encoder, TextEncoder, load_t5, pad_context
from scail.animate.tokenizer import UMT5Tokenizer
from scail.errors import CheckpointError


@pytest.fixture(scope="module")
def tiny_t5(fixture_path: Callable[..., Path]) -> T5Encoder:
    return load_t5(
        fixture_path("scail", "t5") / "weights.safetensors", dtype=torch.float32, config=T5Config.tiny()
    )


def _word_tokenizer(folder: Path) -> UMT5Tokenizer:
    """A word-level tokenizer.json that maps the pipeline fixture's prompt to its fixed ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 5, "person": 17, "is": 33, "dancing": 40}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return UMT5Tokenizer.from_dir(folder)


def test_encoder_matches_official_fixture(fixture_path: Callable[..., Path], tiny_t5: T5Encoder) -> None:
    inputs = load_file(fixture_path("scail", "t5") / "inputs.safetensors")
    ref = load_file(fixture_path("scail", "t5") / "outputs.safetensors")
    out = tiny_t5(inputs["ids"], inputs["mask"])
    assert_close(out, ref["encoder_out_padded"])
    lengths = inputs["mask"].sum(dim=1).tolist()
    assert lengths == [6, 1]
    assert_close(out[0, :6], ref["context0_trimmed"])
    assert_close(out[1, :1], ref["context1_trimmed"])


def test_text_encoder_matches_official_pipeline(
    fixture_path: Callable[..., Path], tiny_t5: T5Encoder, tmp_path: Path
) -> None:
    """Cleaning + tokenizing to 512 + encoding + trimming, against the official generate() run."""
    ref = load_file(fixture_path("scail", "pipeline") / "intermediates.safetensors")
    tokenizer = _word_tokenizer(tmp_path / "umt5-xxl")
    prompt = "  a person is  happily dancing\n"  # 'happily' -> <unk>: ids 5, 17, 33, 2, 40, </s>
    ids, mask = tokenizer([prompt, ""])
    assert torch.equal(ids, torch.cat([ref["prompt_ids"], ref["neg_prompt_ids"]]))
    assert torch.equal(mask, torch.cat([ref["prompt_mask"], ref["neg_prompt_mask"]]))

    encoder = TextEncoder(tiny_t5, tokenizer)
    context, context_null = encoder.encode_trimmed([prompt, ""])
    assert_close(context, ref["context"])
    assert_close(context_null, ref["context_null"])

    # What the DiT receives: trimmed outputs zero-padded to 512 rows (= SAT's `context * mask`).
    padded = encoder.encode([prompt, ""])
    assert padded.shape == (2, 512, 32)
    full = tiny_t5(ids, mask)
    assert torch.equal(padded, full * mask[..., None])
    assert torch.equal(padded, pad_context([context, context_null]))
    assert padded[0, 6:].abs().sum() == 0 and padded[1, 1:].abs().sum() == 0


def test_text_encoder_load_from_files(fixture_path: Callable[..., Path], tmp_path: Path) -> None:
    """The pipeline's entry point: checkpoint + tokenizer folder -> (B, 512, D) features."""
    _word_tokenizer(tmp_path / "umt5-xxl")
    ref = load_file(fixture_path("scail", "pipeline") / "intermediates.safetensors")
    encoder = TextEncoder.load(
        fixture_path("scail", "t5") / "weights.safetensors",
        tmp_path / "umt5-xxl",
        torch.float32,
        config=T5Config.tiny(),
    )
    context = encoder.encode(["a person is happily dancing"])
    assert context.shape == (1, 512, 32) and context.dtype == torch.float32
    assert_close(context[0, :6], ref["context"])


def test_tiny_random_text_encoder_runs_offline() -> None:
    """The tiny-random preset: random tiny encoder + the in-code tokenizer, no files at all."""
    from scail.animate.tokenizer import UMT5Tokenizer

    torch.manual_seed(0)
    encoder = TextEncoder(T5Encoder(T5Config.tiny()).eval(), UMT5Tokenizer.tiny())
    context = encoder.encode(["a person dancing", ""])
    assert context.shape == (2, 512, 32)
    assert (
        context[0, :18].abs().sum() > 0 and context[0, 18:].abs().sum() == 0
    )  # ▁ + 16 characters (spaces as ▁) + </s>
    assert context[1, :1].abs().sum() > 0 and context[1, 1:].abs().sum() == 0


def test_loads_pth_and_hugging_face_names(
    fixture_path: Callable[..., Path], tiny_t5: T5Encoder, tmp_path: Path
) -> None:
    state = load_file(fixture_path("scail", "t5") / "weights.safetensors")
    ids = torch.tensor([[5, 17, 33, 2, 40, 1, 0, 0]])
    mask = (torch.arange(8) < 6).long()[None]
    expected = tiny_t5(ids, mask)

    pth = tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"
    torch.save(state, pth)
    assert torch.equal(load_t5(pth, torch.float32, config=T5Config.tiny())(ids, mask), expected)

    # Hugging Face UMT5 names (encoder.block.*), with decoder and head keys that must be ignored.
    rename = {
        "attn.q.weight": "layer.0.SelfAttention.q.weight",
        "attn.k.weight": "layer.0.SelfAttention.k.weight",
        "attn.v.weight": "layer.0.SelfAttention.v.weight",
        "attn.o.weight": "layer.0.SelfAttention.o.weight",
        "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
        "norm1.weight": "layer.0.layer_norm.weight",
        "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
        "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
        "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
        "norm2.weight": "layer.1.layer_norm.weight",
    }
    hf = {
        "shared.weight": state["token_embedding.weight"],
        "encoder.final_layer_norm.weight": state["norm.weight"],
    }
    for key, value in state.items():
        if key.startswith("blocks."):
            _, i, rest = key.split(".", 2)
            hf[f"encoder.block.{i}.{rename[rest]}"] = value
    hf["decoder.final_layer_norm.weight"] = state["norm.weight"].clone()
    hf["lm_head.weight"] = state["token_embedding.weight"].clone()
    path = tmp_path / "umt5_xxl.safetensors"
    save_file(hf, path)
    assert torch.equal(load_t5(path, torch.float32, config=T5Config.tiny())(ids, mask), expected)


def test_bfloat16_load_stays_close(fixture_path: Callable[..., Path], tiny_t5: T5Encoder) -> None:
    """The official dtype: bf16 weights and activations, softmax and norm statistics in float32."""
    model = load_t5(
        fixture_path("scail", "t5") / "weights.safetensors", torch.bfloat16, config=T5Config.tiny()
    )
    assert model.token_embedding.weight.dtype == torch.bfloat16
    assert not any(p.requires_grad for p in model.parameters())
    inputs = load_file(fixture_path("scail", "t5") / "inputs.safetensors")
    out = model(inputs["ids"], inputs["mask"])
    assert out.dtype == torch.bfloat16
    _, rel_l2 = errors(out, tiny_t5(inputs["ids"], inputs["mask"]))
    assert rel_l2 < 3e-2


def test_loader_errors(fixture_path: Callable[..., Path], tmp_path: Path) -> None:
    state = load_file(fixture_path("scail", "t5") / "weights.safetensors")
    tiny = T5Config.tiny()

    with pytest.raises(CheckpointError, match="no such file"):
        load_t5(tmp_path / "absent.pth", config=tiny)

    good = tmp_path / "good.pth"
    torch.save(state, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pth: cannot read the checkpoint") as info:
        load_t5(truncated, config=tiny)
    assert "\n" not in str(info.value)

    broken = dict(state)
    del broken["blocks.1.ffn.fc2.weight"]
    broken["blocks.1.extra.weight"] = torch.zeros(1)
    broken["norm.weight"] = torch.ones(7)
    path = tmp_path / "broken.safetensors"
    save_file(broken, path)
    with pytest.raises(CheckpointError) as info:
        load_t5(path, config=tiny)
    message = str(info.value)
    assert "\n" not in message
    assert "1 missing keys (e.g. 'blocks.1.ffn.fc2.weight')" in message
    assert "1 unexpected keys (e.g. 'blocks.1.extra.weight')" in message
    assert "'norm.weight': file [7], model [32]" in message
    assert "umT5-XXL" in message

    # The real file against the wrong (tiny) config: every shape differs, so it is refused.
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_t5(
            fixture_path("scail", "t5") / "weights.safetensors",
            config=T5Config(vocab_size=64, dim=32, dim_attn=32, dim_ffn=128, num_heads=4, num_layers=2),
        )

    pickled = tmp_path / "pickled.pth"
    torch.save({"weights": [1, 2, 3], "note": object.__name__}, pickled)
    with pytest.raises(CheckpointError, match="not a state dict of tensors"):
        load_t5(pickled, config=tiny)


def test_real_config_builds_on_meta() -> None:
    cfg = T5Config.umt5_xxl()
    assert (cfg.vocab_size, cfg.dim, cfg.dim_ffn, cfg.num_heads, cfg.num_layers) == (
        256384,
        4096,
        10240,
        64,
        24,
    )
    with torch.device("meta"):
        model = T5Encoder(cfg)
    state = model.state_dict()
    assert len(state) == 2 + 24 * 10
    # embedding + 24 x (q,k,v,o + gate,fc1,fc2 + 2 norms + 32x64 relative bias) + final norm
    per_block = 4 * 4096 * 4096 + 3 * 4096 * 10240 + 2 * 4096 + 32 * 64
    assert sum(v.numel() for v in state.values()) == 256384 * 4096 + 24 * per_block + 4096 == 5_680_910_336
    assert state["blocks.23.pos_embedding.embedding.weight"].shape == (32, 64)
    assert state["blocks.0.ffn.gate.0.weight"].shape == (10240, 4096)
    out = model(torch.zeros(1, 512, dtype=torch.long, device="meta"), torch.ones(1, 512, device="meta"))
    assert out.shape == (1, 512, 4096)


def test_relative_buckets_follow_t5() -> None:
    """Bidirectional buckets: 0-7 exact below, 8-15 log-spaced up to 128, keys after the query +16."""
    with torch.device("cpu"):
        bias = T5Encoder(T5Config.tiny()).blocks[0].pos_embedding
    b = bias.buckets(300)
    assert b[0, 0] == 0 and b[5, 0] == 5 and b[0, 5] == 21  # key 5 before / after the query
    assert b[200, 0] == 15 and b[0, 200] == 31  # beyond max_distance: the last bucket
    assert b[16, 0] == 8 + int(torch.log(torch.tensor(2.0)) / torch.log(torch.tensor(16.0)) * 8)
    assert torch.equal(b[40:60, 10:30], b[30:50, 0:20])  # depends only on the offset

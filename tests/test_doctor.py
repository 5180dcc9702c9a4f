"""`scail doctor`'s weights line: built on the weights folder layout (scail.animate.weights.locate)."""

from __future__ import annotations

from pathlib import Path

from scail.config import Settings
from scail.doctor import check_weights


def test_weights_check_names_missing_parts_and_passes_a_complete_folder(tmp_path: Path) -> None:
    root = tmp_path / "weights"
    settings = Settings(weights_dir=root, cache_dir=tmp_path)
    absent = check_weights(settings)
    assert absent.level == "warn" and f"scail weights download --dir {root}" in absent.detail

    root.mkdir()
    (root / "Wan2.1_VAE.pth").write_bytes(b"x" * 1000)
    partial = check_weights(settings)
    assert partial.level == "warn" and "missing dit, t5, tokenizer, clip;" in partial.detail

    for rel in ("model/1/mp_rank_00_model_states.pt", "umt5-xxl/models_t5_umt5-xxl-enc-bf16.pth",
                "umt5-xxl/tokenizer.json", "models_clip_open-clip-xlm-roberta-large-vit-huge-14-onlyvisual.pth"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (root / "model" / "latest").write_text("1")
    complete = check_weights(settings)
    assert complete.level == "ok" and "all 5 parts" in complete.detail, complete.detail


def test_attention_check_names_the_kernel() -> None:
    from scail.doctor import check_attention

    got = check_attention()
    assert got.level in ("ok", "warn") and got.detail  # on this CPU machine: torch SDPA on the CPU
    assert "SDPA" in got.detail or "sdpa" in got.detail or "flash_attn" in got.detail


def test_doctor_reports_distributed_and_ray(tmp_path: Path) -> None:
    import torch

    from scail.config import Settings
    from scail.doctor import check_distributed, check_ray

    dist = check_distributed()
    if not torch.cuda.is_available():
        assert dist.level == "ok" and dist.detail.startswith("gloo on the CPU")
    ray = check_ray(Settings(weights_dir=tmp_path, cache_dir=tmp_path))
    assert ray.level == "ok"
    try:
        import ray as ray_module
    except ImportError:
        assert ray.detail.startswith("not installed")
    else:
        assert ray.detail.startswith(f"{ray_module.__version__}; no cluster named")


def test_turntable_check_renders_a_frame_or_says_what_to_install() -> None:
    from scail.doctor import check_turntable
    from scail.previews import turntable

    check = check_turntable()
    if turntable.unavailable():
        assert check.level == "warn" and ("scail[previews3d]" in check.detail or "libegl" in check.detail)
    else:
        assert check.level == "ok" and check.detail.startswith("pyrender offscreen on "), check

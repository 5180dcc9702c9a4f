"""Tensor comparison for the animate parity tests, with the error measures the fixture READMEs define."""

from __future__ import annotations

import torch


def errors(mine: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(max_abs, rel_l2): the largest absolute difference and ||mine - ref|| / ||ref||, in float64."""
    d = mine.double() - ref.double()
    return d.abs().max().item(), (d.norm() / ref.double().norm()).item()


def assert_close(mine: torch.Tensor, ref: torch.Tensor, rel_l2: float = 1e-5, max_abs: float = 1e-4) -> None:
    """Same shape, and both errors below the bounds (default: the fixtures' float32 bounds)."""
    assert mine.shape == ref.shape, (mine.shape, ref.shape)
    got_abs, got_rel = errors(mine, ref)
    assert got_rel < rel_l2 and got_abs < max_abs, f"rel_l2 {got_rel:.3g}, max_abs {got_abs:.3g}"

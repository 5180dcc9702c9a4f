from __future__ import annotations

import numpy as np

from scail.pose.postprocess import OneEuroFilter, clean_tracks, fill_gaps
from scail.pose.schema import PoseData


def test_fill_gaps_interpolates_short_gaps_only() -> None:
    x = np.arange(12, dtype=np.float32)[:, None].repeat(3, 1)
    x[[0, 3, 4, 7, 8, 9, 10]] = np.nan  # leading gap, 2-frame gap, 4-frame gap
    filled, mask = fill_gaps(x, max_gap=2)
    assert np.isnan(filled[0]).all()                      # nothing before: stays NaN
    np.testing.assert_allclose(filled[3:5, 0], [3, 4])    # linear between 2 and 5
    assert np.isnan(filled[7:11]).all()                   # gap of 4 > max_gap
    assert mask.tolist() == [i in (3, 4) for i in range(12)]


def test_one_euro_reduces_jitter_and_restarts_after_nan() -> None:
    rng = np.random.default_rng(0)
    x = 100 + rng.normal(0, 5, (60, 2))
    x[30] = np.nan
    y = OneEuroFilter(fps=16, min_cutoff_hz=1.0, beta=0.0)(x)
    assert np.isnan(y[30]).all()
    assert np.nanstd(y[5:29]) < 0.7 * np.nanstd(x[5:29])
    np.testing.assert_array_equal(y[31], x[31])  # first frame after a gap passes through


def test_clean_tracks_reports_filled_frames() -> None:
    pose = PoseData.empty(10, 1, (512, 896))
    pose.body3d[:, 0] = np.arange(10, dtype=np.float32)[:, None, None] + 1000
    pose.body2d[:, 0] = 0.5
    pose.body3d[[4, 5], 0] = np.nan
    pose.body2d[[4, 5], 0] = np.nan
    report = clean_tracks(pose, max_gap=3)
    assert report == {"0": [4, 5]}
    np.testing.assert_allclose(pose.body3d[4, 0, 0, 0], 1004)
    assert not np.isnan(pose.body2d).any()
    pose.validate()


def test_clean_tracks_smoothing_reduces_jitter_of_3d_and_2d() -> None:
    rng = np.random.default_rng(1)
    pose = PoseData.empty(40, 1, (512, 896))
    pose.body3d[:, 0] = 2000 + rng.normal(0, 20, (40, 24, 3))
    pose.body2d[:, 0, :, :2] = 0.5 + rng.normal(0, 0.01, (40, 18, 2))
    pose.body2d[:, 0, :, 2] = 0.9
    raw3d, raw2d = pose.body3d.copy(), pose.body2d.copy()
    clean_tracks(pose, smoothing=True)
    assert np.diff(pose.body3d, axis=0).std() < 0.6 * np.diff(raw3d, axis=0).std()
    assert np.diff(pose.body2d[..., :2], axis=0).std() < 0.6 * np.diff(raw2d[..., :2], axis=0).std()
    np.testing.assert_array_equal(pose.body2d[..., 2], raw2d[..., 2])  # scores untouched

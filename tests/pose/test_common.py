"""track_video with a scripted detector and estimator (the tracking/assembly logic, no models)."""

from __future__ import annotations

import numpy as np

from scail.pose.backends.common import PersonPose, keypoint_box, track_video

SIZE = (512, 896)


def _person(box: np.ndarray) -> PersonPose:
    p = PersonPose(bbox=np.asarray(box, np.float32))
    x0, y0, x1, y1 = box[:4]
    xs, ys = np.linspace(x0 + 10, x1 - 10, 18), np.linspace(y0 + 10, y1 - 10, 18)
    p.body2d = np.stack([xs / SIZE[1], ys / SIZE[0], np.ones(18)], -1).astype(np.float32)
    p.body3d = np.full((24, 3), 2000.0, np.float32)
    return p


def _run(present: list[bool], detect_every: int) -> tuple[list[int], object]:
    calls: list[int] = []
    frame_idx = {"i": -1}

    def detect(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(frame_idx["i"])
        if not present[frame_idx["i"]]:
            return np.zeros((0, 5), np.float32), np.zeros((0, 17, 3), np.float32)
        return np.array([[300, 100, 500, 500, 0.9]], np.float32), np.zeros((1, 17, 3), np.float32)

    def estimate(frame: np.ndarray, slot: int, box: np.ndarray) -> PersonPose | None:
        return _person(box) if present[frame_idx["i"]] else None

    def frames():  # type: ignore[no-untyped-def]
        for i in range(len(present)):
            frame_idx["i"] = i
            yield np.zeros((*SIZE, 3), np.uint8)

    pose = track_video(frames(), detect, estimate, SIZE, 16.0, 1, lambda n: None, "test", "0",
                       detect_every=detect_every)
    return calls, pose


def test_detector_runs_every_k_frames_while_the_person_is_followed() -> None:
    calls, pose = _run([True] * 10, detect_every=4)
    assert calls == [0, 4, 8]
    assert np.isfinite(pose.body3d).all() and pose.num_people == 1  # type: ignore[attr-defined]


def test_losing_the_person_forces_detection() -> None:
    present = [True, True, False, False, True, True, True]
    calls, pose = _run(present, detect_every=4)
    assert calls == [0, 3, 4]  # frame 2 follows and finds nobody -> detect on 3 and 4 (found), then follow
    seen = np.isfinite(pose.body3d[:, 0, 0, 0])  # type: ignore[attr-defined]
    assert seen.tolist() == present


def test_nobody_at_all_gives_one_empty_track() -> None:
    calls, pose = _run([False] * 3, detect_every=2)
    assert calls == [0, 1, 2] and pose.num_people == 1 and np.isnan(pose.body3d).all()  # type: ignore[attr-defined]


def test_keypoint_box_needs_confident_points() -> None:
    p = _person(np.array([100, 100, 200, 300, 0.8]))
    box = keypoint_box(p, SIZE)
    assert box is not None and box[0] < 110 and box[2] > 190 and box[4] == np.float32(0.8)
    p.body2d[:, 2] = 0.1
    assert keypoint_box(p, SIZE) is None

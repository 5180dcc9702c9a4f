from __future__ import annotations

import numpy as np

from scail.pose.tracking import IoUTracker, box_iou


def _box(x: float, y: float = 100, w: float = 100, h: float = 300, s: float = 0.9) -> list[float]:
    return [x, y, x + w, y + h, s]


def test_box_iou() -> None:
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30]], float)
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 0.0]])


def test_two_people_keep_their_ids_in_any_detection_order() -> None:
    tr = IoUTracker(max_people=2)
    ids: list[dict[int, float]] = []
    for i in range(10):
        dets = [_box(100 + 5 * i), _box(500 - 5 * i)]
        if i % 2:
            dets = dets[::-1]  # detector order changes
        boxes = np.array(dets)
        ids.append({s: boxes[d, 0] for s, d in tr.update(boxes)})
    left = [f[0] for f in ids]
    assert all(x < 300 for x in left)  # slot 0 always the left person
    assert all(f[1] > 300 for f in ids)


def test_max_people_keeps_the_most_prominent() -> None:
    tr = IoUTracker(max_people=1)
    pairs = tr.update(np.array([_box(0, w=20, h=40), _box(300)]))
    assert pairs == [(0, 1)]


def test_person_leaving_and_reentering_keeps_the_slot() -> None:
    tr = IoUTracker(max_people=1)
    assert tr.update(np.array([_box(100)])) == [(0, 0)]
    for _ in range(10):
        assert tr.update(np.zeros((0, 5))) == []
    assert tr.update(np.array([_box(600)])) == [(0, 0)]  # far away, no overlap: same (only) slot
    assert len(tr.tracks) == 1 and tr.tracks[0].last_frame == 11

"""Our evaluation of dlib's 68-point model gives dlib's landmarks, bit for bit, one face or many at once."""

from __future__ import annotations

from pathlib import Path

import cv2
import dlib
import numpy as np
import pytest
import skimage.data

from davs_model.face import predictor_path
from davs_model.shape_predictor import ShapePredictor, load_shape_model


@pytest.fixture(scope="module")
def ours() -> ShapePredictor:
    return ShapePredictor(predictor_path())


@pytest.fixture(scope="module")
def reference() -> dlib.shape_predictor:
    return dlib.shape_predictor(str(predictor_path()))


def dlib_points(reference, bgr: np.ndarray, box) -> np.ndarray:
    shape = reference(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dlib.rectangle(*(int(v) for v in box)))
    return np.array([(p.x, p.y) for p in shape.parts()], float)


def faces_and_boxes(images: list[np.ndarray], n_per_image: int, seed: int = 0):
    """Each image with boxes around its detected face moved and resized by up to ±12 px, some past the border."""
    detector = dlib.get_frontal_face_detector()
    rng = np.random.default_rng(seed)
    frames, boxes = [], []
    for image in images:
        found = detector(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), 1)
        assert found, "no face in a test image"
        r = found[0]
        for _ in range(n_per_image):
            j = rng.integers(-12, 13, 4)
            frames.append(image)
            boxes.append([r.left() + j[0], r.top() + j[1], r.right() + j[2], r.bottom() + j[3]])
    # one box hanging over the top-left corner: feature pixels outside the image read 0, as in dlib
    frames.append(images[0])
    boxes.append([-40, -30, boxes[0][2] - 60, boxes[0][3] - 50])
    return frames, np.array(boxes)


@pytest.fixture(scope="module")
def astronaut_bgr() -> np.ndarray:
    return np.ascontiguousarray(skimage.data.astronaut()[..., ::-1])


def test_model_file_is_read_whole(ours) -> None:
    m = ours.model
    assert m.n_parts == 68
    assert m.leaves.shape == (15, 500, 16, 136)  # 15 cascades of 500 trees of depth 4
    assert m.split_idx.shape == (15, 500, 15, 2) and m.split_idx.max() < m.anchor_idx.shape[1]
    assert m.anchor_idx.shape == (15, 500) and m.anchor_idx.max() < 68
    assert np.isfinite(m.leaves).all() and np.abs(m.initial_shape).max() < 1.5


def test_equal_to_dlib_one_face_at_a_time(ours, reference, astronaut_bgr) -> None:
    frames, boxes = faces_and_boxes([astronaut_bgr], 40)
    for frame, box in zip(frames, boxes, strict=True):
        np.testing.assert_array_equal(ours(frame, box), dlib_points(reference, frame, box))


def test_equal_to_dlib_in_batches_of_mixed_sizes(ours, reference, astronaut_bgr, shared_fixtures: Path) -> None:
    images = [astronaut_bgr] + [
        cv2.imread(str(shared_fixtures / "faces" / name))
        for name in ("Tom_Hanks_54745.png", "t1.jpg", "takeo.ppm")
    ]
    frames, boxes = faces_and_boxes(images, 12, seed=1)
    expected = np.stack([dlib_points(reference, f, b) for f, b in zip(frames, boxes, strict=True)])
    order = np.random.default_rng(2).permutation(len(frames))  # images of different sizes side by side
    for size in (3, 8, len(frames)):
        for start in range(0, len(frames), size):
            pick = order[start : start + size]
            got = ours.predict([frames[i] for i in pick], boxes[pick])
            np.testing.assert_array_equal(got, expected[pick])


def test_bad_input_is_refused(ours, astronaut_bgr, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8 BGR"):
        ours(astronaut_bgr.astype(np.float32), [0, 0, 100, 100])
    with pytest.raises(ValueError, match="uint8 BGR"):
        ours(astronaut_bgr[..., 0], [0, 0, 100, 100])
    assert ours.predict([], np.zeros((0, 4))).shape == (0, 68, 2)
    with pytest.raises(ValueError, match="2 frames but 1 boxes"):
        ours.predict([astronaut_bgr, astronaut_bgr], np.array([[0, 0, 100, 100]]))
    bad = tmp_path / "not_a_model.dat"
    bad.write_bytes(b"\x01\x02" + bytes(100))
    with pytest.raises(ValueError, match="not_a_model.dat"):
        load_shape_model(bad)
    (tmp_path / "empty.dat").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.dat: empty file"):
        load_shape_model(tmp_path / "empty.dat")
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(predictor_path().read_bytes()[:5_000_000])
    with pytest.raises(ValueError, match="truncated.dat"):
        load_shape_model(truncated)

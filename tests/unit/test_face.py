"""Tests for davs_model.face: dlib detection/landmarks, anchors and the key-frame tracker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from davs_model.face import FaceLandmarker, anchors_from_68, predictor_path
from davs_model.tracking import detect_every_frame, track_landmarks, track_many, tracking

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
FACES = SHARED / "fixtures" / "faces"


@pytest.fixture(scope="module")
def landmarker() -> FaceLandmarker:
    return FaceLandmarker()


@pytest.fixture(scope="module")
def astronaut_bgr() -> np.ndarray:
    return np.ascontiguousarray(skimage.data.astronaut()[..., ::-1])  # skimage gives RGB


def read_pts(path: Path) -> np.ndarray:
    """iBUG 300-W .pts: header, '{', 68 lines 'x y' (1-based), '}' → (68, 2) 0-based."""
    body = path.read_text().split("{", 1)[1].split("}", 1)[0]
    return np.array(body.split(), dtype=float).reshape(-1, 2) - 1.0


def moving_clip(
    image: np.ndarray, n: int = 48, grey_at: int | None = None, jump_at: int | None = None
) -> Iterator[np.ndarray]:
    """A still photo moved smoothly by a few px per frame (sub-pixel shifts), as a generator."""
    h, w = image.shape[:2]
    for t in range(n):
        dx = 6.0 * np.sin(2 * np.pi * t / n) + 0.4 * t
        dy = 4.0 * np.sin(3 * np.pi * t / n) + 0.3 * t
        if jump_at is not None and t >= jump_at:
            dx += 120.0  # a cut: the face is suddenly elsewhere
        M = np.float32([[1, 0, dx], [0, 1, dy]])
        frame = cv2.warpAffine(image, M, (w, h), borderMode=cv2.BORDER_REPLICATE)
        yield np.full_like(frame, 127) if t == grey_at else frame


def test_predictor_path_exists() -> None:
    assert predictor_path().is_file()


def test_anchors_from_68_indices() -> None:
    pts = np.zeros((68, 2))
    pts[36:42] = [10.0, 20.0]
    pts[42:48] = [30.0, 21.0]
    pts[48], pts[54] = [12.0, 40.0], [28.0, 44.0]
    pts[60:68] = [99.0, 99.0]  # inner lips: not used
    np.testing.assert_allclose(anchors_from_68(pts), [[10, 20], [30, 21], [20, 42]])
    with pytest.raises(ValueError):
        anchors_from_68(np.zeros((5, 2)))


def test_astronaut_has_exactly_one_face(landmarker: FaceLandmarker, astronaut_bgr) -> None:
    calls = landmarker.detector_calls
    rects = landmarker.detect(astronaut_bgr)
    assert landmarker.detector_calls == calls + 1
    assert len(rects) == 1
    pts = landmarker.landmarks(astronaut_bgr, rects[0])
    assert pts.shape == (68, 2) and pts.dtype == np.float64
    left, right, mouth = anchors_from_68(pts)
    assert left[0] < right[0] and mouth[1] > max(left[1], right[1])


def test_landmarker_validates_images(landmarker: FaceLandmarker) -> None:
    with pytest.raises(ValueError):
        landmarker.detect(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError):
        landmarker.detect(np.zeros((32, 32, 3), np.float32))


def test_takeo_anchors_match_ground_truth(landmarker: FaceLandmarker) -> None:
    if not (FACES / "takeo.ppm").is_file():
        pytest.skip(f"shared test fixtures not found at {FACES} (takeo.ppm/.pts)")
    image = cv2.imread(str(FACES / "takeo.ppm"))
    truth = anchors_from_68(read_pts(FACES / "takeo.pts"))
    rects = landmarker.detect(image)
    assert rects, "no face found in takeo.ppm"
    found = anchors_from_68(landmarker.landmarks(image, rects[0]))
    iod = np.linalg.norm(truth[1] - truth[0])
    err = np.linalg.norm(found - truth, axis=1) / iod * 100
    print(f"takeo anchor errors (% inter-ocular distance, L eye / R eye / mouth): {err.round(2)}")
    assert np.all(err < 5.0)


def _boxes(rects) -> list[tuple[int, int, int, int]]:
    return [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]


@pytest.mark.parametrize("scale", [1.0, 1.2, 1.4, 1.6])  # face boxes 88, 105, 125, 151 px: levels 1-4
def test_a_key_frame_scan_from_the_tracked_scale_gives_dlibs_own_box(scale: float, astronaut_bgr) -> None:
    """Skipping the pyramid levels below the tracked face keeps dlib's box exactly (its mapping recovered)."""
    import dlib

    image = cv2.resize(astronaut_bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    rects, _, _ = dlib.get_frontal_face_detector().run(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), 0, 0.0)
    assert len(rects) == 1
    width = rects[0].width()
    for k in (0.8, 1.0, 1.25, 1.3):  # the face may have grown or shrunk a little since the last key frame
        lm = FaceLandmarker()
        found = lm.detect(image, expect_width=width * k)
        assert _boxes(found) == _boxes(rects), (scale, k)
        assert lm.detector_calls == 1


def test_a_key_frame_scan_that_finds_nothing_scans_the_whole_pyramid(astronaut_bgr) -> None:
    image = cv2.resize(astronaut_bgr, None, fx=0.65, fy=0.65, interpolation=cv2.INTER_AREA)  # a 73 px face
    lm = FaceLandmarker()
    full = _boxes(lm.detect(image))
    assert len(full) == 1 and lm.detector_calls == 1
    assert _boxes(lm.detect(image, expect_width=400.0)) == full  # no face that large: a second, whole scan
    assert lm.detector_calls == 3
    up = FaceLandmarker(upsample=1)  # upsampled scans always go whole
    assert _boxes(up.detect(image, expect_width=90.0)) == _boxes(up.detect(image))
    assert up.detector_calls == 2


def test_tracking_matches_per_frame_detection(landmarker: FaceLandmarker, astronaut_bgr) -> None:
    tracked = track_landmarks(moving_clip(astronaut_bgr), landmarker, keyframe_interval=12)
    every = detect_every_frame(moving_clip(astronaut_bgr), landmarker)
    assert tracked.n_frames == every.n_frames == 48
    assert tracked.detected.all() and every.detected.all()
    diff = np.linalg.norm(tracked.landmarks - every.landmarks, axis=2).mean()
    ratio = every.detector_calls / tracked.detector_calls
    print(
        f"tracking vs per-frame: mean landmark diff {diff:.3f} px, detector calls "
        f"{tracked.detector_calls} vs {every.detector_calls} ({ratio:.1f}x fewer)"
    )
    assert every.detector_calls == 48
    assert diff <= 0.5
    assert ratio >= 4


def test_grey_frame_is_missing_and_tracking_recovers(landmarker: FaceLandmarker, astronaut_bgr) -> None:
    result = track_landmarks(moving_clip(astronaut_bgr, grey_at=20), landmarker, keyframe_interval=12)
    every = detect_every_frame(moving_clip(astronaut_bgr), landmarker)
    assert not result.detected[20] and np.isnan(result.landmarks[20]).all()
    ok = np.arange(48) != 20
    assert result.detected[ok].all()
    diff = np.linalg.norm(result.landmarks[ok] - every.landmarks[ok], axis=2).mean()
    assert diff <= 0.5
    assert result.detector_calls <= 4 + 2  # key frames + the grey frame + the frame after


def test_a_cut_triggers_redetection(landmarker: FaceLandmarker, astronaut_bgr) -> None:
    result = track_landmarks(moving_clip(astronaut_bgr, jump_at=17), landmarker, keyframe_interval=12)
    every = detect_every_frame(moving_clip(astronaut_bgr, jump_at=17), landmarker)
    assert result.detected.all()
    diff = np.linalg.norm(result.landmarks - every.landmarks, axis=2).mean(axis=1)
    assert diff[17] < 2.0, "the tracker kept the stale box after the cut"
    assert diff.mean() <= 0.5
    assert result.detector_calls == 5  # 4 key frames + 1 redetection


def test_no_face_at_all(landmarker: FaceLandmarker) -> None:
    frames = (np.full((120, 160, 3), 90, np.uint8) for _ in range(5))
    result = track_landmarks(frames, landmarker)
    assert result.n_frames == 5 and not result.detected.any()
    assert np.isnan(result.landmarks).all() and result.landmarks.shape == (5, 68, 2)
    assert result.detector_calls == 5  # without a track it keeps looking


def test_boxes_replace_detection(landmarker: FaceLandmarker, astronaut_bgr) -> None:
    rect = landmarker.detect(astronaut_bgr)[0]
    box0 = np.array([rect.left(), rect.top(), rect.width(), rect.height()], float)
    n = 12
    clip = list(moving_clip(astronaut_bgr, n=n))
    every = detect_every_frame(iter(clip), landmarker)
    centroid_shift = every.landmarks.mean(axis=1) - every.landmarks[0].mean(axis=0)
    boxes = np.tile(box0, (n, 1))
    boxes[:, :2] += centroid_shift
    boxes[5] = np.nan
    calls = landmarker.detector_calls
    result = track_landmarks(iter(clip), landmarker, boxes=boxes)
    assert landmarker.detector_calls == calls and result.detector_calls == 0
    assert not result.detected[5] and np.isnan(result.landmarks[5]).all()
    ok = np.arange(n) != 5
    assert result.detected[ok].all()
    assert np.linalg.norm(result.landmarks[ok] - every.landmarks[ok], axis=2).mean() < 2.0
    with pytest.raises(ValueError):
        track_landmarks(iter(clip), landmarker, boxes=boxes[:4])


def test_bad_keyframe_interval(landmarker: FaceLandmarker) -> None:
    with pytest.raises(ValueError):
        track_landmarks([], landmarker, keyframe_interval=0)


def test_clips_in_lockstep_equal_clips_one_by_one(landmarker: FaceLandmarker, astronaut_bgr) -> None:
    """track_many: the same landmarks, detector calls and faces as track_landmarks per clip; a clip that fails
    part-way gives its exception and the others go on."""

    def broken(n: int):
        yield from moving_clip(astronaut_bgr, n=n)
        raise RuntimeError("decoder died")

    clips = [
        lambda: moving_clip(astronaut_bgr, n=30),
        lambda: moving_clip(astronaut_bgr, n=48, jump_at=17),
        lambda: broken(7),
        lambda: moving_clip(astronaut_bgr, n=20, grey_at=5),
    ]
    together = track_many([tracking(make(), landmarker, keyframe_interval=12) for make in clips], landmarker)
    for k, (make, got) in enumerate(zip(clips, together, strict=True)):
        if k == 2:
            assert isinstance(got, RuntimeError) and "decoder died" in str(got)
            continue
        alone = track_landmarks(make(), landmarker, keyframe_interval=12)
        np.testing.assert_array_equal(got.landmarks, alone.landmarks)
        np.testing.assert_array_equal(got.detected, alone.detected)
        assert (got.detector_calls, got.max_faces, got.n_frames) == (
            alone.detector_calls,
            alone.max_faces,
            alone.n_frames,
        )


def test_tracked_boxes_move_in_whole_steps_of_the_detector_grid(landmarker: FaceLandmarker, astronaut_bgr) -> None:
    """Between key frames the box is the key frame's detector box moved by whole grid steps (width · 8/73 px):
    the box a detection on that frame would give. A face that moved less than half a step keeps the box."""
    steps = tracking(moving_clip(astronaut_bgr, n=24), landmarker, keyframe_interval=24)
    frame, key_box = next(steps)  # frame 0: the detector's box
    step = (key_box[2] - key_box[0] + 1) * 8 / 73
    offsets, pts = [], landmarker.landmarks(frame, key_box)
    with pytest.raises(StopIteration):
        while True:
            frame, box = steps.send(pts)
            offsets.append((box - key_box)[:2].astype(float))
            np.testing.assert_array_equal(box[2:] - box[:2], key_box[2:] - key_box[:2])  # the detector's size
            pts = landmarker.landmarks(frame, box)
    offsets = np.array(offsets)
    assert len(offsets) == 23
    whole = np.round(offsets / step)
    assert np.all(np.abs(offsets - whole * step) <= 0.5 + 1e-9), offsets  # on the grid, up to the integer box
    assert (whole == 0).all(axis=1).sum() >= 3  # the first frames moved < half a step: the key frame's box
    assert np.abs(whole).max() >= 1  # and later ones a whole step (the clip drifts ~15 px)

"""Faces: dlib's HOG detector + its 68-point shape model, and the DAVS anchors.

DAVS needs three points per frame (spec §2.1): the two eye centres and the mouth centre. From the
68-point (iBUG) layout they are mean(36..41), mean(42..47) and the mean of the corners 48 and 54.

The 68-point model is evaluated by :mod:`davs_model.shape_predictor` (dlib's landmarks, bit for bit,
~2× faster one face at a time and more in batches); ``engine="dlib"`` uses dlib's own code. The key-frame
tracker is in :mod:`davs_model.tracking`. Images are BGR uint8; points (x, y) pixels, 0-based.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import cv2
import dlib
import numpy as np

from davs_model.shape_predictor import ShapePredictor

N_LANDMARKS = 68
PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
TIE_AREA = 0.5  # area ratio ≈ two HOG pyramid levels (side × (5/6)² ≈ 0.69)
# dlib's frontal detector scans an image pyramid (each level 5/6 of the one before); a face found at level l has a
# box WINDOW_WIDTH · 1.2^l px wide (73, 88, 105, 125, 150, … px; measured on this detector)
WINDOW_WIDTH, LEVEL_RATIO = 73.0, 1.2
# px, one HOG cell at the box's level: boxes of one size lie on a grid of width · HOG_CELL / WINDOW_WIDTH px
HOG_CELL = 8
ENGINES = ("ours", "dlib")


def predictor_path() -> Path:
    """Path of ``shape_predictor_68_face_landmarks.dat`` shipped by ``face-recognition-models``.

    Found without importing the package (its ``__init__`` imports ``pkg_resources``, which may be
    missing).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package face-recognition-models is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / PREDICTOR_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from face-recognition-models")
    return path


def check_bgr(image_bgr: np.ndarray) -> np.ndarray:
    """``image_bgr`` if it is an H×W×3 uint8 array, else a ValueError that says what it is."""
    if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        shape = getattr(image_bgr, "shape", None)
        raise ValueError(f"image must be an H×W×3 BGR array, got shape {shape}")
    if image_bgr.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image_bgr.dtype}")
    return image_bgr


@functools.lru_cache(maxsize=2)
def _shape_predictor(path: str) -> ShapePredictor:
    return ShapePredictor(path)  # 65 MB of leaves: one copy per process, shared by every FaceLandmarker


def box_of(rect: dlib.rectangle) -> np.ndarray:
    """dlib.rectangle → (l, t, r, b) ints, r and b inclusive as in dlib."""
    return np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], np.int64)


class FaceLandmarker:
    """dlib frontal-face HOG detector plus the 68-point shape model.

    Args:
        upsample: times the detector upsamples the image (each doubles the size; finds faces
            down to ~40 px instead of ~80 px, at ~4× the cost).
        predictor_file: the shape-predictor model; default :func:`predictor_path`.
        engine: "ours" (:class:`~davs_model.shape_predictor.ShapePredictor`: dlib's landmarks,
            faster, batches) or "dlib" (dlib's own evaluation).

    ``detector_calls`` counts the calls of the detector (the cost the tracker saves).
    """

    def __init__(self, upsample: int = 0, predictor_file: str | Path | None = None, engine: str = "ours") -> None:
        if upsample < 0:
            raise ValueError(f"upsample must be >= 0, got {upsample}")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        self.upsample, self.engine = int(upsample), engine
        self._detector = dlib.get_frontal_face_detector()
        path = str(predictor_file or predictor_path())
        self._predictor = _shape_predictor(path) if engine == "ours" else dlib.shape_predictor(path)
        self.detector_calls = 0

    def detect(self, image_bgr: np.ndarray, expect_width: float | None = None) -> list[dlib.rectangle]:
        """Face boxes, largest first (dlib is given RGB, as it expects).

        ``expect_width``: the width of the box found for this face a moment ago (a tracker's key frame). With
        ``upsample`` 0 the scan then starts one pyramid level below that face's level: the levels under it find
        only faces < ~0.7 of that width, and cost 30-45 % of the scan. The boxes are dlib's own for every face
        found at the levels scanned (same features, scores and box arithmetic; tests/unit/test_face.py checks);
        if that scan finds nothing, the whole pyramid is scanned.
        """
        rgb = cv2.cvtColor(check_bgr(image_bgr), cv2.COLOR_BGR2RGB)
        skip = 0
        if expect_width and self.upsample == 0:
            skip = max(_pyramid_level(expect_width) - 1, 0)
        found = self._scan(rgb, skip) if skip else None
        if not found or not found[0]:
            found = self._scan(rgb, 0)
        rects, scores = found
        if not rects:
            return []
        # Largest first; boxes within TIE_AREA of the largest are ordered by detector score, since
        # HOG boxes jump between pyramid levels and a false positive may be a column wider.
        area = [r.width() * r.height() for r in rects]
        tied = [i for i in range(len(rects)) if area[i] >= TIE_AREA * max(area)]
        rest = [i for i in range(len(rects)) if i not in tied]
        order = sorted(tied, key=lambda i: -scores[i]) + sorted(rest, key=lambda i: -area[i])
        return [rects[i] for i in order]

    def _scan(self, rgb: np.ndarray, skip: int) -> tuple[list[dlib.rectangle], list[float]]:
        """One detector call on ``rgb``, from pyramid level ``skip`` up; the boxes in ``rgb``'s pixels."""
        self.detector_calls += 1
        for _ in range(skip):
            rgb = _PYRAMID(rgb)  # dlib's own 5/6 downsampling, as its detector makes its levels
        rects, scores, _ = self._detector.run(rgb, 0 if skip else self.upsample, 0.0)
        return [_rect_up(r, skip) for r in rects] if skip else list(rects), list(scores)

    def landmarks(self, image_bgr: np.ndarray, rect: dlib.rectangle | np.ndarray) -> np.ndarray:
        """The 68 landmarks, (68, 2) float, for the face in ``rect`` (a dlib.rectangle or (l, t, r, b))."""
        return self.landmarks_many([image_bgr], [rect])[0]

    def landmarks_many(self, images_bgr: list[np.ndarray], rects: list) -> np.ndarray:
        """(B, 68, 2) landmarks of B faces; with engine "ours" in one pass over the model (faster per face)."""
        boxes = np.stack([box_of(r) if isinstance(r, dlib.rectangle) else np.asarray(r, np.int64) for r in rects])
        images = [check_bgr(im) for im in images_bgr]
        if self.engine == "ours":
            return self._predictor.predict(images, boxes)
        out = np.empty((len(images), N_LANDMARKS, 2))
        for k, (im, box) in enumerate(zip(images, boxes, strict=True)):
            shape = self._predictor(cv2.cvtColor(im, cv2.COLOR_BGR2RGB), dlib.rectangle(*(int(v) for v in box)))
            out[k] = [(p.x, p.y) for p in shape.parts()]
        return out


_PYRAMID = dlib.pyramid_down(6)


def _pyramid_level(width: float) -> int:
    """The pyramid level at which dlib's frontal detector finds a face box ``width`` px wide (see WINDOW_WIDTH)."""
    return max(int(round(np.log(width / WINDOW_WIDTH) / np.log(LEVEL_RATIO))), 0)


def _rect_up(rect: dlib.rectangle, skip: int) -> dlib.rectangle:
    """A box found in the image ``skip`` pyramid levels down → the box dlib gives for it on the full image.

    dlib maps a detection at level l to the image it scanned with ``rect_up(R, l)`` (R: the level's integer box,
    one rounding at the end); from the smaller image it came out as ``rect_up(R, l - skip)``. So R is recovered
    (the integers that map onto ``rect``) and mapped ``l`` levels with dlib's own function.
    """
    level = _pyramid_level(rect.width())  # in the smaller image
    if level == 0:
        return _PYRAMID.rect_up(rect, skip)
    coords = []
    for v in (rect.left(), rect.top(), rect.right(), rect.bottom()):
        guess = int(np.floor(_PYRAMID.point_down(dlib.dpoint(v, v), level).x))
        coords.append(next((c for c in (guess, guess + 1, guess - 1) if _up(c, level) == v), None))
    if None in coords:  # not a box the scan can make: map it as it is
        return _PYRAMID.rect_up(rect, skip)
    return _PYRAMID.rect_up(dlib.rectangle(*coords), level + skip)


def _up(v: int, levels: int) -> int:
    return _PYRAMID.rect_up(dlib.rectangle(v, v, v, v), levels).left()


def anchors_from_68(pts: np.ndarray) -> np.ndarray:
    """DAVS anchors (3, 2) from 68 landmarks: [image-left eye, image-right eye, mouth centre].

    The image-left eye (the subject's right eye, smaller x) is points 36..41, matching the
    template's first point (x = 140); the mouth centre is the mean of the corners 48 and 54
    (DAVS's definition; PC-AVS uses the inner-lip mean instead). ``pts`` may hold many frames,
    (..., 68, 2) → (..., 3, 2), each the same bit for bit as on its own.
    """
    p = np.asarray(pts, dtype=np.float64)
    if p.shape[-2:] != (N_LANDMARKS, 2):
        raise ValueError(f"need (68, 2) landmarks, got {p.shape}")
    eyes = p[..., 36:42, :].mean(axis=-2), p[..., 42:48, :].mean(axis=-2)
    return np.stack([*eyes, (p[..., 48, :] + p[..., 54, :]) / 2], axis=-2)

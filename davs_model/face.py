"""Faces: dlib's HOG detector + 68-point shape predictor, a key-frame tracker, and DAVS anchors.

DAVS needs three points per frame (spec §2.1): the two eye centres and the mouth centre. From the
68-point (iBUG) layout they are mean(36..41), mean(42..47) and the mean of the corners 48 and 54.

Detection is the expensive step (~20 ms for a 512² frame, the predictor ~2 ms), so
:func:`track_landmarks` detects only on key frames and on tracking loss, and in between runs the
predictor on the last detector box moved with the landmarks. Images are BGR uint8; points (x, y)
pixels, 0-based.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np

N_LANDMARKS = 68
PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
TIE_AREA = 0.5  # area ratio ≈ two HOG pyramid levels (side × (5/6)² ≈ 0.69)
PATCH_SIZE = 32  # side of the grey patch used by the tracker's appearance check


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


def _to_rgb(image_bgr: np.ndarray) -> np.ndarray:
    if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        shape = getattr(image_bgr, "shape", None)
        raise ValueError(f"image must be an H×W×3 BGR array, got shape {shape}")
    if image_bgr.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image_bgr.dtype}")
    return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)


class FaceLandmarker:
    """dlib frontal-face HOG detector plus the 68-point shape predictor.

    Args:
        upsample: times the detector upsamples the image (each doubles the size; finds faces
            down to ~40 px instead of ~80 px, at ~4× the cost).
        predictor_file: the shape-predictor model; default :func:`predictor_path`.

    ``detector_calls`` counts the calls of the detector (the cost the tracker saves).
    """

    def __init__(self, upsample: int = 0, predictor_file: str | Path | None = None) -> None:
        if upsample < 0:
            raise ValueError(f"upsample must be >= 0, got {upsample}")
        self.upsample = int(upsample)
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(predictor_file or predictor_path()))
        self.detector_calls = 0

    def _detect_rgb(self, rgb: np.ndarray) -> list[dlib.rectangle]:
        self.detector_calls += 1
        rects, scores, _ = self._detector.run(rgb, self.upsample, 0.0)
        if not rects:
            return []
        # Largest first; boxes within TIE_AREA of the largest are ordered by detector score, since
        # HOG boxes jump between pyramid levels and a false positive may be a column wider.
        area = [r.width() * r.height() for r in rects]
        tied = [i for i in range(len(rects)) if area[i] >= TIE_AREA * max(area)]
        rest = [i for i in range(len(rects)) if i not in tied]
        order = sorted(tied, key=lambda i: -scores[i]) + sorted(rest, key=lambda i: -area[i])
        return [rects[i] for i in order]

    def _landmarks_rgb(self, rgb: np.ndarray, rect: dlib.rectangle) -> np.ndarray:
        shape = self._predictor(rgb, rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)

    def detect(self, image_bgr: np.ndarray) -> list[dlib.rectangle]:
        """Face boxes, largest first (dlib is given RGB, as it expects)."""
        return self._detect_rgb(_to_rgb(image_bgr))

    def landmarks(self, image_bgr: np.ndarray, rect: dlib.rectangle) -> np.ndarray:
        """The 68 landmarks, (68, 2) float, for the face in ``rect``."""
        return self._landmarks_rgb(_to_rgb(image_bgr), rect)


def anchors_from_68(pts: np.ndarray) -> np.ndarray:
    """DAVS anchors (3, 2) from 68 landmarks: [image-left eye, image-right eye, mouth centre].

    The image-left eye (the subject's right eye, smaller x) is points 36..41, matching the
    template's first point (x = 140); the mouth centre is the mean of the corners 48 and 54
    (DAVS's definition; PC-AVS uses the inner-lip mean instead).
    """
    p = np.asarray(pts, dtype=np.float64)
    if p.shape != (N_LANDMARKS, 2):
        raise ValueError(f"need (68, 2) landmarks, got {p.shape}")
    return np.stack([p[36:42].mean(axis=0), p[42:48].mean(axis=0), (p[48] + p[54]) / 2])


@dataclass
class TrackResult:
    """Per-frame landmarks of one clip.

    Attributes:
        landmarks: (T, 68, 2) float; NaN where no face was found.
        detected: (T,) bool; True where ``landmarks`` is valid.
        detector_calls: detector calls spent on this clip.
        n_frames: T.
        max_faces: most faces the detector found in one frame (the largest is tracked); 0 with ``boxes``.
    """

    landmarks: np.ndarray
    detected: np.ndarray
    detector_calls: int
    n_frames: int
    max_faces: int = 0


def _rect(box: np.ndarray) -> dlib.rectangle:
    """[left, top, right, bottom) float box → dlib.rectangle (inclusive right/bottom)."""
    left, top, right, bottom = (int(round(v)) for v in box)
    return dlib.rectangle(left, top, right - 1, bottom - 1)


def _box_of(rect: dlib.rectangle) -> np.ndarray:
    return np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], float)


def _bbox(pts: np.ndarray) -> np.ndarray:
    return np.concatenate([pts.min(axis=0), pts.max(axis=0)])


def _area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = _area(np.concatenate([np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])]))
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _patch(image_bgr: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """Zero-mean, unit-norm grey PATCH_SIZE² patch of ``box``; None if empty or flat."""
    h, w = image_bgr.shape[:2]
    x0, y0 = max(int(box[0]), 0), max(int(box[1]), 0)
    x1, y1 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    grey = cv2.cvtColor(image_bgr[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)
    p = cv2.resize(grey, (PATCH_SIZE, PATCH_SIZE), interpolation=cv2.INTER_AREA).astype(float)
    p -= p.mean()
    norm = np.linalg.norm(p)
    return p / norm if norm > 1e-6 * p.size else None


@dataclass
class _Track:
    """Tracker state since the last detection."""

    det_box: np.ndarray  # detector box at the detection frame, [l, t, r, b)
    det_centroid: np.ndarray  # landmark centroid at the detection frame
    det_bbox: np.ndarray  # landmark bounding box at the detection frame
    det_patch: np.ndarray  # appearance of the face at the detection frame
    centroid: np.ndarray  # landmark centroid in the latest frame


def _start_track(image_bgr: np.ndarray, rect: dlib.rectangle, pts: np.ndarray) -> _Track | None:
    patch = _patch(image_bgr, _bbox(pts))
    if patch is None:
        return None
    c = pts.mean(axis=0)
    return _Track(_box_of(rect), c, _bbox(pts), patch, c)


def _follow(
    landmarker: FaceLandmarker,
    image_bgr: np.ndarray,
    rgb: np.ndarray,
    track: _Track,
    iou_threshold: float,
    ncc_threshold: float,
) -> np.ndarray | None:
    """Predict landmarks in the carried box; None on tracking loss."""
    shift = np.tile(track.centroid - track.det_centroid, 2)
    pts = landmarker._landmarks_rgb(rgb, _rect(track.det_box + shift))
    bbox = _bbox(pts)
    h, w = image_bgr.shape[:2]
    inside = _area(np.concatenate([np.maximum(bbox[:2], 0), np.minimum(bbox[2:], [w, h])]))
    if inside < 0.5 * _area(bbox):  # the face left the frame
        return None
    # the landmarks no longer fit the carried box
    if _iou(bbox, track.det_bbox + shift) < iou_threshold:
        return None
    # not the same face (a cut, a blank frame)
    patch = _patch(image_bgr, bbox)
    if patch is None or float(np.sum(patch * track.det_patch)) < ncc_threshold:
        return None
    return pts


def track_landmarks(
    frames: Iterable[np.ndarray],
    landmarker: FaceLandmarker,
    keyframe_interval: int = 12,
    boxes: np.ndarray | None = None,
    iou_threshold: float = 0.5,
    ncc_threshold: float = 0.5,
) -> TrackResult:
    """68 landmarks per frame, detecting only on key frames and on tracking loss.

    Frames t with ``t % keyframe_interval == 0`` run the detector (largest face). In between, the
    predictor runs on the last detector box shifted by the landmark-centroid motion since that
    detection; the box keeps the detector's size, so the predictor sees the same normalisation as
    with per-frame detection. A tracked frame counts as lost, and the detector runs on it, when
    less than half of the landmarks' bounding box lies inside the frame; when that box has IoU
    < ``iou_threshold`` with the detection frame's landmark box moved by the same shift (the
    predictor output drifted out of the carried box or changed size; landmark box against landmark
    box, so the pose-dependent offset between detector and landmark boxes does not count); or when
    its grey appearance has normalised cross-correlation < ``ncc_threshold`` with the face at the
    detection frame (a cut or a blank frame, where the predictor still returns a face-shaped
    guess). Without a track (no face so far, or lost) the detector runs on every frame until it
    finds a face.

    Args:
        frames: BGR uint8 frames; consumed once, never stored.
        landmarker: the detector/predictor; its ``detector_calls`` is increased.
        keyframe_interval: detect every this many frames (1 = every frame).
        boxes: optional (T, 4) per-frame face boxes (x, y, w, h) in pixels, e.g. VoxCeleb
            metadata; they replace detection entirely (zero detector calls). NaN rows mark frames
            without a face.
        iou_threshold: tracking-loss threshold on the landmark-box IoU.
        ncc_threshold: tracking-loss threshold on the appearance correlation (−1..1).
    """
    if keyframe_interval < 1:
        raise ValueError(f"keyframe_interval must be >= 1, got {keyframe_interval}")
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes must have shape (T, 4) as (x, y, w, h), got {boxes.shape}")
    calls_before = landmarker.detector_calls
    landmarks: list[np.ndarray] = []
    detected: list[bool] = []
    track: _Track | None = None
    max_faces = 0
    for t, frame in enumerate(frames):
        rgb = _to_rgb(frame)
        pts: np.ndarray | None = None
        if boxes is not None:
            if t >= len(boxes):
                raise ValueError(f"boxes has {len(boxes)} rows but the clip has more frames")
            x, y, w, h = boxes[t]
            if np.all(np.isfinite(boxes[t])) and w > 0 and h > 0:
                pts = landmarker._landmarks_rgb(rgb, _rect(np.array([x, y, x + w, y + h])))
        else:
            if track is not None and t % keyframe_interval != 0:
                pts = _follow(landmarker, frame, rgb, track, iou_threshold, ncc_threshold)
            if pts is None:
                track = None
                rects = landmarker._detect_rgb(rgb)
                max_faces = max(max_faces, len(rects))
                if rects:
                    pts = landmarker._landmarks_rgb(rgb, rects[0])
                    track = _start_track(frame, rects[0], pts)
            elif track is not None:
                track.centroid = pts.mean(axis=0)
        landmarks.append(pts if pts is not None else np.full((N_LANDMARKS, 2), np.nan))
        detected.append(pts is not None)
    n = len(landmarks)
    return TrackResult(
        landmarks=np.array(landmarks).reshape(n, N_LANDMARKS, 2),
        detected=np.array(detected, dtype=bool),
        detector_calls=landmarker.detector_calls - calls_before,
        n_frames=n,
        max_faces=max_faces,
    )


def detect_every_frame(frames: Iterable[np.ndarray], landmarker: FaceLandmarker) -> TrackResult:
    """Reference path: detector + predictor on every frame (largest face)."""
    return track_landmarks(frames, landmarker, keyframe_interval=1)

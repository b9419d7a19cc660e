"""Key-frame landmark tracking: detect on key frames and on tracking loss, predict in between.

Detection is the expensive step (~5 ms for a 256² frame at upsample 0, ~20 ms for 512²; the 68-point
model ~0.5 ms), so :func:`track_landmarks` detects only on key frames and on tracking loss, and in between
runs the shape model on the last detector box moved with the landmarks, in whole steps of the detector's own grid
(as the box a detection on that frame would be). A key frame's detector skips the
pyramid levels too small for the tracked face (``FaceLandmarker.detect(expect_width=…)``). The tracker is a
generator that asks for one set of landmarks at a time, so :func:`track_many` can run several clips in lockstep
and give the shape model their faces in one batch (each model tree is then read from memory once for the batch
instead of once per face).
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from dataclasses import dataclass

import cv2
import dlib
import numpy as np

from davs_model.face import HOG_CELL, N_LANDMARKS, WINDOW_WIDTH, FaceLandmarker, box_of, check_bgr

PATCH_SIZE = 32  # side of the grey patch used by the tracker's appearance check

# A request for landmarks: (BGR frame, box (l, t, r, b) inclusive); the tracker is sent back (68, 2) points.
Request = tuple[np.ndarray, np.ndarray]


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


Box = tuple[float, float, float, float]  # [left, top, right, bottom) in pixels; plain floats: per-frame math is
# a few dozen scalar operations, ~10x cheaper on Python floats than on small numpy arrays (same double arithmetic)


def _rect(box: Box) -> np.ndarray:
    """[left, top, right, bottom) float box → (l, t, r, b) ints with inclusive right/bottom, as dlib.rectangle."""
    left, top, right, bottom = (int(round(v)) for v in box)
    return np.array([left, top, right - 1, bottom - 1], np.int64)


def _box_of(rect: dlib.rectangle) -> Box:
    return float(rect.left()), float(rect.top()), float(rect.right() + 1), float(rect.bottom() + 1)


def _bbox(pts: np.ndarray) -> Box:
    (x0, y0), (x1, y1) = pts.min(axis=0).tolist(), pts.max(axis=0).tolist()
    return x0, y0, x1, y1


def _moved(box: Box, dx: float, dy: float) -> Box:
    return box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy


def _area(box: Box) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def _iou(a: Box, b: Box) -> float:
    inter = _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _patch(image_bgr: np.ndarray, box: Box) -> np.ndarray | None:
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

    det_box: Box  # detector box at the detection frame
    det_centroid: tuple[float, float]  # landmark centroid at the detection frame
    det_bbox: Box  # landmark bounding box at the detection frame
    det_patch: np.ndarray  # appearance of the face at the detection frame
    centroid: tuple[float, float]  # landmark centroid in the latest frame

    def shift(self) -> tuple[float, float]:
        """The landmarks' centroid motion since the detection frame."""
        return self.centroid[0] - self.det_centroid[0], self.centroid[1] - self.det_centroid[1]

    def box(self, shift: tuple[float, float]) -> Box:
        """The detector box moved by ``shift`` rounded to whole steps of the detector's grid.

        The HOG detector places a box of this size only on a grid of one cell of its pyramid level (box width ·
        HOG_CELL / WINDOW_WIDTH: ~14 px for a 125 px box), so a detection on this frame gives the same box until
        the face has moved about half a step, then one a whole step away. The 68-point model's output depends on
        its box; on the grid it sees the box a detection would give: against detecting on every frame, the mean
        landmark difference fell from 0.309 to 0.199 px on the demo clips (BENCHMARKS.md, issue 7.1).
        """
        step = (self.det_box[2] - self.det_box[0]) * HOG_CELL / WINDOW_WIDTH
        return _moved(self.det_box, step * round(shift[0] / step), step * round(shift[1] / step))


def _centroid(pts: np.ndarray) -> tuple[float, float]:
    x, y = pts.mean(axis=0).tolist()
    return x, y


def _start_track(image_bgr: np.ndarray, rect: dlib.rectangle, pts: np.ndarray) -> _Track | None:
    bbox = _bbox(pts)
    patch = _patch(image_bgr, bbox)
    if patch is None:
        return None
    c = _centroid(pts)
    return _Track(_box_of(rect), c, bbox, patch, c)


def _followed(
    image_bgr: np.ndarray,
    pts: np.ndarray,
    track: _Track,
    shift: tuple[float, float],
    iou_threshold: float,
    ncc_threshold: float,
) -> np.ndarray | None:
    """``pts`` predicted in the carried box if they still hold the tracked face; None on tracking loss."""
    bbox = _bbox(pts)
    h, w = image_bgr.shape[:2]
    inside = _area((max(bbox[0], 0.0), max(bbox[1], 0.0), min(bbox[2], w), min(bbox[3], h)))
    if inside < 0.5 * _area(bbox):  # the face left the frame
        return None
    # the landmarks no longer fit the carried box
    if _iou(bbox, _moved(track.det_bbox, *shift)) < iou_threshold:
        return None
    # not the same face (a cut, a blank frame)
    patch = _patch(image_bgr, bbox)
    if patch is None or float(np.dot(patch.ravel(), track.det_patch.ravel())) < ncc_threshold:
        return None
    return pts


def tracking(
    frames: Iterable[np.ndarray],
    landmarker: FaceLandmarker,
    keyframe_interval: int = 30,
    boxes: np.ndarray | None = None,
    iou_threshold: float = 0.5,
    ncc_threshold: float = 0.5,
) -> Generator[Request, np.ndarray, TrackResult]:
    """68 landmarks per frame, detecting only on key frames and on tracking loss.

    Frames t with ``t % keyframe_interval == 0`` run the detector (largest face). In between, the
    predictor runs on the last detector box shifted by the landmark-centroid motion since that
    detection, rounded to whole steps of the detector's grid (``_Track.box``); the box keeps the
    detector's size, so the predictor sees the same normalisation as with per-frame detection. A
    tracked frame counts as lost, and the detector runs on it, when less than half of the
    landmarks' bounding box lies inside the frame; when that box has IoU < ``iou_threshold`` with
    the detection frame's landmark box moved by the same shift (the predictor output drifted out of
    the carried box or changed size; landmark box against landmark box, so the pose-dependent
    offset between detector and landmark boxes does not count); or when its grey appearance has
    normalised cross-correlation < ``ncc_threshold`` with the face at the detection frame (a cut or
    a blank frame, where the predictor still returns a face-shaped guess). Without a track (no face
    so far, or lost) the detector runs on every frame until it finds a face.

    A generator: it yields each (frame, box) whose landmarks it needs, is sent them (68, 2), and
    returns the :class:`TrackResult` (``StopIteration.value``); detection runs inside it.
    :func:`track_landmarks` drives one, :func:`track_many` several in lockstep.

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
    calls = 0  # this clip's own (the landmarker's counter also counts the clips tracked beside it)
    landmarks: list[np.ndarray] = []
    detected: list[bool] = []
    track: _Track | None = None
    max_faces = 0
    for t, frame in enumerate(frames):
        check_bgr(frame)
        pts: np.ndarray | None = None
        if boxes is not None:
            if t >= len(boxes):
                raise ValueError(f"boxes has {len(boxes)} rows but the clip has more frames")
            x, y, w, h = boxes[t]
            if np.all(np.isfinite(boxes[t])) and w > 0 and h > 0:
                pts = yield frame, _rect(np.array([x, y, x + w, y + h]))
        else:
            if track is not None and t % keyframe_interval != 0:
                shift = track.shift()
                pts = yield frame, _rect(track.box(shift))
                pts = _followed(frame, pts, track, shift, iou_threshold, ncc_threshold)
            if pts is None:
                # at a key frame the face is near the size it had: the detector may skip the smaller scales
                keyframe = track is not None and t % keyframe_interval == 0
                expect = track.det_box[2] - track.det_box[0] if keyframe else None
                track = None
                rects = landmarker.detect(frame, expect_width=expect)
                calls += 1
                max_faces = max(max_faces, len(rects))
                if rects:
                    pts = yield frame, box_of(rects[0])
                    track = _start_track(frame, rects[0], pts)
            elif track is not None:
                track.centroid = _centroid(pts)
        landmarks.append(pts if pts is not None else np.full((N_LANDMARKS, 2), np.nan))
        detected.append(pts is not None)
    n = len(landmarks)
    return TrackResult(
        landmarks=np.array(landmarks).reshape(n, N_LANDMARKS, 2),
        detected=np.array(detected, dtype=bool),
        detector_calls=calls,
        n_frames=n,
        max_faces=max_faces,
    )


def track_landmarks(frames: Iterable[np.ndarray], landmarker: FaceLandmarker, **options) -> TrackResult:
    """68 landmarks per frame of one clip: :func:`tracking` (same options), one face at a time."""
    (result,) = track_many([tracking(frames, landmarker, **options)], landmarker)
    if isinstance(result, Exception):
        raise result
    return result


def track_many(trackers: list[Generator[Request, np.ndarray, TrackResult]], landmarker: FaceLandmarker) -> list:
    """Run several :func:`tracking` generators in lockstep, their landmark requests in one batch per step.

    Returns, in order, each one's :class:`TrackResult`, or the exception it raised (one bad clip does not stop the
    others).
    """
    results: list = [None] * len(trackers)
    pending: dict[int, Request] = {}
    for i, steps in enumerate(trackers):
        _advance(steps, i, None, pending, results)
    while pending:
        order = list(pending)
        points = landmarker.landmarks_many([pending[i][0] for i in order], [pending[i][1] for i in order])
        for i, pts in zip(order, points, strict=True):
            _advance(trackers[i], i, pts, pending, results)
    return results


def _advance(steps, i: int, pts: np.ndarray | None, pending: dict, results: list) -> None:
    try:
        pending[i] = steps.send(pts)  # send(None) starts a generator, as next() does
    except StopIteration as done:
        pending.pop(i, None)
        results[i] = done.value
    except Exception as err:  # noqa: BLE001  (the caller turns it into the clip's QC row)
        pending.pop(i, None)
        results[i] = err


def detect_every_frame(frames: Iterable[np.ndarray], landmarker: FaceLandmarker) -> TrackResult:
    """Reference path: detector + predictor on every frame (largest face)."""
    return track_landmarks(frames, landmarker, keyframe_interval=1)

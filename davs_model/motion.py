"""Temporal processing of a clip's per-frame alignment transforms (additions to the original's alignment).

The original aligns every frame on its own (:mod:`davs_model.align`); here the per-frame 2×3 matrices (the
``M256.npy`` the original stores) are made for a whole tracked clip (:func:`clip_transforms`), filled in where no
face was found (:func:`interpolate_missing`), smoothed over time (:func:`smooth_transforms`) and scored for
frame-to-frame instability (:func:`jitter_scores`).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from davs_model.align import TEMPLATE, anchor_transforms, canvas_to_output
from davs_model.face import anchors_from_68


def _decompose(Ms: np.ndarray) -> np.ndarray:
    """(T, 2, 3) similarities → (T, 4) [log scale, angle (unwrapped over T), tx, ty].

    A non-similarity (e.g. a reflection, which the unguarded Procrustes can return) is projected
    onto the nearest rotation+scale ``[[a, −b], [b, a]]`` with a = (m00 + m11)/2, b = (m10 − m01)/2.
    """
    Ms = np.asarray(Ms, dtype=np.float64)
    if Ms.ndim != 3 or Ms.shape[1:] != (2, 3):
        raise ValueError(f"transforms must have shape (T, 2, 3), got {Ms.shape}")
    a = 0.5 * (Ms[:, 0, 0] + Ms[:, 1, 1])
    b = 0.5 * (Ms[:, 1, 0] - Ms[:, 0, 1])
    scale = np.hypot(a, b)
    if np.any(~(scale > 0)):
        raise ValueError("transform with zero or non-finite scale")
    angle = np.unwrap(np.arctan2(b, a))
    return np.stack([np.log(scale), angle, Ms[:, 0, 2], Ms[:, 1, 2]], axis=1)


def _compose(params: np.ndarray) -> np.ndarray:
    """(T, 4) [log scale, angle, tx, ty] → (T, 2, 3) similarities."""
    s = np.exp(params[:, 0])
    c, si = s * np.cos(params[:, 1]), s * np.sin(params[:, 1])
    out = np.empty((len(params), 2, 3))
    out[:, 0, 0], out[:, 0, 1], out[:, 0, 2] = c, -si, params[:, 2]
    out[:, 1, 0], out[:, 1, 1], out[:, 1, 2] = si, c, params[:, 3]
    return out


def smooth_transforms(Ms: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Gaussian-smooth per-frame similarities over time (σ in frames; 0 returns a copy unchanged).

    Each matrix is decomposed into (log scale, angle, tx, ty), the angle unwrapped over time; each
    parameter is smoothed with ``gaussian_filter1d(mode='nearest')`` and the matrices recomposed.
    This damps the per-frame "zoom-in-and-out" jitter of the original's independent alignment.
    """
    Ms = np.asarray(Ms, dtype=np.float64)
    if sigma_frames < 0 or not np.isfinite(sigma_frames):
        raise ValueError(f"sigma_frames must be finite and >= 0, got {sigma_frames}")
    params = _decompose(Ms)  # validates the shape
    if sigma_frames == 0 or len(Ms) < 2:
        return Ms.copy()
    smoothed = gaussian_filter1d(params, sigma_frames, axis=0, mode="nearest")
    return _compose(smoothed)


def jitter_scores(Ms: np.ndarray) -> dict[str, float]:
    """Frame-to-frame instability of a sequence of alignment transforms.

    - ``jitter_scale``: mean over t of ``|s_t / s_{t−1} − 1|``, in percent (s = similarity scale).
    - ``jitter_shift_px``: mean over t of the RMS displacement, in 260-px output pixels, of the
      three template anchors: take the source points that ``M_t`` puts exactly on the template
      anchors (``M_t⁻¹ · TEMPLATE``), map them with ``M_{t−1}``, and measure in the output how far
      they land from the template anchors. It is the apparent motion of a static source point near
      the eyes and mouth between consecutive aligned frames (rotation and zoom included), so for a
      still face it is pure alignment jitter.

    Both are 0.0 for fewer than two frames.
    """
    Ms = np.asarray(Ms, dtype=np.float64)
    params = _decompose(Ms)
    if len(Ms) < 2:
        return {"jitter_scale": 0.0, "jitter_shift_px": 0.0}
    scale = np.exp(params[:, 0])
    jitter_scale = float(np.mean(np.abs(scale[1:] / scale[:-1] - 1.0)) * 100.0)
    prev, cur = Ms[:-1], Ms[1:]
    inv = np.linalg.inv(cur[:, :, :2])  # M_t⁻¹ · TEMPLATE, for all t at once
    src = (TEMPLATE[None] - cur[:, None, :, 2]) @ np.swapaxes(inv, 1, 2)
    landed = canvas_to_output(src @ np.swapaxes(prev[:, :, :2], 1, 2) + prev[:, None, :, 2])  # by M_{t-1}
    d = landed - canvas_to_output(TEMPLATE)
    shifts = np.sqrt(np.mean(np.sum(d**2, axis=2), axis=1))
    return {"jitter_scale": jitter_scale, "jitter_shift_px": float(np.mean(shifts))}


def interpolate_missing(Ms: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill frames where ``valid`` is False by linear interpolation of (log scale, angle, tx, ty).

    Frames before the first / after the last valid frame hold the nearest valid transform. Invalid
    frames' input matrices are ignored (they may be NaN).

    Raises:
        ValueError: if no frame is valid or the shapes disagree.
    """
    Ms = np.asarray(Ms, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    if Ms.ndim != 3 or Ms.shape[1:] != (2, 3) or valid.shape != (len(Ms),):
        raise ValueError(f"need Ms (T, 2, 3) and valid (T,), got {Ms.shape} and {valid.shape}")
    if not valid.any():
        raise ValueError("no valid frame to interpolate from")
    t = np.arange(len(Ms))
    known = _decompose(Ms[valid])
    params = np.stack([np.interp(t, t[valid], known[:, k]) for k in range(4)], axis=1)
    out = _compose(params)
    out[valid] = Ms[valid]  # keep the valid frames bit-exact
    return out


def clip_transforms(landmarks: np.ndarray, detected: np.ndarray, duplicate_eyes: bool = True) -> np.ndarray:
    """(T, 2, 3) alignment of a tracked clip: the original's per-frame transform (:func:`~davs_model.align.
    anchor_transforms`, bit for bit) where a face was found, interpolated (:func:`interpolate_missing`) elsewhere.

    Args:
        landmarks: (T, 68, 2) per-frame landmarks (NaN where none).
        detected: (T,) bool, True where ``landmarks`` holds a face; at least one.
        duplicate_eyes: the LRW training protocol's five points (see :func:`~davs_model.align.anchor_transform`).
    """
    detected = np.asarray(detected, dtype=bool)
    ms = np.full((len(detected), 2, 3), np.nan)
    if detected.any():
        ms[detected] = anchor_transforms(anchors_from_68(landmarks[detected]), duplicate_eyes=duplicate_eyes)
    return interpolate_missing(ms, detected)

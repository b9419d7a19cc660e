"""Tests for davs_model.motion: a clip's transforms over time (gap filling, smoothing, jitter)."""

from __future__ import annotations

import numpy as np
import pytest

from davs_model.align import TEMPLATE, anchor_transform
from davs_model.face import anchors_from_68
from davs_model.motion import clip_transforms, interpolate_missing, jitter_scores, smooth_transforms
from tests.unit.test_align import apply, similarity


def noisy_still_face(n: int = 60, noise_px: float = 1.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    anchors = apply(similarity(np.log(0.7), 0.1, 180.0, 40.0), TEMPLATE)
    return np.stack([anchor_transform(anchors + rng.normal(0, noise_px, anchors.shape)) for _ in range(n)])


def test_smoothing_reduces_jitter_of_a_still_face() -> None:
    Ms = noisy_still_face()
    before, after = jitter_scores(Ms), jitter_scores(smooth_transforms(Ms, 3.0))
    print(f"jitter before {before}, after sigma=3: {after}")
    assert after["jitter_scale"] < 0.5 * before["jitter_scale"]
    assert after["jitter_shift_px"] < 0.5 * before["jitter_shift_px"]


def test_smoothing_sigma_zero_is_identity_and_constant_is_fixed_point() -> None:
    Ms = noisy_still_face(n=10)
    out = smooth_transforms(Ms, 0)
    assert out is not Ms
    np.testing.assert_array_equal(out, Ms)
    const = np.repeat(Ms[:1], 8, axis=0)
    np.testing.assert_allclose(smooth_transforms(const, 2.0), const, atol=1e-9)


def test_smoothing_unwraps_the_angle() -> None:
    """Angles around ±π must not be averaged to 0 (a face upside down stays upside down)."""
    Ms = np.stack([similarity(0.0, np.pi + d, 0.0, 0.0) for d in (-0.01, 0.01, -0.01, 0.01)])
    angle = np.arctan2(smooth_transforms(Ms, 1.0)[:, 1, 0], smooth_transforms(Ms, 1.0)[:, 0, 0])
    assert np.all(np.abs(np.abs(angle) - np.pi) < 0.02)


def test_jitter_scores_known_values() -> None:
    assert jitter_scores(noisy_still_face(n=1)) == {"jitter_scale": 0.0, "jitter_shift_px": 0.0}
    still = np.repeat(similarity(0.2, 0.1, 5.0, 6.0)[None], 5, axis=0)
    assert jitter_scores(still) == pytest.approx({"jitter_scale": 0.0, "jitter_shift_px": 0.0})
    # scale grows 1 % per frame
    zoom = np.stack([similarity(t * np.log(1.01), 0.0, 0.0, 0.0) for t in range(6)])
    assert jitter_scores(zoom)["jitter_scale"] == pytest.approx(1.0)
    # the canvas image moves 2 px right per frame → 2·260/268 output px
    shift = np.stack([similarity(0.1, 0.2, 2.0 * t, 0.0) for t in range(6)])
    scores = jitter_scores(shift)
    assert scores["jitter_scale"] == pytest.approx(0.0, abs=1e-9)
    assert scores["jitter_shift_px"] == pytest.approx(2.0 * 260 / 268)


def test_interpolate_missing_recovers_a_linear_sequence() -> None:
    t = np.arange(12)
    params = np.stack([0.01 * t - 0.3, 0.02 * t + 3.1, 3.0 * t + 10, -1.5 * t], axis=1)
    truth = np.stack([similarity(*p) for p in params])
    valid = np.ones(12, bool)
    valid[[2, 3, 4, 8]] = False
    damaged = truth.copy()
    damaged[~valid] = np.nan
    np.testing.assert_allclose(interpolate_missing(damaged, valid), truth, atol=1e-9)


def test_interpolate_missing_holds_at_the_ends_and_needs_a_valid_frame() -> None:
    truth = np.stack([similarity(0.01 * t, 0.0, t, 0.0) for t in range(6)])
    valid = np.array([False, False, True, True, False, False])
    out = interpolate_missing(np.where(valid[:, None, None], truth, np.nan), valid)
    np.testing.assert_allclose(out[:2], truth[[2, 2]], atol=1e-12)
    np.testing.assert_allclose(out[4:], truth[[3, 3]], atol=1e-12)
    with pytest.raises(ValueError):
        interpolate_missing(truth, np.zeros(6, bool))


def test_jitter_scores_of_a_shaky_clip_match_a_frame_by_frame_computation() -> None:
    """The vectorised score equals the definition computed pair by pair (inverse with OpenCV, as before)."""
    import cv2

    from davs_model.align import output_points

    Ms = noisy_still_face(n=30, noise_px=3.0, seed=3)
    target = (TEMPLATE - [44, 104]) * 260 / 268  # the template anchors in the output
    shifts = []
    for prev, cur in zip(Ms[:-1], Ms[1:], strict=True):
        src = apply(cv2.invertAffineTransform(cur), TEMPLATE)
        shifts.append(np.sqrt(np.mean(np.sum((output_points(prev, src) - target) ** 2, axis=1))))
    assert jitter_scores(Ms)["jitter_shift_px"] == pytest.approx(float(np.mean(shifts)), rel=1e-12)


def test_clip_transforms_are_the_per_frame_ones_where_a_face_was_found() -> None:
    rng = np.random.default_rng(5)
    landmarks = rng.normal(0, 25, (9, 68, 2)) + [128, 120]
    detected = np.array([False, True, True, False, False, True, True, True, False])
    landmarks[~detected] = np.nan
    ms = clip_transforms(landmarks, detected, duplicate_eyes=True)
    for t in np.flatnonzero(detected):
        assert np.array_equal(ms[t], anchor_transform(anchors_from_68(landmarks[t]), duplicate_eyes=True))
    np.testing.assert_allclose(ms[0], ms[1], atol=1e-9)  # held before the first face
    assert np.all(np.isfinite(ms))
    with pytest.raises(ValueError, match="no valid frame"):
        clip_transforms(landmarks, np.zeros(9, bool))

"""The evaluation metrics on hand-made inputs with known answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from davs_model.evaluation import metrics as m


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return skimage.data.astronaut()[40:296, 150:406].astype(np.float64) / 255  # 256×256 float RGB


def test_psnr_of_identical_images_is_capped_and_matches_skimage_otherwise(face):
    assert m.psnr(face, face) == m.PSNR_CAP_DB
    noisy = np.clip(face + 0.05, 0, 1)
    mse = np.mean((noisy - face) ** 2)
    assert m.psnr(noisy, face) == pytest.approx(10 * np.log10(1 / mse))
    assert m.psnr(np.stack([face, noisy]), np.stack([face, face])) == pytest.approx(
        (m.PSNR_CAP_DB + m.psnr(noisy, face)) / 2
    )


def test_ssim_is_one_for_identical_images_and_lower_otherwise(face):
    assert m.ssim(face, face) == pytest.approx(1.0)
    assert m.ssim(cv2.GaussianBlur(face, (0, 0), 2), face) < 0.95
    with pytest.raises(ValueError, match="differ in shape"):
        m.ssim(face, face[:128])


def _landmarks() -> np.ndarray:
    """A face-like 68-point set: eyes 80 px apart, a 20-point mouth."""
    pts = np.zeros((68, 2))
    pts[:36] = np.stack([np.linspace(40, 216, 36), np.full(36, 60.0)], 1)
    pts[36:42] = [90, 110] + np.random.default_rng(0).normal(0, 3, (6, 2))
    pts[36:42] += [90, 110] - pts[36:42].mean(0)
    pts[42:48] = pts[36:42] + [80, 0]
    angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    pts[48:68] = np.stack([130 + 30 * np.cos(angles), 190 + 12 * np.sin(angles)], 1)
    return pts


def test_lmd_is_zero_for_identical_landmarks_and_ignores_head_motion():
    gt = _landmarks()[None].repeat(3, axis=0)
    assert m.lmd(gt, gt) == 0.0
    assert m.lmd(gt + [5.0, -3.0], gt) == pytest.approx(0.0, abs=1e-12)  # mean-centred mouth


def test_lmd_of_a_lowered_lower_lip_has_the_hand_computed_value():
    gt = _landmarks()[None]
    pred = gt.copy()
    lower = [55, 56, 57, 58, 59, 64, 65, 66, 67]  # outer and inner lower lip: 9 of the 20 mouth points
    d = 4.0
    pred[0, lower, 1] += d
    # centred: the 9 moved points are off by d − 9d/20 = 11d/20, the other 11 by 9d/20
    expected = (9 * 11 * d / 20 + 11 * 9 * d / 20) / 20 / 80.0  # / inter-ocular distance
    assert m.lmd(pred, gt) == pytest.approx(expected)


def test_lmd_skips_frames_without_landmarks():
    gt = _landmarks()[None].repeat(2, axis=0)
    pred = gt.copy()
    pred[1] = np.nan
    assert m.lmd(pred, gt) == 0.0
    assert np.isnan(m.lmd(pred[1:], gt[1:]))


def test_retrieval_on_a_hand_made_distance_matrix():
    d = np.array(
        [
            [0.1, 0.5, 0.9, 0.7],  # match ranks 1st
            [0.2, 0.3, 0.9, 0.7],  # 2nd
            [0.1, 0.2, 0.8, 0.3],  # 4th
            [0.5, 0.5, 0.1, 0.4],  # 2nd
        ]
    )
    assert list(m.rank_of_matches(d)) == [0, 1, 3, 1]
    r = m.retrieval(d)
    assert r["R@1"] == 25.0 and r["R@5"] == 100.0 and r["R@10"] == 100.0 and r["R@50"] == 100.0
    assert r["median_rank"] == 2.0  # floor(median([0, 1, 3, 1]) = 1) + 1
    assert r["mean_rank"] == pytest.approx(2.25)
    ties = np.zeros((3, 3))
    assert list(m.rank_of_matches(ties)) == [0, 1, 2]  # stable: ties go to the earlier candidate


def test_retrieval_from_embeddings_finds_matching_pairs_both_ways():
    rng = np.random.default_rng(0)
    video = rng.normal(size=(20, 32))
    audio = 3.0 * video + rng.normal(scale=0.01, size=video.shape)  # the scale is removed by the L2 norm
    r = m.retrieval_from_embeddings(audio, video)
    assert r["audio_to_video"]["R@1"] == 100.0 and r["video_to_audio"]["median_rank"] == 1.0


def test_accuracy():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [5.0, 0.0, 0.0], [0.0, 2.0, 1.0]])
    assert m.accuracy(logits, np.array([0, 2, 1, 1])) == 75.0
    with pytest.raises(ValueError):
        m.accuracy(logits, np.array([0, 1]))


def test_cpbd_sharper_image_scores_higher(face):
    scores = [m.cpbd(cv2.GaussianBlur(face, (0, 0), sigma) if sigma else face) for sigma in (0, 0.5, 1.0, 2.0)]
    assert 1 >= scores[0] > scores[1] > scores[2] > 0 and scores[3] == 0.0  # monotone in the blur
    assert np.isnan(m.cpbd(np.full((64, 64, 3), 0.5)))  # no edges at all


def test_cpbd_edge_width_of_a_ramp():
    ramp = np.tile(np.r_[np.zeros(10), np.linspace(0, 255, 6)[1:-1], np.full(10, 255.0)], (5, 1))
    edges = np.zeros_like(ramp, dtype=bool)
    edges[2, 12] = True  # inside the 4-pixel ramp (columns 10..13)
    widths = m._edge_widths(ramp, edges)
    assert widths[2, 12] == 5  # columns 10..14 span the rise from the last 0 to the first 255 (5 pixels)


def test_jitter_counts_only_motion_outside_the_mouth(face):
    moved_mouth = face.copy()
    moved_mouth[170:234, 64:192] = 0.0
    assert m.jitter(np.stack([face, moved_mouth]), (170, 234, 64, 192)) == 0.0
    shifted = np.roll(face, 1, axis=1)
    assert m.jitter(np.stack([face, shifted]), (170, 234, 64, 192)) > 1.0
    assert m.jitter(face) == 0.0  # a single frame


def test_every_metric_has_a_definition():
    assert set(m.DEFINITIONS) == {"psnr", "ssim", "lmd", "cpbd", "jitter", "word_accuracy", "retrieval"}
    assert "inter-ocular" in m.DEFINITIONS["lmd"] and "data_range=1" in m.DEFINITIONS["psnr"]

"""Tests of davs_model.losses: every loss against values computed by hand on tiny tensors."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from davs_model.losses import (
    LossWeights,
    bce,
    l2_contrastive,
    masked_l1,
    mouth_mask,
    previous_frame_l1,
    soft_targets,
    uniform_softmax_loss,
    word_ce,
)
from davs_model.networks.common import mouth_box

# ----------------------------------------------------------------------------- GAN terms


def test_bce_float_target_is_the_formula():
    p = torch.tensor([0.2, 0.7, 0.9])
    expected_real = -(math.log(0.2) + math.log(0.7) + math.log(0.9)) / 3
    expected_fake = -(math.log(0.8) + math.log(0.3) + math.log(0.1)) / 3
    assert bce(p, 1.0).item() == pytest.approx(expected_real, rel=1e-6)
    assert bce(p, 0).item() == pytest.approx(expected_fake, rel=1e-6)


def test_bce_tensor_target_is_the_formula():
    p, t = torch.tensor([[0.2, 0.7], [0.5, 0.9]]), torch.tensor([[0.0, 1.0], [0.5, 0.95]])
    expected = -(t * p.log() + (1 - t) * (1 - p).log()).mean()
    assert bce(p, t).item() == pytest.approx(expected.item(), rel=1e-6)
    # a scalar tensor target broadcasts like a float
    assert bce(p, torch.tensor(1.0)).item() == pytest.approx(bce(p, 1.0).item())


def test_bce_saturated_probabilities_stay_finite():
    loss = bce(torch.tensor([0.0, 1.0]), 1.0)  # BCELoss clamps the log at -100
    assert loss.item() == pytest.approx(50.0)


@pytest.mark.parametrize("real", [True, False])
def test_soft_targets_ranges_and_one_draw_per_call(real):
    like = torch.zeros(4, 1, 30, 30, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    values = []
    for _ in range(200):
        t = soft_targets(like, real, g)
        assert t.shape == like.shape and t.dtype == like.dtype
        assert torch.all(t == t.flatten()[0])  # one u per call, as random.random() * 0.1 filled in
        values.append(t.flatten()[0].item())
    lo, hi = (0.9, 1.0) if real else (0.0, 0.1)
    assert all(lo <= v <= hi for v in values)
    assert max(values) - min(values) > 0.08  # spreads over the whole interval
    assert len(set(values)) == len(values)  # resampled on every call


def test_soft_targets_reproducible_with_a_generator():
    like = torch.zeros(3)
    a = [soft_targets(like, True, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(a[0], a[1])
    g = torch.Generator().manual_seed(7)
    assert torch.equal(soft_targets(like, True, g), a[0])
    assert not torch.equal(soft_targets(like, True, g), a[0])  # the generator advanced


# ----------------------------------------------------------------------------- contrastive / classification


def test_l2_contrastive_by_hand():
    f1 = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    f2 = torch.tensor([[0.0, 0.5], [0.6, 0.0]])
    # d11 = 0.5, d22 = 0.4, d12 = |(0,0)-(0.6,0)| = 0.6, d21 = |(1,0)-(0,0.5)| = sqrt(1.25) > 1
    expected = ((1 - 0.6) ** 2 + 0.0 + 0.5**2 + 0.4**2) / (2 * 2)
    assert l2_contrastive(f1, f2).item() == pytest.approx(expected)  # 0.1425
    d21 = math.sqrt(1.25)
    expected_m2 = ((2 - 0.6) ** 2 + (2 - d21) ** 2 + 0.5**2 + 0.4**2) / 4
    assert l2_contrastive(f1, f2, margin=2.0).item() == pytest.approx(expected_m2, rel=1e-6)


def test_l2_contrastive_matches_a_loop_implementation():
    g = torch.Generator().manual_seed(1)
    f1, f2 = torch.randn(5, 7, generator=g) * 0.3, torch.randn(5, 7, generator=g) * 0.3
    total = 0.0
    for i in range(5):
        for j in range(5):
            d = torch.linalg.vector_norm(f1[i] - f2[j]).item()
            total += d**2 if i == j else max(0.0, 1.0 - d) ** 2
    assert l2_contrastive(f1, f2).item() == pytest.approx(total / 10, rel=1e-5)


def test_l2_contrastive_finite_gradient_at_zero_distance_and_detached_side():
    f1 = torch.zeros(3, 4)  # every pair at distance 0: both terms at their kink
    f2 = torch.zeros(3, 4, requires_grad=True)
    loss = l2_contrastive(f1.detach(), f2)
    loss.backward()
    assert loss.item() == pytest.approx(2 * 3 / 6)  # 6 negatives with (1-0)^2, positives 0
    assert torch.isfinite(f2.grad).all()


def test_l2_contrastive_rejects_bad_shapes():
    with pytest.raises(ValueError):
        l2_contrastive(torch.zeros(2, 3), torch.zeros(3, 3))


def test_uniform_softmax_zero_for_equal_logits_and_by_hand():
    assert uniform_softmax_loss(torch.full((3, 500), 2.5)).item() == pytest.approx(0.0, abs=1e-12)
    assert uniform_softmax_loss(torch.tensor([[4.0, 4.0], [-1.0, -1.0]])).item() == pytest.approx(0.0)
    # softmax([0, ln 3]) = [0.25, 0.75] -> ((0.25-0.5)^2 + (0.75-0.5)^2) / 2
    assert uniform_softmax_loss(torch.tensor([[0.0, math.log(3.0)]])).item() == pytest.approx(0.0625)


def test_word_ce_by_hand_and_unlabelled_clips():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    assert word_ce(logits, torch.tensor([1, 0])).item() == pytest.approx(
        (-math.log(0.75) - math.log(0.5)) / 2, rel=1e-6
    )
    assert word_ce(logits, torch.tensor([1, -1])).item() == pytest.approx(-math.log(0.75), rel=1e-6)
    z = logits.clone().requires_grad_()
    loss = word_ce(z, torch.tensor([-1, -1]))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(z.grad == 0)
    assert word_ce(logits, torch.tensor([1, 0])).item() == pytest.approx(
        F.cross_entropy(logits, torch.tensor([1, 0])).item()
    )


# ----------------------------------------------------------------------------- pixel terms


def test_masked_l1_by_hand():
    real = torch.tensor([[0.1, 0.2], [0.3, 0.4]]).reshape(1, 1, 2, 2)
    fake = torch.zeros_like(real)
    assert masked_l1(fake, real).item() == pytest.approx(255 * 0.25, rel=1e-6)
    mask = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).reshape(1, 1, 2, 2)
    assert masked_l1(fake, real, mask).item() == pytest.approx(255 * 0.1 / 4, rel=1e-6)  # mean over all 4
    assert masked_l1(fake, real, mask, scale=1.0).item() == pytest.approx(0.1 / 4, rel=1e-6)
    assert masked_l1(real, real).item() == 0.0


def test_masked_l1_broadcasts_a_mouth_mask_over_sequences():
    s = 64
    real = torch.zeros(2, 3, 3, s, s)
    fake = torch.ones_like(real)
    m = mouth_mask(s)
    top, bottom, left, right = mouth_box(s)
    area = (bottom - top) * (right - left)
    assert masked_l1(fake, real, m).item() == pytest.approx(255 * area / s**2, rel=1e-6)


def test_previous_frame_l1_by_hand():
    identity = torch.zeros(1, 3, 2, 2)
    fakes = torch.stack([torch.full((3, 2, 2), 0.5), torch.full((3, 2, 2), 0.75)])[None]  # (1,2,3,2,2)
    ones = torch.ones(1, 1, 2, 2)
    assert previous_frame_l1(fakes, identity, ones).item() == pytest.approx(0.5 + 0.25)
    half = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).reshape(1, 1, 2, 2)
    assert previous_frame_l1(fakes, identity, half).item() == pytest.approx((0.5 + 0.25) / 2)


def test_previous_frame_l1_gradient_only_into_the_current_frame():
    identity = torch.zeros(1, 3, 2, 2)
    fakes = torch.stack([torch.full((3, 2, 2), 0.5), torch.full((3, 2, 2), 0.75)])[None].requires_grad_()
    previous_frame_l1(fakes, identity, torch.ones(1, 1, 2, 2)).backward()
    n = 3 * 2 * 2  # elements of one frame of the batch
    # frame 1: +1/n from |x1 - A| only; without the detach, |x2 - x1| would add -1/n and cancel it
    assert torch.allclose(fakes.grad[:, 0], torch.full((1, 3, 2, 2), 1.0 / n))
    assert torch.allclose(fakes.grad[:, 1], torch.full((1, 3, 2, 2), 1.0 / n))


def test_previous_frame_l1_rejects_bad_shapes():
    with pytest.raises(ValueError):
        previous_frame_l1(torch.zeros(1, 2, 3, 4, 4), torch.zeros(1, 3, 2, 2), torch.ones(1, 1, 4, 4))


@pytest.mark.parametrize("size", [64, 128, 256])
def test_mouth_mask(size):
    m = mouth_mask(size)
    top, bottom, left, right = mouth_box(size)
    assert m.shape == (1, 1, size, size) and m.dtype == torch.float32
    assert m[..., top:bottom, left:right].eq(1).all()
    assert m.sum().item() == (bottom - top) * (right - left)
    if size == 256:
        assert (top, bottom, left, right) == (170, 234, 64, 192) and m.sum().item() == 64 * 128


# ----------------------------------------------------------------------------- weights


def test_loss_weights_are_the_papers_and_frozen():
    w = LossWeights()
    assert dataclasses.asdict(w) == {
        "gan": 1.0, "sync": 1.0, "l1_whole": 4.0, "l1_mouth": 8.0, "previous_frame": 5.0, "contrastive": 1.0,
        "uniform_softmax": 1e6, "word_ce_audio": 1.0, "word_ce_video": 1.0, "modality": 5.0, "pid_word_ce_d": 1.0,
    }  # fmt: skip
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.gan = 2.0  # type: ignore[misc]
    assert LossWeights(l1_mouth=0.0).l1_mouth == 0.0

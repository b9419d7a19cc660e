"""The measures of bench/learns_on_demo.py (bench/learns_metrics.py): mouth opening, per-sequence-demeaned r and
its bootstrap interval over clips. Pure numpy/torch on synthetic series; no training."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def lm():
    spec = importlib.util.spec_from_file_location("learns_metrics", BENCH / "learns_metrics.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("learns_metrics", module)
    spec.loader.exec_module(module)
    return module


def _clips(rng, n_clips=12, noise=0.0, sign=1.0, offsets=True):
    clips = []
    for _ in range(n_clips):
        real = rng.random((3, 25))
        gen = sign * real + noise * rng.standard_normal((3, 25))
        if offsets:  # per-sequence offsets (colour, identity frame) must not count
            gen = gen + 5.0 * rng.standard_normal((3, 1))
        clips.append((gen, real))
    return clips


def test_pooled_r_removes_each_sequence_mean(lm):
    rng = np.random.default_rng(0)
    assert lm.pooled_r(_clips(rng)) == pytest.approx(1.0)
    assert lm.pooled_r(_clips(rng, sign=-1.0)) == pytest.approx(-1.0)
    # without the per-sequence demeaning the offsets would swamp r
    noisy = lm.pooled_r(_clips(rng, noise=1.0))
    assert 0.1 < noisy < 0.6


def test_pooled_r_is_zero_for_a_constant_mouth(lm):
    rng = np.random.default_rng(1)
    clips = [(np.full((2, 25), 0.3), rng.random((2, 25))) for _ in range(4)]
    assert lm.pooled_r(clips) == 0.0


def test_bootstrap_interval_holds_r_and_narrows_with_more_clips(lm):
    rng = np.random.default_rng(2)
    r, lo, hi = lm.bootstrap_r(_clips(rng, n_clips=6, noise=0.5), n=300)
    assert lo <= r <= hi
    r2, lo2, hi2 = lm.bootstrap_r(_clips(rng, n_clips=48, noise=0.5), n=300)
    assert lo2 <= r2 <= hi2
    assert hi2 - lo2 < hi - lo


def test_mouth_opening_is_darkness_of_the_mouth_centre(lm):
    from davs_model.networks.common import mouth_box

    frames = torch.ones(2, 3, 64, 64)
    top, bottom, left, right = mouth_box(64)
    cy, cx = (top + bottom) // 2, (left + right) // 2
    frames[1, :, cy - 1 : cy + 2, cx - 4 : cx + 4] = 0.0  # a dark gap between the lips
    frames[0, :, :4, :4] = 0.0  # darkness outside the mouth box does not count
    opening = lm.mouth_opening(frames, 64)
    assert opening[0] == pytest.approx(0.0)
    assert opening[1] > 0.05

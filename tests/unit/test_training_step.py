"""The training steps: each changes only its own player's state, every named term is there and finite, and a fixed
seed gives identical losses (randomness only through the step generator)."""

from __future__ import annotations

import math

import pytest
import torch

from davs_model.losses import LossWeights
from davs_model.model import DAVS, DISCRIMINATOR_MODULES, GENERATOR_MODULES
from davs_model.training.config import ModelConfig, TrainConfig
from davs_model.training.loop import build_optimizers
from davs_model.training.step import (
    ASSOCIATION_MODULES,
    d_step,
    g_step,
    generator_forward,
    pretrain_step,
    train_iteration,
)

CFG = ModelConfig(image_size=64, width=1 / 16, n_words=6)
B, S = 2, 64
D_TERMS = {"modality_audio", "modality_video", "patch_fake", "patch_real", "sync_fake", "sync_real", "pid_word_ce"}
G_TERMS = {
    "gan_patch", "gan_sync", "l1_audio_whole", "l1_audio_mouth", "l1_video_whole", "l1_video_mouth",
    "previous_frame", "contrastive", "uniform_softmax", "word_ce_audio", "word_ce_video", "modality_audio",
    "modality_video",
}  # fmt: skip
PRETRAIN_D = {"modality_audio", "modality_video"}
PRETRAIN_G = {"word_ce_audio", "word_ce_video", "contrastive_audio", "contrastive_video", "modality_audio",
              "modality_video"}  # fmt: skip


def make_batch(seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "identity": torch.rand(B, 3, S, S, generator=g),
        "frames": torch.rand(B, 12, 3, S, S, generator=g),
        "mfcc": torch.randn(B, 12, 20, 12, generator=g),
        "gen_index": torch.tensor([0, 6]),
        "disfc_frames": torch.rand(B, 20, 3, S, S, generator=g),
        "label": torch.tensor([1, 4]),
    }


def make_model(seed: int = 0) -> DAVS:
    torch.manual_seed(seed)
    return DAVS(CFG).train()


def optimizers(model: DAVS, stage: str = "main"):
    return build_optimizers(model, stage, TrainConfig(), torch.device("cpu"))


def snapshot(model: DAVS) -> dict[str, dict[str, torch.Tensor]]:
    """Per top-level network: a copy of every parameter and buffer."""
    out = {}
    for name in (*GENERATOR_MODULES, *DISCRIMINATOR_MODULES):
        sub = getattr(model, name)
        out[name] = {k: v.detach().clone() for k, v in [*sub.named_parameters(), *sub.named_buffers()]}
    return out


def changed(before, after, *, buffers: bool = True) -> dict[str, bool]:
    """Per network: did any parameter (and buffer, unless ``buffers=False``) change?"""
    result = {}
    for net, tensors in before.items():
        keys = [k for k in tensors if buffers or not ("running_" in k or "num_batches" in k)]
        result[net] = any(not torch.equal(tensors[k], after[net][k]) for k in keys)
    return result


def check_losses(losses: dict[str, float], d_terms: set[str], g_terms: set[str]) -> None:
    assert set(losses) == {f"D/{t}" for t in d_terms | {"total"}} | {f"G/{t}" for t in g_terms | {"total"}}
    assert all(math.isfinite(v) for v in losses.values()), losses
    for p, terms in (("D", d_terms), ("G", g_terms)):
        assert losses[f"{p}/total"] == pytest.approx(sum(losses[f"{p}/{t}"] for t in terms), rel=1e-5)


def test_pretrain_step_changes_only_the_association_networks():
    model = make_model()
    before = snapshot(model)
    # even an optimiser over every generator network leaves E_p and G alone: they get no gradient
    opt_g = torch.optim.Adam(model.generator_parameters(), 2e-4, betas=(0.9, 0.999))
    _, opt_d = optimizers(model, "pretrain")
    losses = pretrain_step(model, make_batch(), opt_g, opt_d, LossWeights(), torch.Generator().manual_seed(0))
    check_losses(losses, PRETRAIN_D, PRETRAIN_G)
    moved = changed(before, snapshot(model))
    assert {net for net, c in moved.items() if c} == {*ASSOCIATION_MODULES, "discriminator_audio"}


def test_d_step_changes_only_discriminator_state():
    model = make_model()
    _, opt_d = optimizers(model)
    before = snapshot(model)
    losses = d_step(model, make_batch(), opt_d, LossWeights(), torch.Generator().manual_seed(0))
    assert set(losses) == {f"D/{t}" for t in D_TERMS | {"total"}}
    assert all(math.isfinite(v) for v in losses.values())
    moved = changed(before, snapshot(model))
    assert not any(moved[n] for n in GENERATOR_MODULES), moved  # parameters and BN buffers
    assert all(moved[n] for n in DISCRIMINATOR_MODULES), moved


def test_g_step_changes_only_generator_state():
    model = make_model()
    opt_g, _ = optimizers(model)
    before = snapshot(model)
    losses = g_step(model, make_batch(), opt_g, LossWeights(), torch.Generator().manual_seed(0))
    assert set(losses) == {f"G/{t}" for t in G_TERMS | {"total"}}
    assert all(math.isfinite(v) for v in losses.values())
    moved = changed(before, snapshot(model))
    assert not any(moved[n] for n in DISCRIMINATOR_MODULES), moved  # parameters and BN buffers
    assert all(moved[n] for n in GENERATOR_MODULES), moved
    assert all(p.grad is None for p in model.discriminator_parameters())  # frozen: not even computed


def test_iteration_shares_one_forward_and_each_step_moves_its_own_parameters():
    model = make_model()
    opt_g, opt_d = optimizers(model)
    gen, batch = torch.Generator().manual_seed(0), make_batch()
    before = snapshot(model)
    fwd = generator_forward(model, batch, gen)
    after_forward = snapshot(model)
    with_bn = {"ID_encoder", "Decoder", "mfcc_encoder", "lip_feature_encoder"}  # C has no BatchNorm
    assert changed(before, after_forward) == {n: n in with_bn for n in before}  # only G's BN statistics
    assert not any(changed(before, after_forward, buffers=False).values())
    d_losses = d_step(model, batch, opt_d, LossWeights(), gen, fwd=fwd)
    after_d = snapshot(model)
    assert changed(after_forward, after_d) == {n: n in DISCRIMINATOR_MODULES for n in before}
    g_losses = g_step(model, batch, opt_g, LossWeights(), gen, fwd=fwd)
    assert changed(after_d, snapshot(model)) == {n: n in GENERATOR_MODULES for n in before}
    check_losses(d_losses | g_losses, D_TERMS, G_TERMS)
    # the spec's initial magnitudes: the pixel L1 terms dominate, each CE starts near ln(n_words)
    assert g_losses["G/l1_audio_whole"] > 10 * g_losses["G/word_ce_audio"]
    assert d_losses["D/pid_word_ce"] == pytest.approx(math.log(CFG.n_words), rel=0.05)


@pytest.mark.parametrize("stage", ["pretrain", "main"])
def test_fixed_seed_gives_identical_losses_and_touches_no_global_rng(stage):
    def run(step_seed: int) -> dict[str, float]:
        model = make_model()
        opt_g, opt_d = optimizers(model, stage)
        gen = torch.Generator().manual_seed(step_seed)
        fn = pretrain_step if stage == "pretrain" else train_iteration
        global_state = torch.get_rng_state()
        out = [fn(model, make_batch(), opt_g, opt_d, LossWeights(), gen) for _ in range(2)]
        assert torch.equal(torch.get_rng_state(), global_state)  # dropout, soft labels: the step generator only
        return out

    first = run(0)
    assert run(0) == first
    other = run(1)
    assert other != first  # dropout masks (and, in stage 2, D's soft labels) come from the generator
    if stage == "main":
        assert other[0]["D/patch_real"] != first[0]["D/patch_real"]


def test_bf16_autocast_step_is_finite():
    model = make_model()
    opt_g, opt_d = optimizers(model, "pretrain")
    losses = pretrain_step(model, make_batch(), opt_g, opt_d, LossWeights(), torch.Generator(), bf16=True)
    check_losses(losses, PRETRAIN_D, PRETRAIN_G)


def test_loss_weights_scale_their_terms():
    weights = LossWeights(l1_mouth=16.0, modality=0.0)
    base = d_and_g(LossWeights())
    scaled = d_and_g(weights)
    assert scaled["G/l1_audio_mouth"] == pytest.approx(2 * base["G/l1_audio_mouth"], rel=1e-6)
    assert scaled["G/modality_audio"] == 0.0 and scaled["G/modality_video"] == 0.0


def d_and_g(weights: LossWeights) -> dict[str, float]:
    model = make_model()
    opt_g, _ = optimizers(model)
    return g_step(model, make_batch(), opt_g, weights, torch.Generator().manual_seed(0))

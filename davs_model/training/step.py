"""One DAVS training update per function, every loss term named (CycleGAN ``backward_G`` style).

- :func:`pretrain_step`: stage 1, association pretraining of E_a^w, E_v^w and C against D_mod (DAVS_SPEC §4.6,
  reconstructed: the original's ``optimize_parameters_no_generation`` is broken as committed).
- :func:`generator_forward`, :func:`d_step`, :func:`g_step`: stage 2 (§4.1, §4.3, §4.4). One iteration is the
  original's ``optimize_parameters``: one forward, the D step on the detached fakes, then the G step, which
  re-evaluates the *updated* discriminators on the same fakes (pass the forward to both steps as ``fwd=``).

Each step returns ``{"D/<term>": float, ..., "G/<term>": float}``: the *weighted* terms, which add up to
``D/total`` and ``G/total``.

Who changes what. The D step changes only discriminator state, the G step only generator state:

- gradients: the other player's parameters are frozen (``requires_grad=False``) during a step, so no gradient is
  even computed for them; each step zeroes its own optimiser's gradients before its backward;
- BatchNorm buffers: a frozen network still normalises with batch statistics (train mode: the original never
  switches G or D to eval while training) but does not update its running statistics (``track_running_stats`` is
  off for the step). G's running statistics are updated by :func:`generator_forward`, once per iteration as in the
  original's forward; D's by the D step. (The original also updated D's running statistics in the G step; they
  are never used, because D only ever runs in train mode.) :func:`d_step` without ``fwd`` runs the generator
  forward itself, without gradients and with G's statistics frozen.

Randomness only from ``gen``: D's soft labels and every dropout mask (the networks' ``nn.Dropout`` layers are
swapped for ``runtime.GeneratorDropout`` on first use; their state dicts are unchanged).

Precision: ``bf16=True`` runs the forwards under ``torch.autocast(dtype=torch.bfloat16)``. The discriminators'
``logits=True`` path with BCE-with-logits in float32 is used always: the original's Sigmoid + ``BCELoss``
(clamped at −100) is the same loss, and ``F.binary_cross_entropy`` is refused under CUDA autocast.

Data parallel: see :mod:`davs_model.training.distributed` (gradient averaging, gathered contrastive inputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from davs_model.data.dataset import image_tensor
from davs_model.losses import (
    LossWeights,
    l2_contrastive,
    masked_l1,
    mouth_mask,
    previous_frame_l1,
    soft_targets,
    uniform_softmax_loss,
    word_ce,
)
from davs_model.model import DAVS, DISCRIMINATOR_MODULES, GENERATOR_MODULES
from davs_model.networks.identity_encoder import NET1
from davs_model.training.distributed import average_gradients, gather_batch
from davs_model.training.runtime import bind_generator, frozen

__all__ = ["GeneratorOutputs", "d_step", "g_step", "generator_forward", "pretrain_step", "train_iteration"]

IMAGE_KEYS = ("frames", "identity", "disfc_frames")  # uint8 in batches of the training loop's datasets
ASSOCIATION_MODULES = ("mfcc_encoder", "lip_feature_encoder", "model_fusion")  # what stage 1 trains (+ D_mod)
PRETRAIN_MODALITY_WEIGHT = 1.0  # §4.6 lists the stage-1 terms without weights


def _modules(model: DAVS, names: Sequence[str]) -> list[nn.Module]:
    return [getattr(model, n) for n in names]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)


def _f32(x: Tensor) -> Tensor:
    """At least float32 (bf16/fp16 outputs of autocast regions are upcast; float64 stays)."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def _inputs(model: nn.Module, batch: dict, *keys: str) -> list[Tensor]:
    """Batch tensors on the model's device; images (uint8 scaled to [0, 1]) and MFCCs in the parameter dtype."""
    p = next(model.parameters())
    return [
        image_tensor(batch[k], p.device, p.dtype) if k in IMAGE_KEYS or batch[k].is_floating_point()
        else batch[k].to(p.device)
        for k in keys
    ]  # fmt: skip


def _bce(logits: Tensor, target: float | Tensor) -> Tensor:
    """BCE on a discriminator's logits, in ≥ float32 (= the original's BCELoss on its Sigmoid output)."""
    logits = _f32(logits)
    target = torch.full_like(logits, target) if not isinstance(target, Tensor) else target.to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, target)


def _embedding(wid: Tensor) -> Tensor:
    """The contrastive embedding: the 12 wid features concatenated, L2-normalised, of the global batch."""
    return gather_batch(F.normalize(_f32(wid).flatten(1), dim=1))


def _finish(losses: dict[str, Tensor], prefix: str) -> tuple[Tensor, dict[str, Tensor]]:
    total = torch.stack([_f32(v) for v in losses.values()]).sum()
    return total, {**{f"{prefix}/{k}": v for k, v in losses.items()}, f"{prefix}/total": total}


def _floats(losses: dict[str, Tensor]) -> dict[str, float]:
    values = torch.stack([v.detach().double() for v in losses.values()]).tolist()  # one device sync
    return dict(zip(losses, values, strict=True))


def _update(total: Tensor, opt: torch.optim.Optimizer, modules: Sequence[nn.Module]) -> None:
    opt.zero_grad(set_to_none=True)
    total.backward()
    average_gradients(p for m in modules for p in m.parameters())
    opt.step()


# ------------------------------------------------------------------------------------------------ stage 1
def pretrain_step(
    model: DAVS,
    batch: dict,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    weights: LossWeights,
    gen: torch.Generator,
    *,
    bf16: bool = False,
) -> dict[str, float]:
    """Stage 1 (§4.6): D_mod step (audio = real), then E_a^w, E_v^w, C step. Nothing else changes."""
    bind_generator(model, gen)
    dev = _device(model)
    d_mod, assoc = model.discriminator_audio, _modules(model, ASSOCIATION_MODULES)
    mfcc, frames, labels = _inputs(model, batch, "mfcc", "frames", "label")
    with _autocast(dev, bf16):
        wid_a = model.encode_audio(mfcc)  # (B, 12, W)
        wid_v = model.encode_video(frames)
        # 1. D step on D_mod (detached features)
        d_terms = {
            "modality_audio": 0.5 * _bce(d_mod(wid_a.detach(), logits=True), 1.0),
            "modality_video": 0.5 * _bce(d_mod(wid_v.detach(), logits=True), 0.0),
        }
    d_total, d_losses = _finish(d_terms, "D")
    _update(d_total, opt_d, [d_mod])
    # 2. G step on the association networks (D_mod frozen, labels flipped)
    with _autocast(dev, bf16), frozen([d_mod]):
        a, v = _embedding(wid_a), _embedding(wid_v)
        g_terms = {
            "word_ce_audio": weights.word_ce_audio * word_ce(_f32(model.model_fusion(wid_a)), labels),
            "word_ce_video": weights.word_ce_video * word_ce(_f32(model.model_fusion(wid_v)), labels),
            "contrastive_audio": weights.contrastive * l2_contrastive(v.detach(), a),
            "contrastive_video": weights.contrastive * l2_contrastive(a.detach(), v),
            "modality_audio": PRETRAIN_MODALITY_WEIGHT * _bce(d_mod(wid_a, logits=True), 0.0),
            "modality_video": PRETRAIN_MODALITY_WEIGHT * _bce(d_mod(wid_v, logits=True), 1.0),
        }
    g_total, g_losses = _finish(g_terms, "G")
    _update(g_total, opt_g, assoc)
    return _floats({**d_losses, **g_losses})


# ------------------------------------------------------------------------------------------------ stage 2
@dataclass
class GeneratorOutputs:
    """The stage-2 forward (§4.1) of B clips; T = sequence_length generation targets, W = wid_dim."""

    identity: Tensor  # (B, 3, S, S) the identity frame A
    targets: Tensor  # (B, T, 3, S, S) the real frames x
    target_mfcc: Tensor  # (B, T, 20, 12) their MFCC windows (D's audio, paired with real and fake frames)
    labels: Tensor  # (B,) word labels (−1: none)
    wid_audio: Tensor  # (B, 12, W) E_a^w of the 12 windows
    wid_video: Tensor  # (B, 12, W) E_v^w of the 12 frames
    fake_audio: Tensor  # (B, T, 3, S, S) x̂ᵃ = G(E_p(A), w_a)
    fake_video: Tensor  # (B, T, 3, S, S) x̂ᵛ = G(E_p(A), w_v)
    pid_net1: Tensor  # (B, 20, C, S/4, S/4) E_p net1 of the dis-fc window


def generator_forward(model: DAVS, batch: dict, gen: torch.Generator, *, bf16: bool = False) -> GeneratorOutputs:
    """E_p, E_a^w, E_v^w and G on a batch, as the original's ``forward``: G runs once per target step on the B
    clips (video-driven, then audio-driven), so its BatchNorm statistics are per step as there."""
    bind_generator(model, gen)
    dev = _device(model)
    frames, mfcc, identity, disfc, labels, gen_index = _inputs(
        model, batch, "frames", "mfcc", "identity", "disfc_frames", "label", "gen_index"
    )
    b, t = frames.shape[0], model.config.sequence_length
    rows = torch.arange(b, device=dev)[:, None]
    idx = gen_index.long()[:, None] + torch.arange(t, device=dev)  # (B, T)
    with _autocast(dev, bf16):
        pid = model.encode_identity(identity)
        net1 = model.encode_identity(disfc.flatten(0, 1))[NET1].unflatten(0, disfc.shape[:2])
        wid_a, wid_v = model.encode_audio(mfcc), model.encode_video(frames)
        gen_a, gen_v = wid_a[rows, idx], wid_v[rows, idx]  # (B, T, W)
        fakes_v, fakes_a = [], []
        for i in range(t):
            fakes_v.append(model.decode(pid, gen_v[:, i]))
            fakes_a.append(model.decode(pid, gen_a[:, i]))
    return GeneratorOutputs(
        identity=identity, targets=frames[rows, idx], target_mfcc=mfcc[rows, idx], labels=labels,
        wid_audio=wid_a, wid_video=wid_v, fake_audio=torch.stack(fakes_a, 1), fake_video=torch.stack(fakes_v, 1),
        pid_net1=net1,
    )  # fmt: skip


def d_step(
    model: DAVS,
    batch: dict,
    opt_d: torch.optim.Optimizer,
    weights: LossWeights,
    gen: torch.Generator,
    *,
    fwd: GeneratorOutputs | None = None,
    bf16: bool = False,
) -> dict[str, float]:
    """§4.3: D_mod (audio = real), the sequence D (soft labels; audio- and video-driven fakes, each paired with
    the real audio windows) and dis-fc's word CE on the (detached) pid maps; one ``opt_d`` step."""
    dev = _device(model)
    if fwd is None:
        with torch.no_grad(), frozen(_modules(model, GENERATOR_MODULES)):
            fwd = generator_forward(model, batch, gen, bf16=bf16)
    bind_generator(model, gen)
    d_mod, d_seq = model.discriminator_audio, model.netD_mul
    fakes = torch.cat([fwd.fake_audio, fwd.fake_video]).detach()  # (2B, T, 3, S, S)
    with _autocast(dev, bf16):
        patch_fake, sync_fake = d_seq(fakes, fwd.target_mfcc.repeat(2, 1, 1, 1), logits=True)
        patch_real, sync_real = d_seq(fwd.targets, fwd.target_mfcc, logits=True)
        pid_logits = model.ID_lip_discriminator(fwd.pid_net1.detach())
        terms = {
            "modality_audio": 0.5 * _bce(d_mod(fwd.wid_audio.detach(), logits=True), 1.0),
            "modality_video": 0.5 * _bce(d_mod(fwd.wid_video.detach(), logits=True), 0.0),
            "patch_fake": 0.5 * _bce(patch_fake, soft_targets(_f32(patch_fake), False, gen)),
            "patch_real": 0.5 * _bce(patch_real, soft_targets(_f32(patch_real), True, gen)),
            "sync_fake": 0.5 * _bce(sync_fake, soft_targets(_f32(sync_fake), False, gen)),
            "sync_real": 0.5 * _bce(sync_real, soft_targets(_f32(sync_real), True, gen)),
            "pid_word_ce": weights.pid_word_ce_d * word_ce(_f32(pid_logits), fwd.labels),
        }
    total, losses = _finish(terms, "D")
    _update(total, opt_d, _modules(model, DISCRIMINATOR_MODULES))
    return _floats(losses)


def g_step(
    model: DAVS,
    batch: dict,
    opt_g: torch.optim.Optimizer,
    weights: LossWeights,
    gen: torch.Generator,
    *,
    fwd: GeneratorOutputs | None = None,
    bf16: bool = False,
) -> dict[str, float]:
    """§4.4: the generator/encoder step against the (frozen, current) discriminators; one ``opt_g`` step."""
    dev = _device(model)
    if fwd is None:
        fwd = generator_forward(model, batch, gen, bf16=bf16)
    bind_generator(model, gen)
    w = weights
    mouth = mouth_mask(fwd.targets.shape[-1], device=dev)
    fakes = torch.cat([fwd.fake_audio, fwd.fake_video])
    fa, fv, x = _f32(fwd.fake_audio), _f32(fwd.fake_video), fwd.targets
    with _autocast(dev, bf16), frozen(_modules(model, DISCRIMINATOR_MODULES)):
        patch, sync = model.netD_mul(fakes, fwd.target_mfcc.repeat(2, 1, 1, 1), logits=True)
        pid_logits = model.ID_lip_discriminator(fwd.pid_net1)
        a, v = _embedding(fwd.wid_audio), _embedding(fwd.wid_video)
        d_mod = model.discriminator_audio
        terms = {
            "gan_patch": w.gan * _bce(patch, 1.0),
            "gan_sync": w.sync * _bce(sync, 1.0),
            "l1_audio_whole": w.l1_whole * masked_l1(fa, x),
            "l1_audio_mouth": w.l1_mouth * masked_l1(fa, x, mouth),
            "l1_video_whole": w.l1_whole * masked_l1(fv, x),
            "l1_video_mouth": w.l1_mouth * masked_l1(fv, x, mouth),
            "previous_frame": w.previous_frame * previous_frame_l1(fa, fwd.identity, 1.0 - mouth),
            "contrastive": w.contrastive * l2_contrastive(v.detach(), a),
            "uniform_softmax": w.uniform_softmax * uniform_softmax_loss(_f32(pid_logits)),
            "word_ce_audio": w.word_ce_audio * word_ce(_f32(model.model_fusion(fwd.wid_audio)), fwd.labels),
            "word_ce_video": w.word_ce_video * word_ce(_f32(model.model_fusion(fwd.wid_video)), fwd.labels),
            "modality_audio": w.modality * _bce(d_mod(fwd.wid_audio, logits=True), 0.0),
            "modality_video": w.modality * _bce(d_mod(fwd.wid_video, logits=True), 1.0),
        }
    total, losses = _finish(terms, "G")
    _update(total, opt_g, _modules(model, GENERATOR_MODULES))
    return _floats(losses)


def train_iteration(
    model: DAVS,
    batch: dict,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    weights: LossWeights,
    gen: torch.Generator,
    *,
    bf16: bool = False,
) -> dict[str, float]:
    """One stage-2 iteration as the original: forward once, D step, G step."""
    fwd = generator_forward(model, batch, gen, bf16=bf16)
    losses = d_step(model, batch, opt_d, weights, gen, fwd=fwd, bf16=bf16)
    return losses | g_step(model, batch, opt_g, weights, gen, fwd=fwd, bf16=bf16)

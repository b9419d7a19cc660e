"""The DAVS loss terms (DAVS_SPEC §4.2–4.4) as pure functions, and the paper's loss weights.

Every function returns a 0-dim tensor and documents the formula and the spec line it reproduces. The weights
(``LossWeights``) are applied by the training step, which names each term (CycleGAN ``backward_G`` style); the
functions here are unweighted except where the original bakes a constant in (the ×255 of the pixel L1).

Conventions: images are RGB in [0, 1]; ``prob`` arguments are probabilities (the original ends its discriminators
with a Sigmoid and uses ``BCELoss``); masks broadcast against the images, e.g. (1, 1, S, S).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from davs_model.networks.common import mouth_box

__all__ = [
    "LossWeights",
    "bce",
    "l2_contrastive",
    "masked_l1",
    "mouth_mask",
    "previous_frame_l1",
    "soft_targets",
    "uniform_softmax_loss",
    "word_ce",
]

SOFT_LABEL_RANGE = 0.1  # criterionGAN_soft: targets 1 − U(0, 0.1) (real) and U(0, 0.1) (fake)
UNLABELLED = -1  # ClipRecord.label of clips without a word class (e.g. VoxCeleb)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the named loss terms; the defaults are the original's (DAVS_SPEC §4.3–4.4).

    - ``gan``, ``sync``: G's sequence-D patch and audio-visual sync terms, BCE(·, 1) (§4.4 "[weight 1 each]").
    - ``l1_whole``, ``l1_mouth``: λ_A = 4 and λ_B = 8 of ``L1_x`` (§4.4), for the audio- and video-driven fakes.
    - ``previous_frame``: 5 · Σ_i mean|(x̂ᵃ_i − prev_i)·M̄| ("G_x_loss", §4.4).
    - ``contrastive``: L_contrastive(v̄.detach(), ā) (§4.4, weight 1).
    - ``uniform_softmax``: λ_CE_inv = 1e6 on MSE(softmax(dis-fc(…)), 1/500) (§4.4).
    - ``word_ce_audio``, ``word_ce_video``: CE(C(w_a), y) and CE(C(w_v), y) (§4.4, weight 1 each).
    - ``modality``: 5 · [BCE(D_mod(w_a), 0) + BCE(D_mod(w_v), 1)] in G's step (§4.4).
    - ``pid_word_ce_d``: λ_CE = 1 on dis-fc's word CE in D's step (§4.3).
    """

    gan: float = 1.0
    sync: float = 1.0
    l1_whole: float = 4.0
    l1_mouth: float = 8.0
    previous_frame: float = 5.0
    contrastive: float = 1.0
    uniform_softmax: float = 1e6
    word_ce_audio: float = 1.0
    word_ce_video: float = 1.0
    modality: float = 5.0
    pid_word_ce_d: float = 1.0


def bce(prob: Tensor, target: float | Tensor) -> Tensor:
    """Binary cross-entropy on probabilities: −mean[t·log p + (1 − t)·log(1 − p)].

    §4.2 "GAN loss: ``no_lsgan = True`` → ``BCELoss`` on sigmoid outputs". A float ``target`` is broadcast to
    ``prob``'s shape (G's hard targets 1/0; D_mod's audio = 1, video = 0). As ``BCELoss``, log terms are clamped
    at −100, so p = 0 or 1 gives a finite loss.
    """
    if not isinstance(target, Tensor):
        target = torch.full_like(prob, float(target))
    return F.binary_cross_entropy(prob, target.to(prob.dtype).expand_as(prob))


def soft_targets(like: Tensor, real: bool, generator: torch.Generator | None) -> Tensor:
    """D's soft labels (``criterionGAN_soft``, §4.2): real 1 − u, fake u, with u ~ U(0, 0.1).

    As the original (``soft = random.random() * 0.1``, then ``fill_``), u is one draw per call shared by every
    element of the target, which has ``like``'s shape, dtype and device. ``generator`` makes the draw
    reproducible (it may live on any device; ``None`` uses torch's default generator).
    """
    device = generator.device if generator is not None else torch.device("cpu")
    u = float(torch.rand((), generator=generator, device=device)) * SOFT_LABEL_RANGE
    return torch.full_like(like, 1.0 - u if real else u)


def l2_contrastive(f1: Tensor, f2: Tensor, margin: float = 1.0) -> Tensor:
    """L2 contrastive loss (``L2ContrastiveLoss``, §4.2), f1, f2: (B, D).

    d_ij = ‖f1_i − f2_j‖₂;  L = [Σ_{i≠j} max(0, margin − d_ij)² + Σ_i d_ii²] / (2B).

    Pairs i = j are positives, every other clip of the batch is a negative. The training step calls it as
    ``l2_contrastive(v̄.detach(), ā)`` (only the audio side is pulled). The positive term uses the squared
    distance directly (same value as the original's ‖·‖² and a finite gradient when d_ii = 0).
    """
    if f1.ndim != 2 or f1.shape != f2.shape:
        raise ValueError(f"l2_contrastive wants two (B, D) tensors of the same shape, got {f1.shape}, {f2.shape}")
    diff = f1[:, None, :] - f2[None, :, :]  # (B, B, D)
    dist = torch.linalg.vector_norm(diff, dim=2)  # (B, B); its gradient at 0 is 0
    off_diagonal = ~torch.eye(len(f1), dtype=torch.bool, device=f1.device)
    negatives = ((margin - dist).clamp(min=0) ** 2)[off_diagonal].sum()
    positives = (f1 - f2).pow(2).sum()
    return (negatives + positives) / (2 * len(f1))


def uniform_softmax_loss(logits: Tensor) -> Tensor:
    """The "L2-softmax" loss (``L2SoftmaxLoss``, §4.2), logits z: (B, n):

    L = mean over all B×n entries of (softmax(z)_k − 1/n)², i.e. MSE(softmax(z), 1/n).

    Zero iff every row's softmax is uniform. In G's step (§4.4) it is applied to dis-fc's logits on E_p's level-1
    maps with weight λ_CE_inv = 1e6, so E_p learns to hide the word from dis-fc.
    """
    p = logits.softmax(dim=1)
    return F.mse_loss(p, torch.full_like(p, 1.0 / logits.shape[1]))


def masked_l1(fake: Tensor, real: Tensor, mask: Tensor | None = None, scale: float = 255.0) -> Tensor:
    """Pixel L1 in 0..255 units (§4.4 ``L1_x``): mean|scale·(x̂ − x)·m| over all elements of x̂.

    The mean is over every element (B×T×3×S×S), not over the mask's support: the original's mouth term is
    ``L1Loss(fake·M, real·M)``. The caller applies λ_A = 4 (``mask=None``, whole image) and λ_B = 8
    (``mask=mouth_mask(S)``).
    """
    diff = scale * (fake - real)
    if mask is not None:
        diff = diff * mask
    return diff.abs().mean()


def previous_frame_l1(fakes: Tensor, identity: Tensor, outside_mouth_mask: Tensor) -> Tensor:
    """Temporal L1 outside the mouth ("G_x_loss", §4.4), in [0, 1] units:

    Σ_{i=1..T} mean|(x̂_i − prev_i)·M̄|, prev_1 = A, prev_i = x̂_{i−1}.detach().

    fakes: (B, T, 3, H, W) audio-driven frames; identity: (B, 3, H, W) the identity image A;
    outside_mouth_mask: M̄ = 1 − mouth mask, broadcastable to (B, 3, H, W). Each frame's gradient comes only from
    its own term (the previous frame is detached). The caller applies the weight 5.
    """
    if fakes.ndim != 5 or identity.shape != fakes[:, 0].shape:
        raise ValueError(f"want fakes (B,T,3,H,W) and identity (B,3,H,W), got {fakes.shape}, {identity.shape}")
    prev = torch.cat([identity[:, None], fakes[:, :-1].detach()], dim=1)  # (B, T, 3, H, W)
    per_frame = ((fakes - prev) * outside_mouth_mask).abs().mean(dim=(0, 2, 3, 4))  # (T,)
    return per_frame.sum()


def mouth_mask(image_size: int, device: torch.device | str | None = None) -> Tensor:
    """M (§4.2 "Masks"): (1, 1, S, S) float32, 1 on the mouth box rows/cols (``mouth_box``), 0 elsewhere.

    At S = 256 this is rows 170:234, cols 64:192; smaller sizes scale the box. M̄ = 1 − M.
    """
    top, bottom, left, right = mouth_box(image_size)
    mask = torch.zeros(1, 1, image_size, image_size, device=device)
    mask[..., top:bottom, left:right] = 1.0
    return mask


def word_ce(logits: Tensor, labels: Tensor) -> Tensor:
    """Word cross-entropy (``criterionCE``, §4.3–4.4): −mean_i log softmax(z_i)[y_i], logits (B, 500), labels (B,).

    Clips without a word class (label −1, e.g. VoxCeleb) are left out of the mean; a batch without any labelled
    clip gives 0 (with a gradient graph), not NaN.
    """
    labels = labels.long()
    total = F.cross_entropy(logits, labels, ignore_index=UNLABELLED, reduction="sum")
    return total / (labels != UNLABELLED).sum().clamp(min=1)

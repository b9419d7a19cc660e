"""The original's one-shot test-time fine-tuning of E_p and G on the identity photo (``test_train``, spec §5).

Each step builds a fresh Adam(lr 2e-4, betas 0.9/0.999) over ID_encoder + Decoder, so every step is an Adam
first step (≈ lr·sign(gradient)), and minimises ``4·mean|(G(E_p(A), w) − A)·m|`` with m = 1 outside the training
mouth box and 0.001 inside. w is A's own lip feature E_v(A) (video mode) or the audio feature of step j's item
(audio mode).

One difference, on purpose: the original fine-tuned its first identity with the modules still in train mode
(BatchNorm on one image, running statistics updated); here they stay in eval mode throughout, as the original's
identities 2-4 were, so the BatchNorm statistics learnt in training are kept.
"""

from __future__ import annotations

import torch
from torch import Tensor

from davs_model.model import DAVS
from davs_model.networks.common import mouth_box

FINETUNE_LR = 2e-4
FINETUNE_BETAS = (0.9, 0.999)
L1_WEIGHT = 4.0
MOUTH_WEIGHT = 0.001
FINETUNED_MODULES = ("ID_encoder", "Decoder")


def finetune_mask(image_size: int, device: torch.device | str | None = None) -> Tensor:
    """m: (1, 1, S, S), 1 outside the mouth box and 0.001 inside."""
    top, bottom, left, right = mouth_box(image_size)
    mask = torch.ones(1, 1, image_size, image_size, device=device)
    mask[..., top:bottom, left:right] = MOUTH_WEIGHT
    return mask


def reconstruction_loss(model: DAVS, identity: Tensor, wid: Tensor) -> Tensor:
    """4·mean|(G(E_p(A), w) − A)·m| for identity A (3, S, S) and one wid (wid_dim,) (with autograd if enabled)."""
    a = identity[None]
    out = model.decode(model.encode_identity(a), wid[None])
    return L1_WEIGHT * ((out - a) * finetune_mask(a.shape[-1], a.device)).abs().mean()


def finetune_identity(
    model: DAVS,
    identity: Tensor,
    wids: Tensor,
    steps: int = 5,
    lr: float = FINETUNE_LR,
) -> list[float]:
    """Fine-tune ``model.ID_encoder`` and ``model.Decoder`` in place; returns the loss of each step (before it).

    identity: (3, S, S) in [0, 1] on the model's device; wids: (k, wid_dim), step j uses row j mod k (detached).
    Leaves the model in eval mode with no gradients held.
    """
    if steps <= 0:
        return []
    wids = wids.detach().reshape(-1, wids.shape[-1])
    params = [p for name in FINETUNED_MODULES for p in getattr(model, name).parameters()]
    model.eval()
    losses = []
    with torch.enable_grad():
        for step in range(steps):
            optimizer = torch.optim.Adam(params, lr=lr, betas=FINETUNE_BETAS)  # fresh each step, as the original
            optimizer.zero_grad(set_to_none=True)
            loss = reconstruction_loss(model, identity, wids[step % len(wids)])
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    for p in model.parameters():
        p.grad = None
    return losses

"""D_mod, the modality discriminator on the wid space (spec §3.5): the original's ``discriminator_audio``.

A two-layer MLP that tells, for each single wid feature, whether it came from the audio encoder. Training it
against the encoders pushes audio and video wid features into one shared distribution.

State-dict names are the original's: ``fc1``, ``fc2``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ModalityDiscriminator"]


class ModalityDiscriminator(nn.Module):
    """Per-feature probability that a wid feature came from audio (1) rather than video (0).

    The original ends in a Sigmoid and trains with BCE on the probabilities (``GANLoss`` with
    ``no_lsgan=True``); ``forward`` returns the same probabilities. ``forward(..., logits=True)`` returns the
    pre-sigmoid scores instead, for ``binary_cross_entropy_with_logits``: the same loss, but numerically safe and
    allowed under autocast (``F.binary_cross_entropy`` on probabilities raises inside a CUDA autocast region).

    Args:
        wid_dim: size of one wid feature (256 = paper); also the hidden size, as in the original.
    """

    def __init__(self, *, wid_dim: int = 256) -> None:
        super().__init__()
        self.wid_dim = wid_dim
        self.fc1 = nn.Linear(wid_dim, wid_dim)
        self.fc2 = nn.Linear(wid_dim, 1)

    def forward(self, wid: torch.Tensor, *, logits: bool = False) -> torch.Tensor:
        """wid: (..., wid_dim), e.g. (B, T, 256), each feature judged alone → (..., 1) P(audio) in [0, 1], or
        the logits with ``logits=True``. (The original flattened to (B·T, 1); flatten here if you need that.)"""
        if wid.shape[-1] != self.wid_dim:
            raise ValueError(f"expected wid features (..., {self.wid_dim}), got {wid.shape}")
        score = self.fc2(F.relu(self.fc1(wid)))
        return score if logits else torch.sigmoid(score)

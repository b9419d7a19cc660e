"""C, the word classifier shared by the audio and the video wid features (spec §3.4): the original's
``ModelFusion``.

The 12 wid features of a clip (unnormalised) are concatenated and classified into the LRW words by a two-layer
MLP. One instance classifies both modalities, which ties the two wid spaces together.

State-dict names are the original's: ``fc_1``, ``fc_2``, and ``dis`` (a 512 → 1 layer the original never uses
but saves; kept for strict loading). The original's parameter-free ``relu``/``sig`` modules are left out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["WordClassifier"]

FC1_INIT_STD = 1e-4  # the original's fc_1 initialisation (N(0, 1e-4), bias 0) for training from scratch


class WordClassifier(nn.Module):
    """Word logits from a sequence of wid features.

    Args:
        wid_dim: size of one wid feature (256 = paper).
        n_steps: wid features per sequence (``pred_length``, 12 = paper).
        hidden: hidden units (512 = paper).
        n_words: number of word classes (500 = LRW).
    """

    def __init__(self, *, wid_dim: int = 256, n_steps: int = 12, hidden: int = 512, n_words: int = 500) -> None:
        super().__init__()
        self.wid_dim = wid_dim
        self.n_steps = n_steps
        self.fc_1 = nn.Linear(n_steps * wid_dim, hidden)
        self.fc_2 = nn.Linear(hidden, n_words)
        self.dis = nn.Linear(hidden, 1)  # unused in forward; present in the released checkpoint
        nn.init.normal_(self.fc_1.weight, 0.0, FC1_INIT_STD)
        nn.init.zeros_(self.fc_1.bias)

    def forward(self, wid: torch.Tensor) -> torch.Tensor:
        """wid: (B, n_steps, wid_dim) → word logits (B, n_words) (no softmax)."""
        if wid.dim() != 3 or tuple(wid.shape[1:]) != (self.n_steps, self.wid_dim):
            raise ValueError(f"expected wid features (B, {self.n_steps}, {self.wid_dim}), got {wid.shape}")
        hidden = F.relu(self.fc_1(wid.flatten(1)))  # (B, n_steps·wid_dim) → (B, hidden)
        return self.fc_2(hidden)

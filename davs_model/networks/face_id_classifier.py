"""The face-identity classifier used to pretrain E_p (spec §3.1, §4.6): the original's ``Face_ID_fc``.

Dropout(0.5) then one linear layer from the pid (256-d at paper size) to one score per identity. The authors
trained it on 40,145 MS-Celeb-1M identities and never released that stage; here it classifies the speakers of the
training shards (VoxCeleb ids) in stage 1 and is dropped afterwards (only E_p is kept).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FaceIdClassifier"]


class FaceIdClassifier(nn.Module):
    """pid (B, pid_dim) → identity logits (B, n_ids).

    Args:
        n_ids: number of identities (speakers) to tell apart (≥ 2).
        pid_dim: size of E_p's pid (``IdentityEncoder.pid_dim``; 256 at paper size).
    """

    def __init__(self, n_ids: int, *, pid_dim: int = 256) -> None:
        super().__init__()
        if n_ids < 2:
            raise ValueError(f"identity classification needs at least 2 identities, got {n_ids}")
        self.n_ids, self.pid_dim = int(n_ids), int(pid_dim)
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(pid_dim, n_ids)

    def forward(self, pid: torch.Tensor) -> torch.Tensor:
        if pid.ndim != 2 or pid.shape[1] != self.pid_dim:
            raise ValueError(f"expected pid (B, {self.pid_dim}), got {tuple(pid.shape)}")
        return self.fc(self.dropout(pid))

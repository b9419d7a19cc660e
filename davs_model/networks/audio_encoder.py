"""E_a^w, the audio word-ID (wid) encoder (spec §3.3): the original's ``mfcc_encoder_two``.

Each 20×12 MFCC window (time × coefficient, one per video frame) goes through two parallel CNN branches, and
their 512-d outputs are concatenated and projected to one 256-d wid feature::

    window ─┬─ model1: three 3×3 conv-BN-LReLU steps, 2×2 conv        ─▶ 512 ─┐
            └─ model2: (3×12) conv over all coefficients, 1-D convs   ─▶ 512 ─┴─ cat ─ fc ─▶ wid

State-dict names are the original's: ``model1.*`` (``mfcc_encoder``), ``model2.*`` (``mfcc_encoder_alter``),
``fc``. ``model1.bn5`` is never used in ``forward`` but is in the checkpoint, so it is kept.

The audio input does not depend on the image size; only ``width`` (channels) and ``wid_dim`` change it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from davs_model.audio import N_CEPS, WINDOW_FRAMES
from davs_model.networks.common import scaled

__all__ = ["MFCC_WINDOW", "AudioEncoder", "MfccEncoder", "MfccEncoderAlter", "mfcc_windows"]

# One MFCC window as the networks see it: (time = 20 MFCC frames, coefficients c1..c12).
MFCC_WINDOW = (WINDOW_FRAMES, N_CEPS - 1)
LEAKY_SLOPE = 0.2


def mfcc_windows(mfcc: torch.Tensor) -> torch.Tensor:
    """(B, T, 20, 12) or (B, T, 1, 20, 12) → (B, T, 20, 12), with a clear error for anything else."""
    if mfcc.dim() == 5 and mfcc.shape[2] == 1:
        mfcc = mfcc.squeeze(2)
    if mfcc.dim() != 4 or tuple(mfcc.shape[2:]) != MFCC_WINDOW:
        raise ValueError(f"expected MFCC windows (B, T, {MFCC_WINDOW[0]}, {MFCC_WINDOW[1]}), got {mfcc.shape}")
    return mfcc


class MfccEncoder(nn.Module):
    """Branch 1 (the original's ``mfcc_encoder``): a small 2-D CNN over the window.

    1×20×12 → conv1 3×3 s(3,2) p(1,2) → 64×7×7 → conv2 3×3/2 → 128×4×4 → conv3 3×3 → 256×2×2 → conv4 2×2 → 512×1×1;
    BN + LeakyReLU(0.2) after conv1–3, nothing after conv4. Convs have no bias.

    Args:
        width: channel multiplier (1.0 = paper).
    """

    def __init__(self, *, width: float = 1.0) -> None:
        super().__init__()
        c64, c128, c256, c512 = (scaled(c, width) for c in (64, 128, 256, 512))
        self.conv1 = nn.Conv2d(1, c64, kernel_size=(3, 3), stride=(3, 2), padding=(1, 2), bias=False)
        self.bn1 = nn.BatchNorm2d(c64)
        self.conv2 = nn.Conv2d(c64, c128, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c128)
        self.conv3 = nn.Conv2d(c128, c256, kernel_size=3, stride=1, padding=0, bias=False)
        self.bn3 = nn.BatchNorm2d(c256)
        self.conv4 = nn.Conv2d(c256, c512, kernel_size=2, stride=1, bias=False)
        self.bn5 = nn.BatchNorm2d(c512)  # unused in forward; present in the released checkpoint
        self.out_channels = c512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 1, 20, 12) → (N, 512, 1, 1)."""
        x = F.leaky_relu(self.bn1(self.conv1(x)), LEAKY_SLOPE)
        x = F.leaky_relu(self.bn2(self.conv2(x)), LEAKY_SLOPE)
        x = F.leaky_relu(self.bn3(self.conv3(x)), LEAKY_SLOPE)
        return self.conv4(x)


class MfccEncoderAlter(nn.Module):
    """Branch 2 (the original's ``mfcc_encoder_alter``): a first conv spanning all 12 coefficients, then 1-D
    convolutions along time.

    1×20×12 → conv1 (3×12) → 64×18×1 → BN, LReLU → every 3rd row → 64×6×1 → conv2 (3×1) p(1,0) → 256×6×1 → BN,
    LReLU → every 2nd row → 256×3×1 → conv3 (3×1) → 512×1×1. Convs have no bias.

    Args:
        width: channel multiplier (1.0 = paper).
    """

    def __init__(self, *, width: float = 1.0) -> None:
        super().__init__()
        c64, c256, c512 = (scaled(c, width) for c in (64, 256, 512))
        n_coeffs = MFCC_WINDOW[1]
        self.conv1 = nn.Conv2d(1, c64, kernel_size=(3, n_coeffs), stride=1, padding=0, bias=False)
        # The original declares BatchNorm1d(64) and feeds it this 4-D tensor, which PyTorch 0.2 normalised per
        # channel and PyTorch >= 0.4 rejects. BatchNorm2d does the same per-channel computation and has the same
        # parameter and buffer names (weight, bias, running_mean, running_var), so the checkpoint loads unchanged.
        self.bn1 = nn.BatchNorm2d(c64)
        self.conv2 = nn.Conv2d(c64, c256, kernel_size=(3, 1), stride=1, padding=(1, 0), bias=False)
        self.bn2 = nn.BatchNorm2d(c256)
        self.conv3 = nn.Conv2d(c256, c512, kernel_size=(3, 1), stride=1, bias=False)
        self.out_channels = c512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 1, 20, 12) → (N, 512, 1, 1)."""
        x = F.leaky_relu(self.bn1(self.conv1(x)), LEAKY_SLOPE)
        x = F.max_pool2d(x, kernel_size=1, stride=3)  # pool1: a 1×1 "pool" with stride 3 keeps rows 0, 3, 6, …
        x = F.leaky_relu(self.bn2(self.conv2(x)), LEAKY_SLOPE)
        x = F.max_pool2d(x, kernel_size=1, stride=2)  # pool2: keeps rows 0, 2, 4
        return self.conv3(x)


class AudioEncoder(nn.Module):
    """E_a^w: one wid feature per MFCC window (the original's ``mfcc_encoder_two``).

    Args:
        width: channel multiplier of both branches (1.0 = paper).
        wid_dim: size of the wid feature (256 = paper).
    """

    def __init__(self, *, width: float = 1.0, wid_dim: int = 256) -> None:
        super().__init__()
        self.wid_dim = wid_dim
        self.model1 = MfccEncoder(width=width)
        self.model2 = MfccEncoderAlter(width=width)
        self.fc = nn.Linear(self.model1.out_channels + self.model2.out_channels, wid_dim)

    def forward(self, mfcc: torch.Tensor) -> torch.Tensor:
        """mfcc: (B, T, 20, 12) or (B, T, 1, 20, 12) → wid features (B, T, wid_dim); windows are independent."""
        mfcc = mfcc_windows(mfcc)
        batch, steps = mfcc.shape[:2]
        x = mfcc.flatten(0, 1).unsqueeze(1)  # (B·T, 1, 20, 12)
        # 1. two branches, each (B·T, 512, 1, 1)
        net = torch.cat((self.model1(x), self.model2(x)), dim=1)
        # 2. project the concatenation to the wid space
        wid = self.fc(net.flatten(1))
        return wid.unflatten(0, (batch, steps))

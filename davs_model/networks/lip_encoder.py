"""E_v^w, the visual word-ID (wid) encoder (spec §3.2): the original's ``FanFusion``.

A single-stack FAN (face-alignment network) truncated at its 68 landmark heatmaps, then a small head that turns
the heatmaps into one 256-d wid feature per frame::

    frame ─ conv1 7×7/2 ─ conv2 ─ max-pool 2 ─ conv3 ─ conv4 ─ hourglass m0 ─ top_m_0 ─ conv_last0 ─ l0 ─▶ heatmaps
    heatmaps ─ BN ─ ReLU ─ conv6 3×3/2 (68 → 1) ─ flatten ─ ReLU ─ fc ─▶ wid

State-dict names are the original's: the FAN trunk lives under ``model.`` (``model.m0.b2_plus_1.conv1.weight``,
``model.top_m_0``, ``model.conv_last0``, ``model.bn_end0``, ``model.l0``), the head at the top level (``bn1``,
``conv6``, ``fc``). The trunk's own ``conv5``, ``conv6`` and ``fc`` are never used in ``forward`` but are in the
released checkpoint, so they are kept (the parameter-free ``avgpool`` is left out).

Reduced sizes: channels scale with ``width`` (the 68 heatmaps stay 68); the hourglass keeps depth 4, which needs
S/4 divisible by 16, true for every S in ``IMAGE_SIZES``; the heatmaps are S/4 × S/4 and ``fc`` takes (S/8)²
inputs (1024 at 256).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from davs_model.networks.common import check_image_size, scaled

__all__ = ["N_LANDMARKS", "ConvBlock", "FanTrunk", "HourGlass", "LipEncoder"]

N_LANDMARKS = 68  # heatmap channels of the FAN (68-point landmarks); independent of ``width``
HOURGLASS_DEPTH = 4


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)


class ConvBlock(nn.Module):
    """FAN's pre-activation bottleneck: three BN → ReLU → 3×3 conv steps producing ½, ¼ and ¼ of the output
    channels, concatenated, plus a residual (BN → ReLU → 1×1 conv when the channel count changes).

    Args:
        in_channels: input channels.
        out_channels: output channels (a multiple of 4).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if out_channels % 4:
            raise ValueError(f"ConvBlock needs out_channels divisible by 4, got {out_channels}")
        half, quarter = out_channels // 2, out_channels // 4
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv3x3(in_channels, half)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = _conv3x3(half, quarter)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = _conv3x3(quarter, quarter)
        # A Sequential, so that the checkpoint's ``downsample.0.*`` (BN) and ``downsample.2.*`` (conv) names match.
        self.downsample = (
            nn.Sequential(
                nn.BatchNorm2d(in_channels),
                nn.ReLU(),
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, bias=False),
            )
            if in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, in, H, W) → (N, out, H, W)."""
        out1 = self.conv1(F.relu(self.bn1(x)))
        out2 = self.conv2(F.relu(self.bn2(out1)))
        out3 = self.conv3(F.relu(self.bn3(out2)))
        residual = x if self.downsample is None else self.downsample(x)
        return torch.cat((out1, out2, out3), dim=1) + residual


class HourGlass(nn.Module):
    """The FAN hourglass: at each level an upper branch ``b1_L`` (followed by Dropout) at the current resolution
    and a lower branch max-pool → ``b2_L`` → (level L−1, or ``b2_plus_1`` at the bottom) → ``b3_L``, upsampled
    bilinearly (``align_corners=True``, as PyTorch 0.2's ``F.upsample``) and added to the upper branch.

    Args:
        depth: number of levels (4 in DAVS: 64 → 32 → 16 → 8 → 4 at 256 px).
        channels: feature channels, constant through the hourglass (256 in DAVS).
        dropout: drop probability on the upper branches (active in train mode only).
    """

    def __init__(self, *, depth: int = HOURGLASS_DEPTH, channels: int = 256, dropout: float = 0.5) -> None:
        super().__init__()
        self.depth = depth
        self.dropout = nn.Dropout(dropout)
        # Registration order follows the original's recursion: b1_4, b2_4, b1_3, …, b2_1, b2_plus_1, b3_1, …, b3_4.
        for level in range(depth, 0, -1):
            self.add_module(f"b1_{level}", ConvBlock(channels, channels))
            self.add_module(f"b2_{level}", ConvBlock(channels, channels))
        self.add_module("b2_plus_1", ConvBlock(channels, channels))
        for level in range(1, depth + 1):
            self.add_module(f"b3_{level}", ConvBlock(channels, channels))

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        up = self.dropout(self.get_submodule(f"b1_{level}")(x))
        low = self.get_submodule(f"b2_{level}")(F.max_pool2d(x, 2, stride=2))
        low = self._level(level - 1, low) if level > 1 else self.get_submodule("b2_plus_1")(low)
        low = self.get_submodule(f"b3_{level}")(low)
        return up + F.interpolate(low, size=up.shape[-2:], mode="bilinear", align_corners=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) with H, W divisible by 2**depth → (N, C, H, W)."""
        if x.shape[-1] % 2**self.depth or x.shape[-2] % 2**self.depth:
            raise ValueError(f"HourGlass(depth={self.depth}) needs sides divisible by {2**self.depth}: {x.shape}")
        return self._level(self.depth, x)


class FanTrunk(nn.Module):
    """The single-stack FAN up to its landmark heatmaps (the original's ``FAN_use``), stored as ``model`` inside
    :class:`LipEncoder`.

    Args:
        width: channel multiplier (1.0 = the paper's 64/128/256 channels).
        image_size: input side S; sizes the unused ``fc`` like the head's.
        wid_dim: output size of the unused ``fc``.
    """

    def __init__(self, *, width: float = 1.0, image_size: int = 256, wid_dim: int = 256) -> None:
        super().__init__()
        image_size = check_image_size(image_size)
        c64, c128, c256 = scaled(64, width), scaled(128, width), scaled(256, width)
        # Base: 7×7/2 conv, then three bottlenecks with a max-pool after the first (S → S/4).
        self.conv1 = nn.Conv2d(3, c64, kernel_size=7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(c64)
        self.conv2 = ConvBlock(c64, c128)
        self.conv3 = ConvBlock(c128, c128)
        self.conv4 = ConvBlock(c128, c256)
        # One hourglass stack (index 0) and its heatmap head.
        self.m0 = HourGlass(depth=HOURGLASS_DEPTH, channels=c256)
        self.top_m_0 = ConvBlock(c256, c256)
        self.conv_last0 = nn.Conv2d(c256, c256, kernel_size=1, stride=1, padding=0)
        self.l0 = nn.Conv2d(c256, N_LANDMARKS, kernel_size=1, stride=1, padding=0)
        self.bn_end0 = nn.BatchNorm2d(c256)
        # Unused in forward; present in the released checkpoint.
        self.conv5 = nn.Conv2d(c256, c256, kernel_size=5, stride=3, padding=1)
        self.conv6 = nn.Conv2d(N_LANDMARKS, 1, kernel_size=3, stride=2, padding=1)
        self.fc = nn.Linear((image_size // 8) ** 2, wid_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, S, S) RGB in [0, 1] → landmark heatmaps (N, 68, S/4, S/4)."""
        # 1. base, S → S/4
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(self.conv2(x), 2)
        x = self.conv4(self.conv3(x))
        # 2. hourglass
        x = self.top_m_0(self.m0(x))
        # 3. heatmaps
        x = F.relu(self.bn_end0(self.conv_last0(x)))
        return self.l0(x)


class LipEncoder(nn.Module):
    """E_v^w: one wid feature per video frame from the FAN landmark heatmaps (the original's ``FanFusion``).

    Args:
        width: channel multiplier of the FAN trunk (1.0 = paper).
        image_size: frame side S, one of ``IMAGE_SIZES`` (256 = paper).
        wid_dim: size of the wid feature (256 = paper).
    """

    def __init__(self, *, width: float = 1.0, image_size: int = 256, wid_dim: int = 256) -> None:
        super().__init__()
        self.image_size = check_image_size(image_size)
        self.wid_dim = wid_dim
        self.model = FanTrunk(width=width, image_size=image_size, wid_dim=wid_dim)
        self.conv6 = nn.Conv2d(N_LANDMARKS, 1, kernel_size=3, stride=2, padding=1)
        self.fc = nn.Linear((image_size // 8) ** 2, wid_dim)
        self.bn1 = nn.BatchNorm2d(N_LANDMARKS)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames: (B, T, 3, S, S) RGB in [0, 1] → wid features (B, T, wid_dim), each frame encoded alone."""
        size = self.image_size
        if frames.dim() != 5 or frames.shape[2:] != (3, size, size):
            raise ValueError(f"expected frames (B, T, 3, {size}, {size}), got {frames.shape}")
        batch, steps = frames.shape[:2]
        x = frames.flatten(0, 1)  # (B·T, 3, S, S)
        # 1. landmark heatmaps (B·T, 68, S/4, S/4)
        heatmaps = self.model(x)
        # 2. one 3×3/2 conv to a single S/8 × S/8 map
        x = self.conv6(F.relu(self.bn1(heatmaps)))
        # 3. flatten → wid
        x = self.fc(F.relu(x.flatten(1)))
        return x.unflatten(0, (batch, steps))

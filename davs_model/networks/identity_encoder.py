"""E_p, the identity (pid) encoder: a LightCNN-style stack of max-feature-map blocks (spec §3.1).

Module names follow the original ``network/IdentityEncoder.py`` so that the released checkpoint loads strictly:
``block1.conv01_a.weight``, ``block11.conv11_a_bn.running_mean``, … The first block is ``block1`` (not
``block01``): the original registers it as ``'block' + str(01)``, which Python 2 reads as ``'block1'``; its inner
layers keep the name ``"01"``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from davs_model.networks.common import check_image_size, scaled

# Positions in E_p's output list, as the original returns it: ``[pid, net4, net3, net2, net1]``.
PID, NET4, NET3, NET2, NET1 = range(5)


class MaxFeatureMapBlock(nn.Module):
    """One max-feature-map conv (the original's ``BasicBlock``): ``max(BN_a(Conv_a(x)), BN_b(Conv_b(x)))``.

    There is no other nonlinearity. Submodules are ``conv{name}_a``, ``conv{name}_b``, ``conv{name}_a_bn`` and
    ``conv{name}_b_bn``, registered in that order as in the original.

    Args:
        name: the block's number as the original spells it ("01", "11", …).
        in_channels, out_channels: channel counts of both parallel convs.
        std: standard deviation of the N(0, std) conv-weight init (biases 0, BN γ = 1, β = 0).
        kernel_size, stride, padding: of both convs.
    """

    def __init__(
        self,
        name: str,
        in_channels: int,
        out_channels: int,
        *,
        std: float,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
    ) -> None:
        super().__init__()
        self.layer_names = (f"conv{name}_a", f"conv{name}_b", f"conv{name}_a_bn", f"conv{name}_b_bn")
        conv_a, conv_b, bn_a, bn_b = self.layer_names
        for conv in (conv_a, conv_b):
            self.add_module(conv, nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding))
        for bn in (bn_a, bn_b):
            self.add_module(bn, nn.BatchNorm2d(out_channels))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=std)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C_in, H, W) → (B, C_out, H', W')."""
        conv_a, conv_b, bn_a, bn_b = (getattr(self, name) for name in self.layer_names)
        return torch.maximum(bn_a(conv_a(x)), bn_b(conv_b(x)))


class IdentityEncoder(nn.Module):
    """E_p: maps one face image to the pid vector and four intermediate feature maps.

    At the paper's size (``width=1.0``, ``image_size=256``) this is the original module, 15.62 M parameters.

    Args:
        width: channel multiplier (1.0 = the paper's); every channel count goes through ``scaled``.
        image_size: input side S, one of 64, 128, 256 (the paper's). The maps shrink with S; the design does not
            change. The pid is the mean of ``net4`` over its whole S/32 × S/32 map, which is what the original's
            AvgPool(8×8, stride 1) on the 8×8 map computes at S = 256.

    Conv-weight init is N(0, σ) with the original's per-block σ (kept as is at reduced widths). At the paper's size
    σ = 1/√(3²·C_out), except block01 (7²) — the LightCNN rule, which blocks 41–42 also follow with 3² although
    their kernels are 5×5. The original's ``Dropout2d(0.5)`` is declared but never used, so it is left out here (it
    has no parameters).
    """

    def __init__(self, *, width: float = 1.0, image_size: int = 256) -> None:
        super().__init__()
        self.image_size = check_image_size(image_size)
        self.pid_dim = scaled(256, width)

        def c(channels: int) -> int:
            return scaled(channels, width)

        # Level 1: a 7×7 stride-2 block, then 4 blocks at S/4 → net1
        self.block1 = MaxFeatureMapBlock("01", 3, c(32), std=0.025253814, kernel_size=7, stride=2, padding=3)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.block11 = MaxFeatureMapBlock("11", c(32), c(32), std=0.058925565)
        self.block12 = MaxFeatureMapBlock("12", c(32), c(32), std=0.058925565)
        self.block13 = MaxFeatureMapBlock("13", c(32), c(64), std=0.041666668)
        self.block14 = MaxFeatureMapBlock("14", c(64), c(64), std=0.041666668)
        # Level 2: 6 blocks at S/8 → net2 (the decoder's skip input)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.block21 = MaxFeatureMapBlock("21", c(64), c(96), std=0.034020692)
        self.block22 = MaxFeatureMapBlock("22", c(96), c(96), std=0.034020692)
        self.block23 = MaxFeatureMapBlock("23", c(96), c(128), std=0.029462783)
        self.block24 = MaxFeatureMapBlock("24", c(128), c(128), std=0.029462783)
        self.block25 = MaxFeatureMapBlock("25", c(128), c(160), std=0.026352314)
        self.block26 = MaxFeatureMapBlock("26", c(160), c(160), std=0.026352314)
        # Level 3: 4 blocks at S/16 → net3
        self.pool3 = nn.MaxPool2d(2, 2)
        self.block31 = MaxFeatureMapBlock("31", c(160), c(320), std=0.0186339)
        self.block32 = MaxFeatureMapBlock("32", c(320), c(320), std=0.0186339)
        self.block33 = MaxFeatureMapBlock("33", c(320), c(320), std=0.0186339)
        self.block34 = MaxFeatureMapBlock("34", c(320), c(320), std=0.0186339)
        # Level 4: 2 blocks with 5×5 kernels at S/32 → net4, averaged into the pid vector
        self.pool4 = nn.MaxPool2d(2, 2)
        self.block41 = MaxFeatureMapBlock("41", c(320), c(256), std=0.020833334, kernel_size=5, padding=2)
        self.block42 = MaxFeatureMapBlock("42", c(256), c(256), std=0.020833334, kernel_size=5, padding=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def _blocks(self, x: Tensor, *names: str) -> Tensor:
        for name in names:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: Tensor) -> list[Tensor]:
        """x: (B, 3, S, S) RGB in [0, 1] (no mean/std normalisation).

        Returns the original's list ``[pid, net4, net3, net2, net1]`` (index with PID, NET4, …):
            pid  (B, P)               P = scaled(256) — 256 at the paper's width
            net4 (B, c256, S/32, S/32)
            net3 (B, c320, S/16, S/16)
            net2 (B, c160, S/8, S/8)   — the decoder's skip
            net1 (B, c64, S/4, S/4)    — what the pid-space word classifier (dis-fc) sees
        where cN = scaled(N, width).
        """
        s = self.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, s, s):
            raise ValueError(f"IdentityEncoder expects (B, 3, {s}, {s}) images, got {tuple(x.shape)}")
        net1 = self._blocks(self.pool1(self.block1(x)), "block11", "block12", "block13", "block14")
        net2 = self._blocks(self.pool2(net1), "block21", "block22", "block23", "block24", "block25", "block26")
        net3 = self._blocks(self.pool3(net2), "block31", "block32", "block33", "block34")
        net4 = self._blocks(self.pool4(net3), "block41", "block42")
        pid = self.avgpool(net4).flatten(1)
        return [pid, net4, net3, net2, net1]


class FaceIdClassifier(nn.Module):
    """E_p's face-identity head for pretraining (the original's ``Face_ID_fc``): Dropout(0.5) → Linear(P → n_ids).

    Args:
        width: the IdentityEncoder's width, so that P = scaled(256, width).
        n_ids: number of identities; the original used 40,145 (an MS-Celeb-1M subset, spec §4.6).
    """

    def __init__(self, *, width: float = 1.0, n_ids: int = 40145) -> None:
        super().__init__()
        self.fc = nn.Linear(scaled(256, width), n_ids)
        self.dropout = nn.Dropout(0.5)

    def forward(self, pid: Tensor) -> Tensor:
        """pid: (B, P) → identity logits (B, n_ids)."""
        return self.fc(self.dropout(pid))

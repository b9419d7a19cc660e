"""G, the decoder: one frame from the identity frame's pid features and one word-ID (wid) feature (spec §3.7).

Module names follow the original ``network/Decoder_networks.py`` so that the released checkpoint loads strictly:
``deconv1_1_new``, ``deconv1_1_bn``, ``convblock1.conv1_0`` … ``convblock6.conv6_1_bn``, ``conv7_1``,
``conv7_1_bn``, ``conv7_2``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from davs_model.networks.common import PAPER_IMAGE_SIZE, check_image_size, scaled
from davs_model.networks.identity_encoder import NET2, PID

# Paper layout: (input channels, output channels, convs) of convblock1..6, before width scaling. Block 4 also takes
# the 160-channel skip (E_p's net2).
CONV_BLOCKS = ((512, 512, 2), (512, 512, 3), (512, 256, 4), (256, 256, 4), (256, 128, 3), (128, 64, 2))
SKIP_CHANNELS = 160
SKIP_BLOCK = 3  # index of the block (convblock4) whose input is cat(skip, net)


class ConvBlock(nn.Module):
    """``n_convs`` × (Conv3×3 s1 p1 → BN → ReLU), named ``conv{name}_{i}`` and ``conv{name}_{i}_bn`` as in the
    original. Init: Kaiming-normal (fan_out) conv weights, biases 0, BN γ = 1, β = 0.

    Args:
        name: the block's number ("1" … "6").
        in_channels, out_channels: of the first conv; the others map out_channels → out_channels.
        n_convs: number of conv–BN–ReLU layers.
    """

    def __init__(self, name: str, in_channels: int, out_channels: int, *, n_convs: int) -> None:
        super().__init__()
        self.layer_names = tuple((f"conv{name}_{i}", f"conv{name}_{i}_bn") for i in range(n_convs))
        for i, (conv, bn) in enumerate(self.layer_names):
            self.add_module(conv, nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, 1, 1))
            self.add_module(bn, nn.BatchNorm2d(out_channels))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C_in, H, W) → (B, C_out, H, W)."""
        for conv, bn in self.layer_names:
            x = F.relu(getattr(self, bn)(getattr(self, conv)(x)))
        return x


def _legacy_default_init_(conv: nn.ConvTranspose2d) -> None:
    """PyTorch ≤ 0.4's default init, which the original's transposed convs got: U(±1/√(C_in·k²)) for weight and
    bias. (Today's default computes the fan from C_out for transposed convs: 3.3× wider for conv7_2.)"""
    bound = 1.0 / math.sqrt(conv.in_channels * math.prod(conv.kernel_size))
    nn.init.uniform_(conv.weight, -bound, bound)
    nn.init.uniform_(conv.bias, -bound, bound)


class Decoder(nn.Module):
    """G: ``x̂ = G(E_p(identity frame), wid)``. 22.40 M parameters at the paper's size.

    Layout at S = 256: cat(pid, wid) as a 1×1 map → ConvTranspose 4×4 → 4×4; six conv blocks, each followed by ×2
    bilinear up-sampling (8, 16, 32, 64, 128, 256); E_p's net2 (160×32×32) joins before convblock4; two 3×3
    transposed convs to RGB; (tanh + 1)/2.

    Reduced sizes keep every layer (same state_dict keys) and drop the *leading* up-samplings, so that the skip
    still joins at S/8 and the output is S×S: at S = 128 convblock1 is not followed by up-sampling; at S = 64
    neither convblock1 nor convblock2 is (both run at 4×4).

    Args:
        width: channel multiplier (1.0 = the paper's); channel counts go through ``scaled``.
        image_size: output side S, one of 64, 128, 256 (the paper's).
        pid_dim: length of the pid vector (E_p's ``pid_dim``: scaled(256, width)).
        wid_dim: length of the wid feature (256 in the paper).
    """

    def __init__(
        self, *, width: float = 1.0, image_size: int = 256, pid_dim: int = 256, wid_dim: int = 256
    ) -> None:
        super().__init__()
        self.image_size = check_image_size(image_size)
        self.pid_dim, self.wid_dim = pid_dim, wid_dim
        self.skip_channels = scaled(SKIP_CHANNELS, width)

        def c(channels: int) -> int:
            return scaled(channels, width)

        self.deconv1_1_new = nn.ConvTranspose2d(pid_dim + wid_dim, c(512), 4, 1, 0)
        self.deconv1_1_bn = nn.BatchNorm2d(c(512))
        for i, (c_in, c_out, n_convs) in enumerate(CONV_BLOCKS):
            c_in = c(c_in) + (self.skip_channels if i == SKIP_BLOCK else 0)
            self.add_module(f"convblock{i + 1}", ConvBlock(str(i + 1), c_in, c(c_out), n_convs=n_convs))
        self.conv7_1 = nn.ConvTranspose2d(c(64), c(32), 3, 1, 1)
        self.conv7_1_bn = nn.BatchNorm2d(c(32))
        self.conv7_2 = nn.ConvTranspose2d(c(32), 3, 3, 1, 1)
        for m in (self.deconv1_1_new, self.conv7_1, self.conv7_2):
            _legacy_default_init_(m)
        for bn in (self.deconv1_1_bn, self.conv7_1_bn):
            nn.init.ones_(bn.weight)
            nn.init.zeros_(bn.bias)

        # Which blocks are followed by ×2 up-sampling: all six at 256; the first log2(256/S) are not.
        n_without = int(math.log2(PAPER_IMAGE_SIZE // self.image_size))
        self.upsample_after = tuple(i >= n_without for i in range(len(CONV_BLOCKS)))

    def forward(self, pid: Sequence[Tensor], wid: Tensor) -> Tensor:
        """Generate one frame.

        pid: E_p's output list for the identity frame,
            ``[pid (B, P), net4, net3, net2 (B, c160, S/8, S/8), net1]``; only the pid vector and net2 are used.
        wid: (B, wid_dim) word-ID feature (from the lip or the audio encoder).
        Returns (B, 3, S, S) RGB in [0, 1].
        """
        pid_vector, skip = pid[PID], pid[NET2]
        if pid_vector.shape[1:] != (self.pid_dim,) or wid.shape[1:] != (self.wid_dim,):
            raise ValueError(
                f"Decoder expects pid (B, {self.pid_dim}) and wid (B, {self.wid_dim}), "
                f"got {tuple(pid_vector.shape)} and {tuple(wid.shape)}"
            )
        # 1. content: pid ⊕ wid as a 1×1 map → 4×4
        z = torch.cat((pid_vector, wid), dim=1)[:, :, None, None]  # (B, P + W, 1, 1)
        net = F.relu(self.deconv1_1_bn(self.deconv1_1_new(z)))
        # 2. six conv blocks with bilinear ×2 up-sampling; the identity frame's net2 joins before convblock4
        for i, upsample in enumerate(self.upsample_after):
            if i == SKIP_BLOCK:
                net = torch.cat((skip, net), dim=1)
            net = getattr(self, f"convblock{i + 1}")(net)
            if upsample:
                # align_corners=True: what nn.Upsample(mode='bilinear') did in PyTorch 0.2, the authors' version
                net = F.interpolate(net, scale_factor=2, mode="bilinear", align_corners=True)
        # 3. to RGB in [0, 1]
        net = F.relu(self.conv7_1_bn(self.conv7_1(net)))
        return (torch.tanh(self.conv7_2(net)) + 1) / 2

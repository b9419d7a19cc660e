"""D_img / D_seq, the image and sequence discriminators (spec §3.8): the original's ``Discriminator``.

One class serves both uses. With ``n_frames=1`` it is the original's ``netD`` (one RGB frame + one MFCC window),
with ``n_frames=6`` it is ``netD_mul`` (6 frames stacked on the channels, 18 = 6·RGB, + 6 MFCC windows stacked
as channels). It has two outputs::

    frames ─ NLayer trunk (ndf 64, 3 layers, BN) ─ F ─┬─ conv4 ─ σ ──────────────────────────▶ patch map
                                                      └─ mouth cells ─ conv6 ─ conv9 ─ 512 ─┐
    MFCC windows ─ mfcc_conv1..4 (+ BN) ─ 256 ──────────────────────────────────────────────┴─ fc ─ fc2 ─ σ ─▶ sync

* F: the trunk's feature map, 512 × 31 × 31 at 256 px;
* **patch map**: PatchGAN real/fake probabilities, (B, 1, 30, 30) at 256 px;
* **sync**: an audio-visual score from the mouth region of F and the audio, (B, 1).

State-dict names are the original's: ``conv1``, ``conv2_1``/``norm_1``, ``conv2_2``/``norm_2``,
``conv3``/``norm3``, ``conv4``, ``conv6``/``bn6``, ``conv9``, ``mfcc_conv1..4``/``mfcc_bn1..4``, ``fc``, ``fc2``.
``conv8``, ``bn7``, ``bn8`` and ``bn9`` are never used in ``forward`` but are in the checkpoint, so they are kept.

Reduced sizes: F is (S/8 − 1)² cells. At 256 px the mouth window is F[:, :, 19:28, 11:20] (9×9 cells, exactly the
original). At S px it is :func:`mouth_cells`: top = ⌊19·S/256⌋, left = ⌊11·S/256⌋, side = max(3, ⌈9·S/256⌉),
kept inside F; conv9's kernel is side − 2 so that conv6 (3×3) → conv9 still ends at 1×1 (7 at 256, 3 at 128 and
1 at 64 px, where the window is F[:, :, 4:7, 2:5]).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from davs_model.networks.audio_encoder import mfcc_windows
from davs_model.networks.common import PAPER_IMAGE_SIZE, check_image_size, scaled

__all__ = ["SequenceDiscriminator", "init_discriminator_weights", "mouth_cells"]

LEAKY_SLOPE = 0.2
INIT_STD = 0.02
# The original's mouth window on the 31×31 feature map of a 256-px input: rows 19:28, cols 11:20.
MOUTH_CELLS_256 = (19, 11, 9)  # (top, left, side)


def init_discriminator_weights(module: nn.Module) -> None:
    """The original's ``networks.weights_init``, for ``Module.apply``: conv weights ~ N(0, 0.02) with zero bias,
    BatchNorm2d γ ~ N(1, 0.02) and β = 0. Linear layers keep PyTorch's default initialisation."""
    with torch.no_grad():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)):
            nn.init.normal_(module.weight, 0.0, INIT_STD)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, INIT_STD)
            nn.init.zeros_(module.bias)


def feature_side(image_size: int) -> int:
    """Side of the trunk's feature map F: three stride-2 convs, then a 4×4/1 conv with padding 1 (31 at 256)."""
    return check_image_size(image_size) // 8 - 1


def mouth_cells(image_size: int) -> tuple[int, int, int]:
    """(top, left, side) of the mouth window on F; (19, 11, 9) at 256 px (see the module docstring)."""
    scale = check_image_size(image_size) / PAPER_IMAGE_SIZE
    top, left, side = MOUTH_CELLS_256
    side = max(3, math.ceil(side * scale))
    limit = feature_side(image_size) - side
    return min(math.floor(top * scale), limit), min(math.floor(left * scale), limit), side


class SequenceDiscriminator(nn.Module):
    """PatchGAN + audio-visual sync discriminator on ``n_frames`` stacked frames and their MFCC windows.

    The weights are initialised with :func:`init_discriminator_weights`, as the original does for netD/netD_mul.

    Args:
        n_frames: frames (and MFCC windows) judged together: 1 = the original's ``netD``, 6 = ``netD_mul``.
        width: channel multiplier (1.0 = paper: ndf 64 … 512, audio 64 … 256).
        image_size: frame side S, one of ``IMAGE_SIZES`` (256 = paper).
    """

    def __init__(self, *, n_frames: int = 6, width: float = 1.0, image_size: int = 256) -> None:
        super().__init__()
        self.n_frames = n_frames
        self.image_size = check_image_size(image_size)
        self.mouth = mouth_cells(image_size)
        ndf1, ndf2, ndf4, ndf8 = (scaled(c, width) for c in (64, 128, 256, 512))
        a64, a128, a256 = (scaled(c, width) for c in (64, 128, 256))
        # Image trunk (pix2pix NLayer, n_layers = 3): S → S/2 → S/4 → S/8 → S/8 − 1.
        self.conv1 = nn.Conv2d(3 * n_frames, ndf1, kernel_size=4, stride=2, padding=1)
        self.conv2_1 = nn.Conv2d(ndf1, ndf2, kernel_size=4, stride=2, padding=1, bias=False)
        self.norm_1 = nn.BatchNorm2d(ndf2)
        self.conv2_2 = nn.Conv2d(ndf2, ndf4, kernel_size=4, stride=2, padding=1, bias=False)
        self.norm_2 = nn.BatchNorm2d(ndf4)
        self.conv3 = nn.Conv2d(ndf4, ndf8, kernel_size=4, stride=1, padding=1, bias=False)
        self.norm3 = nn.BatchNorm2d(ndf8)
        self.conv4 = nn.Conv2d(ndf8, 1, kernel_size=4, stride=1, padding=1)
        # Audio branch: n_frames × 20 × 12 → 64×7×7 → 128×4×4 → 256×2×2 → 256×1×1.
        self.mfcc_conv1 = nn.Conv2d(n_frames, a64, kernel_size=3, stride=(3, 2), padding=(1, 2), bias=False)
        self.mfcc_bn1 = nn.BatchNorm2d(a64)
        self.mfcc_conv2 = nn.Conv2d(a64, a128, kernel_size=3, stride=2, padding=1, bias=False)
        self.mfcc_bn2 = nn.BatchNorm2d(a128)
        self.mfcc_conv3 = nn.Conv2d(a128, a256, kernel_size=3, stride=1, padding=0, bias=False)
        self.mfcc_bn3 = nn.BatchNorm2d(a256)
        self.mfcc_conv4 = nn.Conv2d(a256, a256, kernel_size=2, stride=1, bias=False)
        self.mfcc_bn4 = nn.BatchNorm2d(a256)
        # Mouth branch: side × side cells → conv6 3×3 → (side − 2)² → conv9 (side − 2)² kernel → 1×1.
        self.conv6 = nn.Conv2d(ndf8, ndf8, kernel_size=3, stride=1, bias=False)
        self.conv8 = nn.Conv2d(ndf8, 1, kernel_size=1, stride=1, bias=False)  # unused; in the checkpoint
        self.bn6 = nn.BatchNorm2d(ndf8)
        self.bn7 = nn.BatchNorm2d(ndf8)  # unused; in the checkpoint
        self.bn8 = nn.BatchNorm2d(1)  # unused; in the checkpoint
        self.bn9 = nn.BatchNorm2d(ndf8)  # unused; in the checkpoint
        self.conv9 = nn.Conv2d(ndf8, ndf8, kernel_size=self.mouth[2] - 2, stride=1)
        # Fusion: no activation between fc and fc2 (as the original).
        self.fc = nn.Linear(ndf8 + a256, ndf8)
        self.fc2 = nn.Linear(ndf8, 1)
        self.apply(init_discriminator_weights)

    def forward(
        self, frames: torch.Tensor, mfcc: torch.Tensor, *, logits: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """frames: (B, n_frames, 3, S, S) RGB in [0, 1]; mfcc: (B, n_frames, 20, 12) or (B, n_frames, 1, 20, 12),
        window i paired with frame i.

        Returns ``(patch, sync)``: patch (B, 1, S/8 − 2, S/8 − 2) = (B, 1, 30, 30) at 256 px and sync (B, 1), both
        probabilities in [0, 1] (the original's Sigmoid, trained with BCE), or logits with ``logits=True``
        (for ``binary_cross_entropy_with_logits``, e.g. under autocast)."""
        n, size = self.n_frames, self.image_size
        if frames.dim() != 5 or tuple(frames.shape[1:]) != (n, 3, size, size):
            raise ValueError(f"expected frames (B, {n}, 3, {size}, {size}), got {frames.shape}")
        mfcc = mfcc_windows(mfcc)
        if mfcc.shape[:2] != frames.shape[:2]:
            raise ValueError(f"frames {frames.shape} and MFCC windows {mfcc.shape} differ in (B, n_frames)")
        # 1. frames stacked on channels: (B, n·3, S, S), frame-major [f0 RGB, f1 RGB, …] as the original's view
        x = frames.flatten(1, 2)
        x = F.leaky_relu(self.conv1(x), LEAKY_SLOPE)
        x = F.leaky_relu(self.norm_1(self.conv2_1(x)), LEAKY_SLOPE)
        x = F.leaky_relu(self.norm_2(self.conv2_2(x)), LEAKY_SLOPE)
        features = F.leaky_relu(self.norm3(self.conv3(x)), LEAKY_SLOPE)  # F: (B, 512, S/8 − 1, S/8 − 1)
        # 2. PatchGAN map
        patch = self.conv4(features)
        # 3. mouth region of F → (B, 512)
        top, left, side = self.mouth
        mouth = features[:, :, top : top + side, left : left + side]
        mouth = F.leaky_relu(self.bn6(self.conv6(mouth)), LEAKY_SLOPE)
        mouth = F.leaky_relu(self.conv9(mouth), LEAKY_SLOPE).flatten(1)
        # 4. audio: windows as channels (B, n, 20, 12) → (B, 256); no activations, as the original
        audio = mfcc
        for i in range(1, 5):
            audio = self.get_submodule(f"mfcc_bn{i}")(self.get_submodule(f"mfcc_conv{i}")(audio))
        audio = audio.flatten(1)
        # 5. sync score from mouth + audio
        sync = self.fc2(self.fc(torch.cat((mouth, audio), dim=1)))
        if logits:
            return patch, sync
        return torch.sigmoid(patch), torch.sigmoid(sync)

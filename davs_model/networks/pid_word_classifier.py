"""dis-fc: a word classifier on the pid space (the original's ``ID_dis32``, spec §3.6).

It reads E_p's level-1 maps (net1) of ``n_frames`` consecutive frames and predicts the spoken word. Training E_p
against it removes word information from the pid space. Module names follow the original
``network/Discriminator_networks.py``: ``conv6``, ``fc``, ``fc_2``.
"""

from __future__ import annotations

from torch import Tensor, nn

from davs_model.networks.common import check_image_size, scaled


class PidWordClassifier(nn.Module):
    """Per frame: Conv(3, 2, 1, c64 → 1) → ReLU → flatten → fc; then the frames' features, concatenated in time
    order, → Dropout(0.5) → fc_2 → word logits. 1.41 M parameters at the paper's size.

    At S = 256 the per-frame map is 1×32×32, so ``fc`` is Linear(1024 → 128) and ``fc_2`` Linear(20·128 → 500). At
    reduced sizes the 1024 becomes (S/8)² and the 128 becomes scaled(128, width).

    Init (the original's ``networks.weights_init`` plus its constructor): conv6 N(0, 0.02) with bias 0; fc_2
    N(0, 1e-4) with bias 0; fc keeps the framework default (``weights_init`` touches only Conv/BatchNorm layers).

    Args:
        width: channel multiplier of E_p (the input has scaled(64, width) channels).
        image_size: E_p's input side S, one of 64, 128, 256 (the paper's); net1 is S/4 × S/4.
        n_words: number of word classes (500 for LRW).
        n_frames: frames per clip (the original's ``disfc_length``, 20).
    """

    def __init__(
        self, *, width: float = 1.0, image_size: int = 256, n_words: int = 500, n_frames: int = 20
    ) -> None:
        super().__init__()
        self.image_size = check_image_size(image_size)
        self.n_frames = n_frames
        self.in_channels = scaled(64, width)
        self.frame_dim = scaled(128, width)
        side = image_size // 8  # after conv6's stride 2 on the S/4 map
        self.conv6 = nn.Conv2d(self.in_channels, 1, 3, 2, 1)
        self.fc = nn.Linear(side * side, self.frame_dim)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(0.5)
        self.fc_2 = nn.Linear(self.frame_dim * n_frames, n_words)
        nn.init.normal_(self.conv6.weight, 0.0, 0.02)
        nn.init.zeros_(self.conv6.bias)
        nn.init.normal_(self.fc_2.weight, 0.0, 1e-4)
        nn.init.zeros_(self.fc_2.bias)

    def forward(self, net1: Tensor) -> Tensor:
        """net1: (B, T, C, S/4, S/4) E_p level-1 maps of T = n_frames consecutive frames → logits (B, n_words).

        (The original's ``forward`` reads ``self.config.disfc_length``, but ``self.config`` is never assigned, so
        it raises AttributeError; here the frame count is the ``n_frames`` argument.)
        """
        b, t, c, h, w = net1.shape
        side = self.image_size // 4
        if (t, c, h, w) != (self.n_frames, self.in_channels, side, side):
            raise ValueError(
                f"PidWordClassifier expects (B, {self.n_frames}, {self.in_channels}, {side}, {side}), "
                f"got {tuple(net1.shape)}"
            )
        # 1. per frame: (B·T, C, S/4, S/4) → (B·T, 1, S/8, S/8) → (B·T, frame_dim)
        per_frame = self.fc(self.relu(self.conv6(net1.reshape(b * t, c, h, w))).flatten(1))
        # 2. the clip: the T frame features side by side, in time order → (B, T·frame_dim) → logits
        return self.fc_2(self.dropout(per_frame.reshape(b, t * self.frame_dim)))

"""DAVS: the networks composed, with the inference API used by users, evaluation and rendering.

Attribute names are the original checkpoint's top-level keys (``ID_encoder``, ``Decoder``, ``mfcc_encoder``,
``lip_feature_encoder``, ``model_fusion``; training-only ``discriminator_audio``, ``ID_lip_discriminator``,
``netD_mul``), so a state dict maps one to one onto the authors' released file.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from davs_model.networks.audio_encoder import AudioEncoder
from davs_model.networks.decoder import Decoder
from davs_model.networks.identity_encoder import IdentityEncoder
from davs_model.networks.lip_encoder import LipEncoder
from davs_model.networks.modality_discriminator import ModalityDiscriminator
from davs_model.networks.pid_word_classifier import PidWordClassifier
from davs_model.networks.sequence_discriminator import SequenceDiscriminator
from davs_model.networks.word_classifier import WordClassifier
from davs_model.training.config import ModelConfig

GENERATOR_MODULES = ("ID_encoder", "Decoder", "mfcc_encoder", "lip_feature_encoder", "model_fusion")
DISCRIMINATOR_MODULES = ("discriminator_audio", "ID_lip_discriminator", "netD_mul")
# The original's test-time scalars on the wid feature (Test_Audio_Model.py:119, Test_Video_Model.py:114).
AUDIO_WID_SCALE = 1.5
VIDEO_WID_SCALE = 0.8


class DAVS(nn.Module):
    """E_p, E_a^w, E_v^w, C and G (and, for training, D_mod, the pid word classifier and the sequence D).

    Args:
        config: network sizes (the paper's by default).
        with_discriminators: build the training-only networks too.
    """

    def __init__(self, config: ModelConfig | None = None, *, with_discriminators: bool = True) -> None:
        super().__init__()
        cfg = self.config = config or ModelConfig()
        self.ID_encoder = IdentityEncoder(width=cfg.width, image_size=cfg.image_size)
        self.Decoder = Decoder(
            width=cfg.width, image_size=cfg.image_size, pid_dim=self.ID_encoder.pid_dim, wid_dim=cfg.wid_dim
        )
        self.mfcc_encoder = AudioEncoder(width=cfg.width, wid_dim=cfg.wid_dim)
        self.lip_feature_encoder = LipEncoder(width=cfg.width, image_size=cfg.image_size, wid_dim=cfg.wid_dim)
        self.model_fusion = WordClassifier(wid_dim=cfg.wid_dim, n_steps=cfg.pred_length, n_words=cfg.n_words)
        self.with_discriminators = with_discriminators
        if with_discriminators:
            self.discriminator_audio = ModalityDiscriminator(wid_dim=cfg.wid_dim)
            self.ID_lip_discriminator = PidWordClassifier(
                width=cfg.width, image_size=cfg.image_size, n_words=cfg.n_words, n_frames=cfg.disfc_length
            )
            self.netD_mul = SequenceDiscriminator(
                n_frames=cfg.sequence_length, width=cfg.width, image_size=cfg.image_size
            )

    # ---- parameter groups -------------------------------------------------------------------------------------
    def generator_parameters(self) -> Iterator[nn.Parameter]:
        """What the original's optimizer_G updates: G, E_p, C, E_a^w, E_v^w."""
        for name in GENERATOR_MODULES:
            yield from getattr(self, name).parameters()

    def discriminator_parameters(self) -> Iterator[nn.Parameter]:
        """What the original's optimizer_D updates: sequence D, D_mod, the pid word classifier."""
        for name in DISCRIMINATOR_MODULES:
            yield from getattr(self, name).parameters()

    def generator_state_dict(self) -> dict[str, Tensor]:
        """State of the inference networks only (what a finished model file holds)."""
        return {f"{n}.{k}": v for n in GENERATOR_MODULES for k, v in getattr(self, n).state_dict().items()}

    # ---- encoders and decoder ---------------------------------------------------------------------------------
    def encode_identity(self, identity: Tensor) -> list[Tensor]:
        """identity (B, 3, S, S) in [0, 1] → the pid list [pid, net4, net3, net2, net1]."""
        return self.ID_encoder(identity)

    def encode_audio(self, mfcc: Tensor) -> Tensor:
        """mfcc (B, T, 20, 12) → wid (B, T, wid_dim)."""
        return self.mfcc_encoder(mfcc)

    def encode_video(self, frames: Tensor) -> Tensor:
        """frames (B, T, 3, S, S) in [0, 1] → wid (B, T, wid_dim)."""
        return self.lip_feature_encoder(frames)

    def decode(self, pid: list[Tensor], wid: Tensor) -> Tensor:
        """pid list of B identities, wid (B, wid_dim) → frames (B, 3, S, S) in [0, 1]."""
        return self.Decoder(pid, wid)

    # ---- the user-facing API ----------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        identity: Tensor,
        *,
        mfcc: Tensor | None = None,
        video: Tensor | None = None,
        wid_scale: float | None = None,
        batch_size: int = 32,
    ) -> Tensor:
        """One identity photo driven by speech or by a video.

        identity: (3, S, S) float in [0, 1], aligned and centre-cropped; mfcc: (T, 20, 12) MFCC windows (row i is
        the original's bin i + 2); video: (T, 3, S, S) driving frames. Returns frames (T, 3, S, S) in [0, 1].
        ``wid_scale`` defaults to the original's test-time 1.5 (audio) and 0.8 (video).
        """
        if (mfcc is None) == (video is None):
            raise ValueError("give exactly one of mfcc= or video=")
        device = next(self.parameters()).device
        pid = self.encode_identity(identity.to(device)[None].float())
        if mfcc is not None:
            wid = self.encode_audio(torch.as_tensor(mfcc, dtype=torch.float32, device=device)[None])[0]
            scale = AUDIO_WID_SCALE if wid_scale is None else wid_scale
        else:
            wid = self.encode_video(video.to(device)[None].float())[0]
            scale = VIDEO_WID_SCALE if wid_scale is None else wid_scale
        out = []
        for start in range(0, len(wid), batch_size):
            chunk = wid[start : start + batch_size] * scale
            out.append(self.decode([p.expand(len(chunk), *p.shape[1:]) for p in pid], chunk))
        return torch.cat(out)

    @torch.no_grad()
    def word_logits(self, *, mfcc: Tensor | None = None, video: Tensor | None = None) -> Tensor:
        """Word logits of ``pred_length`` (12) steps of audio (12, 20, 12) or video (12, 3, S, S) → (n_words,)."""
        if (mfcc is None) == (video is None):
            raise ValueError("give exactly one of mfcc= or video=")
        device = next(self.parameters()).device
        if mfcc is not None:
            wid = self.encode_audio(torch.as_tensor(mfcc, dtype=torch.float32, device=device)[None])
        else:
            wid = self.encode_video(video.to(device)[None].float())
        return self.model_fusion(wid)[0]

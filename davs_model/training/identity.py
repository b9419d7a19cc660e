"""Optional identity pretraining of E_p in stage 1 (spec §4.6, step 1), when the shards name their speakers.

The original pretrained E_p as a face-recognition network (``Face_ID_fc`` over 40,145 MS-Celeb-1M identities) and
never released that stage. We do the same on the training shards' own speakers (e.g. VoxCeleb ids): speaker
cross-entropy on E_p(A) of each clip's identity frame, with its own Adam over E_p and the classifier. It runs
beside the association step of stage 1 on the same batches; the parameter sets are disjoint, so this is the same
as two separate trainings. Stage 2 then starts from this E_p instead of a random one.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from davs_model.data.dataset import image_tensor
from davs_model.losses import word_ce
from davs_model.model import DAVS
from davs_model.networks.face_id_classifier import FaceIdClassifier
from davs_model.training.distributed import average_gradients

__all__ = ["IDENTITY_MODULE", "IdentityPretraining"]

log = logging.getLogger(__name__)
IDENTITY_MODULE = "ID_encoder"


class IdentityPretraining:
    """E_p + a speaker classifier, trained on ``batch["identity"]`` / ``batch["speaker"]`` (−1: unknown)."""

    def __init__(self, model: DAVS, n_speakers: int, *, lr: float, betas: tuple[float, float]) -> None:
        self.model = model
        device = next(model.parameters()).device
        self.head = FaceIdClassifier(n_speakers, pid_dim=model.ID_encoder.pid_dim).to(device)
        params = [*model.ID_encoder.parameters(), *self.head.parameters()]
        self.opt = torch.optim.Adam(params, lr=lr, betas=tuple(betas))

    @classmethod
    def maybe(cls, model: DAVS, speakers: list[str], enabled: bool, **adam) -> IdentityPretraining | None:
        """The pretraining when ``enabled`` and the data names ≥ 2 speakers; else None (logged)."""
        if not enabled:
            return None
        if len(speakers) < 2:
            log.info("identity pretraining skipped: the shards name %d speaker(s), it needs ≥ 2", len(speakers))
            return None
        log.info("identity pretraining of E_p on %d speakers", len(speakers))
        return cls(model, len(speakers), **adam)

    def step(self, batch: dict) -> dict[str, float]:
        """One Adam step on speaker CE; returns ``ID/speaker_ce`` and ``ID/speaker_acc`` (labelled clips only)."""
        device = next(self.head.parameters()).device
        identity, speaker = image_tensor(batch["identity"], device), batch["speaker"].to(device)
        self.head.train()
        logits = self.head(self.model.encode_identity(identity)[0])
        loss: Tensor = word_ce(logits, speaker)  # the same masked CE: −1 = no speaker
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients([*self.model.ID_encoder.parameters(), *self.head.parameters()])
        self.opt.step()
        known = speaker >= 0
        acc = (logits.argmax(1)[known] == speaker[known]).float().mean() if known.any() else logits.new_zeros(())
        return {"ID/speaker_ce": float(loss.detach()), "ID/speaker_acc": float(acc)}

    def state_dict(self) -> dict:
        return {"head": self.head.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.head.load_state_dict(state["head"])
        self.opt.load_state_dict(state["opt"])

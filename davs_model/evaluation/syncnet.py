"""SyncNet (Chung & Zisserman, "Out of time", ACCV 2016 workshops) as released in joonson/syncnet_python
(``SyncNetModel.py``, class ``S``), written from its description: the same layers with the same module names, so
that the released ``syncnet_v2.model`` state_dict loads strictly. Used only to score lip sync (LSE-C / LSE-D,
:mod:`davs_model.evaluation.lse`); never trained here.

Inputs as the released evaluation feeds them (``SyncNetInstance.evaluate``):

- audio: (N, 1, 13, 20) float, 13 MFCC coefficients × 20 MFCC frames (0.2 s) of python_speech_features;
- lips: (N, 3, 5, 224, 224) float, five consecutive 224×224 face crops, BGR channel order (OpenCV), values 0-255.

Each branch gives a 1024-d embedding; in sync, the two embeddings are close in Euclidean distance.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from davs_model.utils.state_dict import match_keys

EMBEDDING = 1024
AUDIO_SHAPE = (1, 13, 20)  # channels, MFCC coefficients, MFCC frames (4 per video frame at 25 fps)
LIP_SHAPE = (3, 5, 224, 224)  # BGR, frames, height, width
N_PARAMETERS = 13_631_616  # trainable parameters of both branches (test_syncnet checks it)


def _conv2d(cin: int, cout: int, kernel, padding=(1, 1), inplace: bool = True) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, padding=padding), nn.BatchNorm2d(cout), nn.ReLU(inplace=inplace)]


def _conv3d(cin: int, cout: int, kernel, stride=1, padding=0) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding), nn.BatchNorm3d(cout), nn.ReLU(True)]


def _head() -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, EMBEDDING))


class SyncNet(nn.Module):
    """The two-stream SyncNet: ``netcnnaud``+``netfcaud`` (MFCC → 1024-d), ``netcnnlip``+``netfclip`` (5 frames
    → 1024-d). Module indices inside each ``nn.Sequential`` match the released file's keys."""

    def __init__(self) -> None:
        super().__init__()
        # 1×13×20 → 64×13×20 → 192×11×9 → … → 256×5×4 → 512×1×1 (the 1×1 max-pool is the original's no-op)
        self.netcnnaud = nn.Sequential(
            *_conv2d(1, 64, 3),
            nn.MaxPool2d(1, 1),
            *_conv2d(64, 192, 3),
            nn.MaxPool2d(3, stride=(1, 2)),
            *_conv2d(192, 384, 3),
            *_conv2d(384, 256, 3),
            *_conv2d(256, 256, 3),
            nn.MaxPool2d(3, stride=2),
            *_conv2d(256, 512, (5, 4), padding=0, inplace=False),
        )
        self.netfcaud = _head()
        # 3×5×224×224 → 96×1×109×109 → … → 512×1×1×1
        self.netcnnlip = nn.Sequential(
            *_conv3d(3, 96, (5, 7, 7), stride=(1, 2, 2)),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),
            *_conv3d(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            *_conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),
            *_conv3d(256, 512, (1, 6, 6)),
        )
        self.netfclip = _head()

    def forward_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(N, 1, 13, 20) MFCC blocks → (N, 1024)."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, 5, 224, 224) BGR 0-255 → (N, 1024)."""
        return self.netfclip(self.netcnnlip(frames).flatten(1))


def _load_reason(e: Exception) -> str:
    """The informative line of torch.load's error (its generic advice to pass weights_only=False is left out)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    generic = ("Weights only load failed", "Check the documentation", "Please file an issue")
    text = " ".join(line for line in lines if not line.startswith(generic)) or " ".join(lines)
    return f"{type(e).__name__}: {text[:200]}"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a torch-saved state_dict, loaded with ``weights_only=True`` (no arbitrary pickle code)."""
    path = Path(path)
    expected = "a torch-saved state_dict (a dict of tensors), such as syncnet_python's data/syncnet_v2.model"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types on foreign files (UnpicklingError, RuntimeError, KeyError…)
        reason = _load_reason(e)
        raise ValueError(
            f"{path}: not {expected}: torch.load(weights_only=True), which refuses anything but tensors and plain "
            f"containers, failed ({reason}). A file holding a pickled module must be re-saved as "
            "torch.save(model.state_dict(), path) where you trust it; this program never unpickles code."
        ) from e
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(f"{path}: holds a {type(state).__name__}, expected {expected}")
    return state


def load_syncnet(path: str | Path, device: str | torch.device = "cpu") -> SyncNet:
    """SyncNet in eval mode with the weights of ``path``; every key must match (names and shapes), except that
    BatchNorm's ``num_batches_tracked`` counters may be missing (files from PyTorch < 0.4 have none)."""
    state = read_state_dict(path)
    model = SyncNet()
    own = model.state_dict()
    m = match_keys(own, state)
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})" for k in m.misshapen]
    problems = {"missing": m.missing, "unexpected": m.unexpected, "wrong shape": wrong}
    if not m.ok:
        listed = [
            f"{name} ({len(keys)}): {', '.join(keys[:8])}{' …' if len(keys) > 8 else ''}"
            for name, keys in problems.items()
            if keys
        ]
        raise ValueError(f"{path}: not the SyncNet of syncnet_python (syncnet_v2.model); " + "; ".join(listed))
    model.load_state_dict(m.complete, strict=True)  # the counters a legacy file lacks keep their zero
    return model.to(device).eval()

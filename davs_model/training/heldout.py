"""Held-out measures of a training run: the audio-driven mouth-region L1 on val or test clips."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from davs_model.model import DAVS
from davs_model.networks.common import mouth_box
from davs_model.training.loop import make_dataset
from davs_model.training.report import generate_sequences

__all__ = ["evaluate_mouth_l1"]


@torch.no_grad()
def evaluate_mouth_l1(
    model: DAVS,
    val_shards,
    *,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    max_clips: int | None = None,
    wid_scale: float = 1.0,
    split: str = "val",
    seed: int = 0,
) -> float:
    """Mean |x̂ − x| over the mouth box (all channels, [0, 1] units) of audio-driven generation on held-out clips.

    Deterministic: eval mode, centre crop, the dataset's fixed per-clip draws (identity frame, window) at epoch
    0 of ``seed``; generation uses the training-time wid (``wid_scale`` 1, not the demo's 1.5)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    ds = make_dataset(val_shards, split, model.config, train=False, seed=seed)
    indices = list(range(len(ds) if max_clips is None else min(max_clips, len(ds))))
    if not indices:
        raise ValueError(f"no usable {split} clip in {list(val_shards)}")
    top, bottom, left, right = mouth_box(model.config.image_size)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        loader = DataLoader(torch.utils.data.Subset(ds, indices), batch_size=batch_size, shuffle=False)
        for batch in loader:
            real, fake, _ = generate_sequences(model, batch, device, wid_scale=wid_scale, video=False)
            diff = (fake.float() - real.float())[..., top:bottom, left:right].abs()
            total, count = total + float(diff.double().sum()), count + diff.numel()
    finally:
        model.train(was_training)
    return total / count

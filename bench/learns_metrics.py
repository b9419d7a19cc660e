"""Measures for ``bench/learns_on_demo.py``: the mouth opening, its correlation with a bootstrap interval, and
linear audio-only references ("oracle") for what the MFCC windows tell about the opening.

Mouth opening of a frame: the mean darkness (1 − grey level) of the central half of the mouth box, where the
demo's speech-driven mouth opens (``davs_model/demo/face.py``). r is Pearson's correlation over all (sequence,
frame) pairs after removing each sequence's mean (only the mouth's motion within a clip counts, not colour or
identity-frame differences between clips). A sequence is one held-out clip's aligned frames (25 for the demo's
LRW-like clips), each generated from its own MFCC window, with one identity frame of that clip; each clip gives
``len(identity_seeds)`` sequences (different identity frames). The 95 % interval resamples whole clips.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from davs_model.data.dataset import ShardClipDataset, image_tensor
from davs_model.networks.common import mouth_box

__all__ = [
    "ClipSeries", "audio_readout_r", "bootstrap_r", "generated_openings", "mouth_opening", "oracle_r", "pooled_r",
    "sequence_dataset",
]  # fmt: skip

ITEMS = 25  # aligned frame/bin items per demo clip (LRW: bins 2..26); a sequence covers them all
ClipSeries = list[tuple[np.ndarray, np.ndarray]]  # per clip: (generated, real) openings, (n_sequences, ITEMS)


def mouth_opening(frames: torch.Tensor, image_size: int) -> np.ndarray:
    """frames (..., 3, S, S) in [0, 1] → darkness of the central half of the mouth box, (...)."""
    top, bottom, left, right = mouth_box(image_size)
    h, w = bottom - top, right - left
    region = frames[..., top + h // 4 : bottom - h // 4, left + w // 4 : right - w // 4]
    return (1.0 - region.float().mean(dim=(-3, -2, -1))).numpy()


def sequence_dataset(shards, split: str, image_size: int, seed: int) -> ShardClipDataset:
    """Every clip of ``shards`` as one item of all its ``ITEMS`` aligned frames + MFCC windows (stride 1, centre
    crop); ``seed`` picks the identity frame."""
    return ShardClipDataset(
        shards, split=split, image_size=image_size, pred_length=ITEMS, stride=1, sequence_length=1,
        disfc_length=1, train=False, seed=seed, uint8=True,
    )  # fmt: skip


@torch.no_grad()
def generated_openings(
    model, shards_by_split: dict[str, list], *, wid_scale: float, identity_seeds=(0, 1, 2)
) -> ClipSeries:
    """Per held-out clip, the generated (audio-driven) and real openings of every aligned frame, one row per
    identity seed."""
    size, per_clip = model.config.image_size, {}
    model.eval()
    for split, shards in shards_by_split.items():
        for seed in identity_seeds:
            ds = sequence_dataset(shards, split, size, seed)
            for batch in DataLoader(ds, batch_size=4):
                frames = image_tensor(batch["frames"], "cpu")  # (B, ITEMS, 3, S, S)
                pid = model.encode_identity(image_tensor(batch["identity"], "cpu"))
                wid = model.encode_audio(batch["mfcc"]) * wid_scale
                fake = torch.stack([model.decode(pid, wid[:, i]) for i in range(wid.shape[1])], 1)
                for cid, g, r in zip(
                    batch["clip_id"], mouth_opening(fake, size), mouth_opening(frames, size), strict=True
                ):
                    per_clip.setdefault(f"{split}/{cid}", []).append((g, r))
    return [(np.stack([g for g, _ in rows]), np.stack([r for _, r in rows])) for rows in per_clip.values()]


def pooled_r(clips: ClipSeries) -> float:
    """Pearson r over all (sequence, frame) pairs, each sequence's mean removed."""
    g = np.concatenate([(a - a.mean(axis=-1, keepdims=True)).ravel() for a, _ in clips])
    r = np.concatenate([(b - b.mean(axis=-1, keepdims=True)).ravel() for _, b in clips])
    if g.std() == 0 or r.std() == 0:
        return 0.0  # a generator that ignores the audio (constant mouth) has no correlation
    return float(np.corrcoef(g, r)[0, 1])


def bootstrap_r(clips: ClipSeries, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(r, low, high): r and its 95 % percentile-bootstrap interval, resampling clips with replacement."""
    rng = np.random.default_rng(seed)
    draws = [pooled_r([clips[i] for i in rng.integers(0, len(clips), len(clips))]) for _ in range(n)]
    low, high = np.percentile(draws, [2.5, 97.5])
    return pooled_r(clips), float(low), float(high)


def oracle_r(shards_by_split: dict[str, list], train_shards: list, image_size: int, ridge: float = 100.0):
    """What the audio alone tells about the real opening: (r of the window's mean first MFCC coefficient c1, r of
    a ridge regression from the whole 20×12 window fitted on the training clips), on the held-out clips."""

    def series(shards, split):
        out = []
        for batch in DataLoader(sequence_dataset(shards, split, image_size, 0), batch_size=8):
            real = mouth_opening(image_tensor(batch["frames"], "cpu"), image_size)
            out += list(zip(batch["mfcc"].numpy(), real, strict=True))
        return out

    train = series(train_shards, "train")
    held = [c for split, shards in shards_by_split.items() for c in series(shards, split)]
    x = np.concatenate([m.reshape(len(m), -1) for m, _ in train])
    y = np.concatenate([o for _, o in train])
    mu, sd = x.mean(0), x.std(0) + 1e-9
    xs = (x - mu) / sd
    w = np.linalg.solve(xs.T @ xs + ridge * np.eye(xs.shape[1]), xs.T @ (y - y.mean()))
    c1 = pooled_r([(m[None, :, :, 0].mean(-1), o[None]) for m, o in held])
    fit = pooled_r([((((m.reshape(len(m), -1) - mu) / sd) @ w)[None], o[None]) for m, o in held])
    return c1, fit


@torch.no_grad()
def audio_readout_r(model, shards_by_split: dict[str, list], train_shards: list, ridge: float = 10.0) -> float:
    """Does E_a^w carry the opening? r of a ridge read-out wid → real opening, fitted on the training clips'
    windows, on the held-out clips (the probe says nothing about G; it checks what stage 1 hands to stage 2)."""
    size = model.config.image_size
    model.eval()

    def series(shards, split):
        out = []
        for batch in DataLoader(sequence_dataset(shards, split, size, 0), batch_size=8):
            real = mouth_opening(image_tensor(batch["frames"], "cpu"), size)
            out += list(zip(model.encode_audio(batch["mfcc"]).numpy(), real, strict=True))
        return out

    train = series(train_shards, "train")
    held = [c for split, shards in shards_by_split.items() for c in series(shards, split)]
    x, y = np.concatenate([w for w, _ in train]), np.concatenate([o for _, o in train])
    mu, sd = x.mean(0), x.std(0) + 1e-9
    xs = (x - mu) / sd
    coef = np.linalg.solve(xs.T @ xs + ridge * np.eye(xs.shape[1]), xs.T @ (y - y.mean()))
    return pooled_r([((((w - mu) / sd) @ coef)[None], o[None]) for w, o in held])

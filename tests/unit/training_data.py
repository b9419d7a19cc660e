"""Tiny synthetic training shards for the training tests (not a test module).

Each clip: 29 frames of 260×260, a smooth per-clip background and a "mouth" box (around the template mouth centre)
whose brightness follows the energy of the MFCC bin paired with the frame, so audio predicts the mouth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from davs_model.io.shards import ClipRecord, ShardWriter

T, N_BINS, SIZE = 29, 25, 260
N_WORDS = 6


SPEAKER_COLOURS = np.array([[0.25, 0.3, 0.7], [0.7, 0.3, 0.25], [0.3, 0.7, 0.3], [0.6, 0.6, 0.2]])


def clip_record(i: int, split: str, rng: np.random.Generator, speakers: int = 0) -> ClipRecord:
    """Clip ``i``; with ``speakers`` > 0 it belongs to speaker ``i % speakers``, whose colour is its background."""
    numbers = np.arange(2, 2 + N_BINS)
    energy = 0.5 + 0.4 * np.sin(0.6 * np.arange(T) + rng.uniform(0, 2 * np.pi))  # per frame, in [0.1, 0.9]
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    base = rng.uniform(0.2, 0.8, 3)
    if speakers:
        base = SPEAKER_COLOURS[i % speakers] + rng.uniform(-0.05, 0.05, 3)
    background = (base[None, None, :] + 0.2 * (yy[..., None] - 0.5) + 0.1 * (xx[..., None] - 0.5)).clip(0, 1)
    frames = np.repeat((background * 255)[None], T, axis=0)
    frames[:, 175:205, 100:165, :] = (energy[:, None, None, None] * 255) * np.ones(3)
    mfcc = energy[numbers][:, None, None] * 10 + rng.normal(0, 0.5, (N_BINS, 20, 12))
    return ClipRecord(
        clip_id=f"{split}{i:03d}", source="synthetic", split=split, label=int(i % N_WORDS), word=f"W{i % N_WORDS}",
        speaker=f"id{i % speakers:02d}" if speakers else "", frames_bgr=frames.astype(np.uint8), mfcc=mfcc,
        bin_numbers=numbers,
        frame_index=numbers.copy(), transforms=np.zeros((T, 2, 3)), detected=np.ones(T, bool), input_fps=25.0,
    )  # fmt: skip


def write_training_shards(root: Path, n_train: int = 8, n_val: int = 2, seed: int = 0, speakers: int = 0):
    """Two train shards (n_train clips in all) and one val shard; returns (train paths, val paths). With
    ``speakers`` > 0 (≤ 4) the clips name their speaker (``id00``, ``id01``, ...), told apart by colour."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    train = []
    for s, ids in enumerate(np.array_split(np.arange(n_train), 2)):
        path = root / "train" / f"{s:03d}.h5"
        with ShardWriter(path, split="train", shard=s, image_format="raw") as w:
            for i in ids:
                w.add(clip_record(int(i), "train", rng, speakers))
        train.append(path)
    val = root / "val" / "000.h5"
    with ShardWriter(val, split="val", shard=0, image_format="raw") as w:
        for i in range(n_val):
            w.add(clip_record(i, "val", rng, speakers))
    return train, [val]

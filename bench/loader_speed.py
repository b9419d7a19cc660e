"""Training loader speed: ShardClipDataset on the HDF5 shards vs the original loader on the original folder layout.

- ours: ``ShardClipDataset(uint8=True)``, as the training loop uses it (12 items stride 2, 20 dis-fc frames, one
  identity frame; random crop + flip) from the shards, through a ``DataLoader``; its images stay bytes until the
  training step scales them on its device. ``ours_f32``: the same items made float32 in the loader;
- original (``Dataloader/Data_load_sequence.py``, DAVS_SPEC §1.2-1.3): the shards exported to the original layout
  (``export_original_layout`` into a temporary folder); per clip ``cv2.imread`` of frames 2..26, one flip draw,
  BGR→RGB, float64 ``/255``, a 256 crop at a random offset, and ``np.fromfile`` of ``mfcc20/2..26.bin``, through a
  ``DataLoader`` with the same batch size and workers (its ``forward`` picks the windows from these blocks).

Both read the same clips in the same order (a seeded sampler with replacement), ``--batches`` batches a run; the
paths run interleaved ``--repeats`` times per worker count, and the ratio is that of the median batches/s.

    python bench/loader_speed.py [--shards 'results/shards/train/*.h5'] [--batch-size 8] [--batches 12]
                                 [--workers 0 2] [--repeats 5] [--image-size 256] [--profile]
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import glob
import pstats
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from davs_model.data.dataset import ShardClipDataset
from davs_model.io.export import export_original_layout

FRAMES = np.arange(2, 27)  # Data_load_sequence.py: pair = np.arange(2, 27)


class OriginalLayoutDataset(Dataset):
    """The original loader's work per clip (DAVS_SPEC §1.2): 25 JPEG files, float64, 25 ``.bin`` files."""

    def __init__(self, clip_dirs: list[Path], labels: list[int], seed: int = 0):
        self.clip_dirs, self.labels, self.seed = clip_dirs, labels, seed

    def __len__(self) -> int:
        return len(self.clip_dirs)

    def __getitem__(self, index: int) -> dict:
        d = self.clip_dirs[index]
        rng = np.random.default_rng([self.seed, index])
        flip = rng.random() < 0.5
        top, left = rng.integers(0, 5, 2)
        video = np.empty((len(FRAMES), 3, 256, 256), np.float64)
        for k, t in enumerate(FRAMES):
            image = cv2.imread(str(d / "align_face256" / f"{t}.jpg"))
            if flip:
                image = np.fliplr(image)
            image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2RGB) / 255
            video[k] = image[top : top + 256, left : left + 256].transpose(2, 0, 1)
        mfcc = np.stack([np.fromfile(d / "mfcc20" / f"{t}.bin").reshape(1, 20, 12) for t in FRAMES])
        return {"video": torch.from_numpy(video), "mfcc": torch.from_numpy(mfcc), "label": self.labels[index]}


def batches_per_second(dataset: Dataset, args, workers: int) -> float:
    sampler = RandomSampler(
        dataset,
        replacement=True,
        num_samples=args.batches * args.batch_size,
        generator=torch.Generator().manual_seed(0),
    )
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=workers, drop_last=True)
    start = time.perf_counter()
    n = sum(1 for _ in loader)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default="results/shards/train/*.h5")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=12, help="batches per run")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=256, help="ours' output side (the original: 256)")
    parser.add_argument("--profile", action="store_true", help="cProfile ours with 0 workers, print the top 20")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shard_paths = sorted(glob.glob(args.shards))
    if not shard_paths:
        raise SystemExit(f"no shards match {args.shards}: run `snakemake --cores 2 preprocess` first")
    # ours: uint8 images, as the training loop loads them (the step scales them to [0, 1] on its device);
    # ours_f32: the same items as float32 in [0, 1] made in the loader, to show what that costs
    ours = ShardClipDataset(shard_paths, split="train", image_size=args.image_size, train=True, uint8=True)
    ours_f32 = ShardClipDataset(shard_paths, split="train", image_size=args.image_size, train=True)
    tmp = Path(tempfile.mkdtemp(prefix="davs-loader-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    where = export_original_layout(shard_paths, tmp, progress=False)
    dirs = [where[c] for c in ours.clip_ids]  # the same clip at the same index
    original = OriginalLayoutDataset(dirs, [int(v) for v in ours.labels])
    print(f"{len(ours)} clips from {len(shard_paths)} shards (exported to {tmp}); batch size "
          f"{args.batch_size}, {args.batches} batches a run, median of {args.repeats} interleaved runs, ours at "
          f"{args.image_size} px")  # fmt: skip
    for workers in args.workers:
        runs: dict[str, list[float]] = {"original": [], "ours": [], "ours_f32": []}
        batches_per_second(ours, args, workers)  # warm-up: file cache, worker start-up code paths
        for _ in range(args.repeats):
            runs["original"].append(batches_per_second(original, args, workers))
            runs["ours"].append(batches_per_second(ours, args, workers))
            runs["ours_f32"].append(batches_per_second(ours_f32, args, workers))
        med = {k: statistics.median(v) for k, v in runs.items()}
        print(f"workers {workers}: original {med['original']:.2f} batches/s, ours {med['ours']:.2f} batches/s "
              f"(uint8), ratio {med['ours'] / med['original']:.2f}x; ours float32 items {med['ours_f32']:.2f} "
              f"batches/s, ratio {med['ours_f32'] / med['original']:.2f}x")  # fmt: skip
        print("  runs:", {k: [round(v, 2) for v in vs] for k, vs in runs.items()})
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(batches_per_second, ours, args, 0)
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()

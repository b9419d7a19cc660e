"""Does DAVS learn on the demo data? Stage 2 at a reduced size on the CPU, measured on held-out clips.

    python bench/learns_on_demo.py [--pretrain-steps 60] [--steps 150] [--every 50] [--work /tmp/davs_learns]

Needs the demo shards (`make demo` or `snakemake --cores all preprocess`). Prints, at step 0 of stage 2 and every
``--every`` steps: the held-out (val split) mouth-region L1 of audio-driven generation, its drop from step 0, and
the correlation between the generated and the real mouth opening, with the time spent in stage 2: wall minutes
and CPU minutes (user + system of this process and its finished DataLoader workers; on a shared machine the CPU
time is the steadier figure).

Mouth opening of a frame: the mean darkness (1 − grey level) of the central half of the mouth box, the region
the demo's speech-driven mouth opens in. r is Pearson's correlation over all (clip, step) pairs of the val clips
after removing each clip's mean (so only the mouth's motion within a clip counts, not colour differences between
clips).
"""

from __future__ import annotations

import argparse
import glob
import resource
import time
from dataclasses import replace

import numpy as np
import torch
from torch.utils.data import DataLoader

from davs_model.networks.common import mouth_box
from davs_model.training.checkpoint import load_model
from davs_model.training.config import ModelConfig, StageConfig, TrainConfig
from davs_model.training.loop import evaluate_mouth_l1, make_dataset, train_stage
from davs_model.training.report import generate_sequences


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its reaped children (the DataLoader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def mouth_opening(frames: torch.Tensor, image_size: int) -> np.ndarray:
    """frames (..., 3, S, S) in [0, 1] → darkness of the central half of the mouth box, (...)."""
    top, bottom, left, right = mouth_box(image_size)
    h, w = bottom - top, right - left
    region = frames[..., top + h // 4 : bottom - h // 4, left + w // 4 : right - w // 4]
    return (1.0 - region.float().mean(dim=(-3, -2, -1))).numpy()


def opening_correlation(model, val_shards) -> float:
    ds = make_dataset(val_shards, "val", model.config, train=False, seed=0)
    gen, real = [], []
    model.eval()
    with torch.no_grad():
        for batch in DataLoader(ds, batch_size=8):
            r, f, _ = generate_sequences(model, batch, torch.device("cpu"), wid_scale=1.0, video=False)
            g_open, r_open = mouth_opening(f, model.config.image_size), mouth_opening(r, model.config.image_size)
            gen.append(g_open - g_open.mean(axis=1, keepdims=True))
            real.append(r_open - r_open.mean(axis=1, keepdims=True))
    return float(np.corrcoef(np.concatenate(gen).ravel(), np.concatenate(real).ravel())[0, 1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrain-steps", type=int, default=60)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--width", type=float, default=0.125)
    p.add_argument("--work", default="/tmp/davs_learns")
    p.add_argument("--shards", default="results/shards", help="folder with the demo's train/ and val/ shards")
    args = p.parse_args()
    train = sorted(glob.glob(f"{args.shards}/train/*.h5"))
    val = sorted(glob.glob(f"{args.shards}/val/*.h5"))
    if not train or not val:
        raise SystemExit("no demo shards: run `make demo` (or `snakemake --cores all preprocess`) first")
    torch.set_num_threads(2)
    mc = ModelConfig(image_size=args.image_size, width=args.width, n_words=0)
    stage = StageConfig(steps=args.pretrain_steps, batch_size=args.batch_size)
    cfg = TrainConfig(device="cpu", pretrain=stage, main=replace(stage, steps=0), num_workers=2,
                      checkpoint_every=10_000, sample_every=10_000, log_every=10)  # fmt: skip
    common = dict(model_cfg=mc, train_shards=train, val_shards=val, progress=False)
    pre = f"{args.work}/pretrain.safetensors"
    t0, c0 = time.perf_counter(), cpu_seconds()
    train_stage("pretrain", cfg=cfg, work_dir=f"{args.work}/pretrain", out_model=pre, **common)
    print(f"stage 1: {args.pretrain_steps} steps in {(time.perf_counter() - t0) / 60:.1f} wall min, "
          f"{(cpu_seconds() - c0) / 60:.1f} CPU min", flush=True)  # fmt: skip
    spent, cpu, l1_0 = 0.0, 0.0, None
    for steps in range(0, args.steps + 1, args.every):
        t, c = time.perf_counter(), cpu_seconds()
        out = f"{args.work}/main_{steps:05d}.safetensors"
        run = replace(cfg, main=replace(cfg.main, steps=steps))
        train_stage("main", cfg=run, work_dir=f"{args.work}/main", out_model=out, init_from=pre, **common)
        spent, cpu = spent + time.perf_counter() - t, cpu + cpu_seconds() - c
        model = load_model(out)
        l1 = evaluate_mouth_l1(model, val, device="cpu")
        l1_0 = l1 if l1_0 is None else l1_0
        r = opening_correlation(model, val)
        drop = 100 * (1 - l1 / l1_0)
        print(f"stage 2 step {steps:5d}: held-out mouth L1 {l1:.4f} ({drop:5.1f} % below step 0), "
              f"mouth-opening r = {r:+.3f}, {spent / 60:.1f} wall min, {cpu / 60:.1f} CPU min",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

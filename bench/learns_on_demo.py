"""Does DAVS learn on the demo data? Stage 2 at a reduced size on the CPU, measured on held-out clips (issue 3).

    python bench/learns_on_demo.py [--seed 0] [--steps 600] [--every 150] [--work DIR]

Needs the demo shards (`make demo` or `snakemake --cores all preprocess`). Trains stage 1 (association) for
``--pretrain-steps``, then stage 2 from it, and prints at step 0 of stage 2 and every ``--every`` steps, on the
held-out clips (val + test splits, 24 demo clips):

- the mouth-region L1 of audio-driven generation (mean over the clips of both splits) and its drop from step 0;
- r, the correlation of the generated with the real mouth opening, with a 95 % bootstrap interval over clips, at
  the training-time wid scale 1 and the original's test-time 1.5 (DAVS_SPEC §5);
- the time spent in stage 2: wall minutes and CPU minutes (user + system of this process and its finished
  DataLoader workers; on a shared machine the CPU time is the steadier figure).

Before training it prints two linear references for r from the audio alone (``learns_metrics.oracle_r``): the mean
first MFCC coefficient of the frame's window, and a ridge regression from the whole window (not upper bounds: the
networks are not linear); after stage 1 it prints a ridge read-out of E_a^w's wid (does stage 1 hand the opening to
stage 2?). See ``bench/learns_metrics.py`` for the mouth opening and r. The step-0 r is a control: a random decoder
on E_a's wid already gives |r| up to ~0.5, of either sign, so only a positive r that holds over seeds says that G
learned the mouth.

Settings (not the original's; the model is 64 px, width 0.125, as the demo config): Adam lr 1e-3 (2e-4) and
mouth-L1 weight λ_B = 64 (8). With the original's λ_B, a few hundred steps fit the face but not the mouth (r near
0, at lr 2e-4 or 1e-3): the mouth box is 1/8 of the image and its motion a few pixels at 64 px, so G first
spends its steps on the rest of the face. ``--threads 1``: on a shared 2-core machine, 2 threads took 5× the CPU
time for stage 1. Results and the command behind them: BENCHMARKS.md, "It learns on the demo data (issue 3)".
"""

from __future__ import annotations

import argparse
import glob
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from learns_metrics import audio_readout_r, bootstrap_r, generated_openings, oracle_r, sequence_dataset

from davs_model.losses import LossWeights
from davs_model.training.checkpoint import load_model
from davs_model.training.config import ModelConfig, StageConfig, TrainConfig
from davs_model.training.heldout import evaluate_mouth_l1
from davs_model.training.loop import train_stage

HELD_OUT = ("val", "test")


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its reaped children (the DataLoader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def held_out_l1(model, held: dict[str, list]) -> float:
    """Mouth-region L1 over the held-out clips of every split (weighted by their number of clips)."""
    total = count = 0
    for split, shards in held.items():
        clips = len(sequence_dataset(shards, split, model.config.image_size, 0))
        total += clips * evaluate_mouth_l1(model, shards, device="cpu", split=split)
        count += clips
    return total / count


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="training seed (init, data order, D's labels)")
    p.add_argument("--pretrain-steps", type=int, default=60)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--every", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam lr of both stages (the original's: 2e-4)")
    p.add_argument("--l1-mouth", type=float, default=64.0, help="λ_B of the mouth L1 (the original's: 8)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--width", type=float, default=0.125)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest on a shared machine)")
    p.add_argument("--work", default=None, help="an empty or new folder (default: a new temporary one)")
    p.add_argument("--shards", default="results/shards", help="folder with the demo's train/, val/, test/ shards")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    train = sorted(glob.glob(f"{args.shards}/train/*.h5"))
    held = {s: sorted(glob.glob(f"{args.shards}/{s}/*.h5")) for s in HELD_OUT}
    held = {s: v for s, v in held.items() if v}
    if not train or not held:
        raise SystemExit(
            f"no demo shards in {args.shards}: run `make demo` (or `snakemake --cores all preprocess`)"
        )
    work = Path(args.work or tempfile.mkdtemp(prefix="davs_learns_"))
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"{work} is not empty (a run there would resume): give a new or empty --work folder")
    torch.set_num_threads(args.threads)
    c1, fit = oracle_r(held, train, args.image_size)
    print(f"held-out clips: {', '.join(held)}; audio-only linear references for r: window mean c1 {c1:.3f}, "
          f"ridge on the window {fit:.3f}", flush=True)  # fmt: skip
    mc = ModelConfig(image_size=args.image_size, width=args.width, n_words=0)
    stage = StageConfig(steps=args.pretrain_steps, batch_size=args.batch_size, lr=args.lr)
    weights = replace(LossWeights(), l1_mouth=args.l1_mouth)
    cfg = TrainConfig(device="cpu", seed=args.seed, pretrain=stage, main=replace(stage, steps=0),
                      loss_weights=weights, num_workers=2, checkpoint_every=10_000, sample_every=10_000,
                      log_every=10)  # fmt: skip
    common = dict(model_cfg=mc, train_shards=train, val_shards=held.get("val", []), progress=False)
    pre = work / "pretrain.safetensors"
    t0, c0 = time.perf_counter(), cpu_seconds()
    train_stage("pretrain", cfg=cfg, work_dir=work / "pretrain", out_model=pre, **common)
    wall, cpu = (time.perf_counter() - t0) / 60, (cpu_seconds() - c0) / 60
    readout = audio_readout_r(load_model(pre), held, train)
    print(f"stage 1: {args.pretrain_steps} steps in {wall:.1f} wall min, {cpu:.1f} CPU min; "
          f"ridge read-out of E_a's wid: r = {readout:.3f}", flush=True)  # fmt: skip
    spent, cpu, l1_0 = 0.0, 0.0, None
    for steps in range(0, args.steps + 1, args.every):
        t, c = time.perf_counter(), cpu_seconds()
        out = work / f"main_{steps:05d}.safetensors"
        run = replace(cfg, main=replace(cfg.main, steps=steps))
        train_stage("main", cfg=run, work_dir=work / "main", out_model=out, init_from=str(pre), **common)
        spent, cpu = spent + time.perf_counter() - t, cpu + cpu_seconds() - c
        model = load_model(out)
        l1 = held_out_l1(model, held)
        l1_0 = l1 if l1_0 is None else l1_0
        rs = [bootstrap_r(generated_openings(model, held, wid_scale=s)) for s in (1.0, 1.5)]
        r_txt = ", ".join(
            f"r@{s} = {r:+.3f} [{lo:+.3f}, {hi:+.3f}]" for s, (r, lo, hi) in zip((1, 1.5), rs, strict=True)
        )
        print(f"stage 2 step {steps:5d}: mouth L1 {l1:.4f} ({100 * (1 - l1 / l1_0):5.1f} % below step 0), "
              f"{r_txt}; {spent / 60:.1f} wall min, {cpu / 60:.1f} CPU min", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

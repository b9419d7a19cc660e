"""``python -m davs_model.training``: one training stage from a JSON config (the Snakemake script's entry point).

Single process::

    python -m davs_model.training --stage main --config run.json --train-shards results/shards/train/*.h5 \\
        --val-shards results/shards/val/*.h5 --work-dir results/train/main/work \\
        --out-model results/train/main/model.safetensors --init-from results/train/pretrain/model.safetensors

Several GPUs (or CPU processes) on one node: ``torchrun --nproc-per-node 2 -m davs_model.training ...`` (same
arguments; ``train.main.batch_size`` stays the global batch).

``--config`` is a JSON file ``{"model": {...}, "train": {...}}``: the ``model:`` and resolved ``train:`` sections
of config.yaml (unknown keys are errors). Exit status: 0 when ``--out-model`` is written, 143 when stopped by
SIGTERM/SIGINT after saving the state (run the same command again to resume), 1 on errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m davs_model.training", description=__doc__.split("\n")[0])
    p.add_argument("--stage", required=True, choices=("pretrain", "main"))
    p.add_argument("--config", required=True, type=Path, help='JSON file {"model": {...}, "train": {...}}')
    p.add_argument("--train-shards", required=True, nargs="+", type=Path)
    p.add_argument("--val-shards", nargs="*", default=[], type=Path)
    p.add_argument("--work-dir", required=True, type=Path, help="resumable state, stats, TensorBoard, samples")
    p.add_argument("--out-model", required=True, type=Path, help="the finished model (written at the end)")
    p.add_argument("--init-from", type=Path, default=None, help="model file to initialise from (stage 1 → 2)")
    p.add_argument("--log", type=Path, default=None, help="also write logging (and tqdm) to this file")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from davs_model.training.config import ModelConfig, TrainConfig
    from davs_model.training.loop import train_stage

    data = json.loads(args.config.read_text())
    unknown = set(data) - {"model", "train"}
    if unknown:
        raise SystemExit(f"{args.config}: unknown top-level key(s) {sorted(unknown)}; expected model, train")
    kwargs = dict(
        model_cfg=ModelConfig.from_dict(data.get("model")),
        cfg=TrainConfig.from_dict(data.get("train")),
        train_shards=args.train_shards,
        val_shards=args.val_shards,
        work_dir=args.work_dir,
        out_model=args.out_model,
        init_from=str(args.init_from) if args.init_from else None,
        progress=not args.no_progress,
    )
    if args.log is not None:
        from davs_model.utils.logging import log_to

        with log_to(args.log):
            train_stage(args.stage, **kwargs)
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        train_stage(args.stage, **kwargs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

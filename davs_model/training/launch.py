"""Run one training stage in this process, or over several GPUs with torchrun (DDP) when the job has them."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def run_stage(
    *,
    stage: str,
    model: dict,
    train: dict,
    train_shards: list[str],
    val_shards: list[str],
    work_dir: str,
    out_model: str,
    init_from: str | None = None,
    threads: int = 1,
    gpus: int = 0,
    progress: bool = True,
) -> None:
    """Train ``stage`` ("pretrain" or "main") from the validated ``model:`` and ``train:`` sections.

    With more than one GPU (``gpus`` from the job's resources, CUDA present) the stage runs under
    ``torchrun --standalone --nproc-per-node gpus``; the global batch stays ``train.<stage>.batch_size``.
    """
    from davs_model.training.config import ModelConfig, TrainConfig
    from davs_model.training.loop import train_stage

    model_cfg, cfg = ModelConfig.from_dict(model), TrainConfig.from_dict(train)
    torch.set_num_threads(max(1, threads))
    n_gpus = min(gpus, torch.cuda.device_count()) if cfg.device != "cpu" else 0
    if n_gpus > 1:
        _torchrun(stage, model, train, train_shards, val_shards, work_dir, out_model, init_from, n_gpus, threads)
        return
    train_stage(
        stage,
        model_cfg=model_cfg,
        cfg=cfg,
        train_shards=train_shards,
        val_shards=val_shards,
        work_dir=work_dir,
        out_model=out_model,
        init_from=init_from,
        progress=progress,
    )


def _torchrun(stage, model, train, train_shards, val_shards, work_dir, out_model, init_from, n_gpus, threads):
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    config_path = work / f"launch_{stage}.json"
    config_path.write_text(json.dumps({"model": model, "train": train}, indent=1))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={n_gpus}",
        "-m",
        "davs_model.training",
        "--stage",
        stage,
        "--config",
        str(config_path),
        "--train-shards",
        *map(str, train_shards),
        "--work-dir",
        str(work_dir),
        "--out-model",
        str(out_model),
        "--no-progress",
    ]
    if val_shards:
        cmd += ["--val-shards", *map(str, val_shards)]
    if init_from:
        cmd += ["--init-from", str(init_from)]
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, threads // n_gpus)))
    log.info("DDP over %d GPUs: %s", n_gpus, " ".join(cmd))
    result = subprocess.run(cmd, env=env)
    if result.returncode != 0:
        raise SystemExit(result.returncode)

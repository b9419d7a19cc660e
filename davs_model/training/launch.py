"""Run one training stage in this process, or over several GPUs with torchrun (DDP) when the job has them."""

from __future__ import annotations

import json
import logging
import os
import socket
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
    ``torchrun --standalone --nproc-per-node gpus``; with ``train.nodes`` > 1 (a Slurm job over that many nodes)
    under ``srun`` + ``torchrun`` on every node (:func:`multinode_command`). The global batch stays
    ``train.<stage>.batch_size``.
    """
    from davs_model.training.config import ModelConfig, TrainConfig
    from davs_model.training.loop import train_stage

    model_cfg, cfg = ModelConfig.from_dict(model), TrainConfig.from_dict(train)
    torch.set_num_threads(max(1, threads))
    n_gpus = min(gpus, torch.cuda.device_count()) if cfg.device != "cpu" else 0
    args = (stage, model, train, train_shards, val_shards, work_dir, out_model, init_from)
    if cfg.nodes > 1 and n_gpus >= 1:
        if "SLURM_JOB_ID" not in os.environ:
            raise SystemExit(
                f"train.nodes = {cfg.nodes} needs a Slurm job over {cfg.nodes} nodes: run with --profile slurm "
                "(docs/CLUSTER.md), or set train.nodes: 1"
            )
        _run(multinode_command(*args, nodes=cfg.nodes, gpus_per_node=n_gpus, host=socket.gethostname()),
             threads, n_gpus)  # fmt: skip
        return
    if n_gpus > 1:
        _run(_torchrun_args(*args, ["--standalone", f"--nproc-per-node={n_gpus}"]), threads, n_gpus)
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


RDZV_PORT = 29500


def multinode_command(stage, model, train, train_shards, val_shards, work_dir, out_model, init_from, *, nodes: int,
                      gpus_per_node: int, host: str) -> list[str]:  # fmt: skip
    """``srun`` one ``torchrun`` per node, ``gpus_per_node`` processes each, meeting at ``host`` (this job's
    first node, where the batch script runs) through the c10d rendezvous, with the Slurm job id as its id.
    ``--overlap``: the rule itself runs inside a one-task job step (the Slurm executor's), and this step must
    share that node's resources with it."""
    rdzv = [
        f"--nnodes={nodes}", f"--nproc-per-node={gpus_per_node}", "--rdzv-backend=c10d",
        f"--rdzv-endpoint={host}:{RDZV_PORT}", f"--rdzv-id={os.environ.get('SLURM_JOB_ID', 'davs')}",
    ]  # fmt: skip
    srun = [
        "srun",
        "--overlap",
        f"--nodes={nodes}",
        f"--ntasks={nodes}",
        "--ntasks-per-node=1",
        "--kill-on-bad-exit=1",
    ]
    torchrun = _torchrun_args(stage, model, train, train_shards, val_shards, work_dir, out_model, init_from, rdzv)
    return [*srun, *torchrun]


def _torchrun_args(stage, model, train, train_shards, val_shards, work_dir, out_model, init_from, launch):
    """``python -m torch.distributed.run LAUNCH -m davs_model.training ...`` with the stage's config file."""
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    config_path = work / f"launch_{stage}.json"
    config_path.write_text(json.dumps({"model": model, "train": train}, indent=1))
    cmd = [sys.executable, "-m", "torch.distributed.run", *launch, "-m", "davs_model.training", "--stage", stage,
           "--config", str(config_path), "--train-shards", *map(str, train_shards), "--work-dir", str(work_dir),
           "--out-model", str(out_model), "--no-progress"]  # fmt: skip
    if val_shards:
        cmd += ["--val-shards", *map(str, val_shards)]
    if init_from:
        cmd += ["--init-from", str(init_from)]
    return cmd


def _run(cmd: list[str], threads: int, n_gpus: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, threads // n_gpus)))
    log.info("DDP over %d GPUs per node: %s", n_gpus, " ".join(cmd))
    result = subprocess.run(cmd, env=env)
    if result.returncode != 0:
        raise SystemExit(result.returncode)

"""Data-parallel training follows the single-process run at the same global batch.

1. Exactness of the distributed maths (``float64``, 2 gloo processes via ``torch.multiprocessing``): synchronised
   BatchNorm, gathered contrastive inputs, averaged gradients, rank-sliced dropout masks and the rank split of the
   deterministic batch order give the single-process losses and weights to ~1e-12, over several Adam steps of
   both stages. (In float32 the comparison is meaningless beyond the first step: the tiny test networks' gradients
   change by a few per cent between a 1- and a 2-thread single-process run, and Adam amplifies that.)
2. The real entry point under ``torchrun --nproc-per-node 2`` (float32): runs, writes files from rank 0 only, and
   its first-step losses equal the single-process ones to float tolerance; the curve difference is printed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch.utils.data import default_collate

from davs_model.losses import LossWeights
from davs_model.model import DAVS
from davs_model.training import distributed as ddp
from davs_model.training.config import ModelConfig, TrainConfig
from davs_model.training.loop import build_optimizers, make_dataset
from davs_model.training.runtime import bind_generator
from davs_model.training.step import pretrain_step, train_iteration
from tests.unit.training_data import write_training_shards

MODEL = ModelConfig(image_size=64, width=1 / 16, n_words=6)
GLOBAL_BATCH = 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_training_shards(tmp_path_factory.mktemp("ddp_shards"), n_train=8, n_val=2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


STEPS = {"pretrain": 3, "main": 2}  # pretrain crosses an epoch boundary (2 global batches per epoch)


def _train(rank: int, world: int, stage: str, train_shards, steps: int) -> dict:
    device = torch.device("cpu")
    ds = make_dataset(train_shards, "train", MODEL, train=True, seed=0)
    torch.manual_seed(0)
    model = DAVS(MODEL).double()
    gen = torch.Generator().manual_seed(0)
    bind_generator(model, gen)
    model = ddp.convert_batchnorm(model, device)
    opt_g, opt_d = build_optimizers(model, stage, TrainConfig(), device)
    step = pretrain_step if stage == "pretrain" else train_iteration
    history, grad_max, epoch = [], {}, 0
    while len(history) < steps:
        ds.set_epoch(epoch)
        for indices in ddp.EpochBatchSampler(
            len(ds), GLOBAL_BATCH, seed=0, epoch=epoch, rank=rank, world_size=world
        ):
            losses = step(model, default_collate([ds[i] for i in indices]), opt_g, opt_d, LossWeights(), gen)
            history.append(ddp.all_reduce_mean(torch.tensor(list(losses.values()), dtype=torch.float64)))
            if not grad_max:  # after the first update: which parameters have a real gradient
                grad_max = {
                    n: p.grad.abs().max().item() for n, p in model.named_parameters() if p.grad is not None
                }
            if len(history) == steps:
                break
        epoch += 1
    return {
        "keys": list(losses),
        "losses": torch.stack(history),
        "state": model.state_dict(),
        "grad_max": grad_max,
    }


def run_stages(rank: int, world: int, train_shards, out: str, port: int) -> None:
    """Both stages in float64 on this rank's share of the global batches; rank 0 saves the rank-averaged losses,
    the final states and the first-step gradient sizes."""
    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = {stage: _train(rank, world, stage, train_shards, steps) for stage, steps in STEPS.items()}
        if rank == 0:
            torch.save(results, out)
    finally:
        if world > 1:
            dist.destroy_process_group()


def test_two_process_float64_equals_single_process(shards, tmp_path):
    train, _ = shards
    single, double = str(tmp_path / "single.pt"), str(tmp_path / "ddp.pt")
    run_stages(0, 1, train, single, 0)
    mp.spawn(run_stages, args=(2, train, double, free_port()), nprocs=2, join=True)
    for stage in STEPS:
        a, b = torch.load(single, weights_only=True)[stage], torch.load(double, weights_only=True)[stage]
        assert a["keys"] == b["keys"]
        loss_diff = (a["losses"] - b["losses"]).abs().max().item()
        loss_rel = ((a["losses"] - b["losses"]).abs() / a["losses"].abs().clamp(min=1)).max().item()
        # Biases of convs that feed a BatchNorm have a zero true gradient (BN removes any shift); their computed
        # gradient is rounding noise (|g| < 1e-9 here, > 1e-5 for every other parameter), which Adam normalises
        # into lr-sized steps, and the following BN's running mean follows them. Both are compared apart.
        noise = {n for n, g in a["grad_max"].items() if g < 1e-8}
        diff = {k: (a["state"][k].double() - b["state"][k].double()).abs().max().item() for k in a["state"]}
        exact = max(d for k, d in diff.items() if k not in noise and not k.endswith("running_mean"))
        amplified = max(d for k, d in diff.items() if k in noise or k.endswith("running_mean"))
        print(f"\n{stage}: float64, 2 processes vs 1, {STEPS[stage]} steps: max |Δloss| = {loss_diff:.3g} "
              f"(relative {loss_rel:.3g}); max |Δ| of weights and running variances = {exact:.3g}; of the "
              f"{len(noise)} zero-gradient biases and the BN running means = {amplified:.3g}")  # fmt: skip
        assert loss_rel < 1e-10
        assert exact < 1e-9
        assert amplified < 1e-4  # a few Adam steps of lr 2e-4 on noise


def test_batch_sampler_ranks_partition_the_global_batches():
    n, batch = 11, 4
    single = list(ddp.EpochBatchSampler(n, batch, seed=3, epoch=1))
    ranks = [list(ddp.EpochBatchSampler(n, batch, seed=3, epoch=1, rank=r, world_size=2)) for r in range(2)]
    assert len(single) == n // batch and all(len(b) == batch for b in single)
    assert [r0 + r1 for r0, r1 in zip(*ranks, strict=True)] == single
    assert list(ddp.EpochBatchSampler(n, batch, seed=3, epoch=1, start=1)) == single[1:]
    assert single != list(ddp.EpochBatchSampler(n, batch, seed=3, epoch=2))
    with pytest.raises(ValueError, match="divisible"):
        ddp.EpochBatchSampler(n, 3, seed=0, epoch=0, world_size=2)


def _cli(work, out, config, train, extra=()):
    return ["-m", "davs_model.training", "--stage", "main", "--config", str(config), "--train-shards",
            *map(str, train), "--work-dir", str(work), "--out-model", str(out), "--no-progress",
            *extra]  # fmt: skip


@pytest.mark.slow
def test_torchrun_two_processes_follow_the_single_process_curve(shards, tmp_path):
    train, _ = shards
    config = tmp_path / "run.json"
    train_cfg = {"main": {"steps": 2, "batch_size": GLOBAL_BATCH}, "num_workers": 0, "log_every": 1,
                 "checkpoint_every": 2, "sample_every": 100}  # fmt: skip
    config.write_text(json.dumps({"model": MODEL.to_dict(), "train": train_cfg}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {}
    for name, launcher in [
        ("single", [sys.executable]),
        ("ddp", [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]),
    ]:
        work, out = tmp_path / name, tmp_path / f"{name}.safetensors"
        proc = subprocess.run(
            [*launcher, *_cli(work, out, config, train)], env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = [json.loads(line) for line in (work / "stats.jsonl").read_text().splitlines()]
        assert out.is_file() and (work / "state.pt").is_file()
        assert len(list((work / "tb").iterdir())) == 1  # one events file: rank 0 only
    single, double = runs["single"], runs["ddp"]
    assert [r["step"] for r in single] == [r["step"] for r in double] == [1, 2]
    keys = [k for k in single[0] if "/" in k]
    diffs = [
        {k: abs(s[k] - d[k]) / max(abs(s[k]), 1e-6) for k in keys} for s, d in zip(single, double, strict=True)
    ]
    abs_max = max(abs(s[k] - d[k]) for s, d in zip(single, double, strict=True) for k in keys)
    print(f"\ntorchrun float32, per step max relative |Δloss|: {[f'{max(d.values()):.2g}' for d in diffs]}, "
          f"max |Δloss| = {abs_max:.3g}")  # fmt: skip
    assert max(diffs[0].values()) < 1e-3  # same data, same init: equal up to float reduction order
    for k in ("D/total", "G/total"):
        assert all(d[k] < 0.05 for d in diffs), k
    weights_single, weights_ddp = (
        load_file(tmp_path / "single.safetensors"),
        load_file(tmp_path / "ddp.safetensors"),
    )
    assert weights_single.keys() == weights_ddp.keys()

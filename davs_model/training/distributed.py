"""Multi-process data-parallel training (``torchrun``), following the single-process run at the same global batch.

Launch: ``torchrun --nproc-per-node N -m davs_model.training ...``; :func:`init_from_env` reads ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` and joins the process group (NCCL on CUDA, gloo on CPU). Without those variables
(or with ``WORLD_SIZE=1``) everything here is a no-op and the run is the single-process one.

Design (chosen over ``DistributedDataParallel``): gradients are averaged by hand, one coalesced all-reduce per
optimiser step (:func:`average_gradients`, called by the step functions between ``backward`` and ``step``). DDP's
hooks assume one forward/backward per iteration and one optimiser; a DAVS iteration shares one generator forward
between the D step and the G step, runs the discriminators in both, and leaves the unused original layers without
gradients, which DDP only tolerates with ``find_unused_parameters``. The manual average is exact and simple; it
gives up DDP's overlap of communication with the backward pass.

Equivalence with the single-process run at global batch B (per-rank batch b = B / world_size):

- data: :class:`EpochBatchSampler` cuts the same deterministic per-epoch order into global batches of B and gives
  rank r the r-th slice of b clips of each, so the ranks together see exactly the single-process batch;
- BatchNorm: per-rank statistics would differ from the batch statistics of B clips, so with world_size > 1
  every BatchNorm becomes synchronised (:func:`convert_batchnorm`): ``nn.SyncBatchNorm`` on CUDA;
  :class:`CpuSyncBatchNorm` on CPU, where ``nn.SyncBatchNorm`` refuses to run;
- losses: every term except the contrastive one is a mean over clips, and the mean over ranks of per-rank means is
  the global mean. The contrastive loss compares every pair of the batch, so its inputs are all-gathered
  (:func:`gather_batch`) and each rank computes the global term;
- randomness: the step generator has the same state on every rank; dropout draws the global batch's mask and takes
  the rank's rows (``step.GeneratorDropout``); D's soft labels are one draw per call on every rank.

What remains are float reduction-order differences (see tests/unit/test_training_ddp.py for the measured size).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Sampler

__all__ = [
    "CpuSyncBatchNorm",
    "DistContext",
    "EpochBatchSampler",
    "average_gradients",
    "convert_batchnorm",
    "gather_batch",
    "init_from_env",
    "is_distributed",
]


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files (state, stats, TensorBoard, PNGs, the model)."""
        return self.rank == 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


def init_from_env(device: torch.device) -> DistContext:
    """Join the process group described by torchrun's environment (no-op when ``WORLD_SIZE`` is unset or 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30), **kwargs)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------------- data order
def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The deterministic shuffled order of ``n`` clips for one epoch (the same on every rank and after resume)."""
    mixed = int(np.random.SeedSequence([seed, epoch, 0x5EED]).generate_state(1, np.uint64)[0] >> 1)
    return torch.randperm(n, generator=torch.Generator().manual_seed(mixed))


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of one epoch (drop_last): global batch g is ``order[g·B : (g+1)·B]``; rank r gets its r-th slice
    of ``B / world_size`` clips. ``start`` skips the first global batches (resuming inside an epoch)."""

    def __init__(
        self, n: int, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1, start: int = 0
    ) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by the {world_size} processes")
        if n < batch_size:
            raise ValueError(f"{n} training clips are fewer than one batch of {batch_size}")
        self.n, self.batch_size, self.seed, self.epoch, self.start = n, batch_size, seed, epoch, start
        self.rank, self.per_rank = rank, batch_size // world_size

    def __len__(self) -> int:
        return max(0, self.n // self.batch_size - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        order = epoch_order(self.n, self.seed, self.epoch).tolist()
        for g in range(self.start, self.n // self.batch_size):
            first = g * self.batch_size + self.rank * self.per_rank
            yield order[first : first + self.per_rank]


# ---------------------------------------------------------------------------------------------------- gradients
def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Average ``.grad`` over the ranks in one coalesced all-reduce (parameters without a gradient are skipped:
    the graph is the same on every rank, so they are the same ones everywhere)."""
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def all_reduce_mean(values: Tensor) -> Tensor:
    """Mean over ranks (for logging the losses); identity in a single process."""
    if not is_distributed():
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / dist.get_world_size()


class _GatherBatch(torch.autograd.Function):
    """All-gather along dim 0 in rank order; backward sums the gradient over ranks and keeps this rank's rows."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = (dist.get_rank() * len(x), len(x))
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start, n = ctx.rows
        return grad[start : start + n]


def gather_batch(x: Tensor) -> Tensor:
    """The global batch of a per-rank tensor (B_global, ...), differentiable w.r.t. this rank's rows.

    A loss that every rank computes identically on gathered inputs gets, after :func:`average_gradients`, exactly
    the single-process gradient (each rank's copy sends its share back through the all-reduce in ``backward``)."""
    return _GatherBatch.apply(x) if is_distributed() else x


# ---------------------------------------------------------------------------------------------------- BatchNorm
class CpuSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch (all ranks), for gloo/CPU runs.

    Each rank computes its count, mean and sum of squared deviations; one differentiable all-gather combines them
    (Chan's parallel formula, as ``nn.SyncBatchNorm``), so gradients flow to every rank's inputs. The running
    statistics are updated with the global mean and unbiased variance, as one process would. Same parameters and
    buffers as ``nn.BatchNorm2d`` (state dicts are interchangeable)."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims, c = (0, 2, 3), x.shape[1]
        n_local = x.numel() // c
        mean_local = x.mean(dims)
        m2_local = (x - mean_local[None, :, None, None]).pow(2).sum(dims)
        count = torch.full((1,), float(n_local), dtype=x.dtype, device=x.device)
        stats = gather_batch(torch.cat([count, mean_local, m2_local])[None])  # (world, 1 + 2C)
        counts, means, m2s = stats[:, :1], stats[:, 1 : 1 + c], stats[:, 1 + c :]
        total = counts.sum()
        mean = (counts * means).sum(0) / total
        var = (m2s.sum(0) + (counts * (means - mean).pow(2)).sum(0)) / total  # biased, as BN normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                unbiased = var.detach() * total / (total - 1).clamp(min=1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def _to_cpu_sync(module: nn.Module) -> nn.Module:
    if type(module) is nn.BatchNorm2d:
        ref = next(iter([*module.parameters(), *module.buffers()]), None)
        kw = {"device": ref.device, "dtype": ref.dtype} if ref is not None and ref.is_floating_point() else {}
        new = CpuSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats, **kw
        )
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, _to_cpu_sync(child))
    return module


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Synchronised BatchNorm for world_size > 1 (``nn.SyncBatchNorm`` on CUDA, :class:`CpuSyncBatchNorm` on CPU);
    unchanged in a single process. Parameter and buffer names are kept, so checkpoints do not change."""
    if not is_distributed():
        return module
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _to_cpu_sync(module)


def broadcast_state(module: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (a safety net: every rank initialises from the same seed)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is True on any rank (e.g. a SIGTERM seen by one process)."""
    if not is_distributed():
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())

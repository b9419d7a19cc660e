"""Run-time controls of training: where dropout draws its randomness, which networks are frozen (no gradients, no
BatchNorm running-statistics updates) while the other player learns, and stopping cleanly on a signal."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from davs_model.training.distributed import rank_and_world

__all__ = ["GeneratorDropout", "StopFlag", "bind_generator", "frozen", "worker_ignores_signals"]

log = logging.getLogger(__name__)


class GeneratorDropout(nn.Dropout):
    """``nn.Dropout`` drawing its mask from a bound ``torch.Generator`` (:func:`bind_generator`).

    In a data-parallel run it draws the mask of the *global* batch and keeps this rank's rows, so the ranks
    together apply exactly the single-process mask (inputs are batch-major: (B·…, ...))."""

    generator: torch.Generator | None = None

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0 or self.generator is None:
            return super().forward(x)
        rank, world = rank_and_world()
        n = x.shape[0]
        u = torch.rand((n * world, *x.shape[1:]), generator=self.generator, device=x.device)
        u = u[rank * n : (rank + 1) * n]
        return x * (u >= self.p).to(x.dtype) / (1.0 - self.p)


def bind_generator(model: nn.Module, gen: torch.Generator) -> None:
    """Swap every ``nn.Dropout`` for :class:`GeneratorDropout` (once) and bind ``gen`` to all of them."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                new = GeneratorDropout(child.p, child.inplace)
                new.train(child.training)
                setattr(parent, name, new)
    for m in model.modules():
        if isinstance(m, GeneratorDropout):
            m.generator = gen


@contextmanager
def frozen(modules: Sequence[nn.Module]) -> Iterator[None]:
    """No parameter gradients and no running-statistics updates in ``modules`` (batch statistics still used)."""
    params = [p for m in modules for p in m.parameters()]
    bns = [b for m in modules for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
    saved = [p.requires_grad for p in params], [b.track_running_stats for b in bns]
    for p in params:
        p.requires_grad_(False)
    for b in bns:
        b.track_running_stats = False
    try:
        yield
    finally:
        for p, r in zip(params, saved[0], strict=True):
            p.requires_grad_(r)
        for b, t in zip(bns, saved[1], strict=True):
            b.track_running_stats = t


class StopFlag:
    """Sets ``requested`` on SIGTERM/SIGINT while installed (main thread only); restores the old handlers."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested, self._old = False, {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        log.warning("received signal %d: saving the state after this step", signum)
        self.requested = True

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


def worker_ignores_signals(_: int) -> None:
    """DataLoader ``worker_init_fn``: workers leave SIGTERM/SIGINT to the main process (which stops cleanly)."""
    for s in StopFlag.SIGNALS:
        signal.signal(s, signal.SIG_IGN)

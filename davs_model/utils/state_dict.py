"""Strict comparison of a model's state_dict with one read from a file, for loaders that name every problem."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

# PyTorch < 0.4 saved no BatchNorm ``num_batches_tracked`` counter; it only matters for momentum=None BatchNorm
LEGACY_OPTIONAL_SUFFIX = "num_batches_tracked"


@dataclass(frozen=True)
class KeyMatch:
    """``missing``: ours, absent from the file; ``unexpected``: the file's, unknown to us; ``misshapen``: in both
    with different shapes (each in its own dict's order); ``complete``: the file's dict with our counters added
    where it has none."""

    missing: list[str]
    unexpected: list[str]
    misshapen: list[str]
    complete: dict[str, torch.Tensor]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.misshapen)


def match_keys(ours: Mapping[str, torch.Tensor], theirs: Mapping[str, torch.Tensor]) -> KeyMatch:
    """Compare the keys and shapes of ``theirs`` (read from a file) with ``ours``; counters may be missing."""
    missing = [k for k in ours if k not in theirs and not k.endswith(LEGACY_OPTIONAL_SUFFIX)]
    unexpected = [k for k in theirs if k not in ours]
    misshapen = [k for k in ours if k in theirs and tuple(theirs[k].shape) != tuple(ours[k].shape)]
    complete = dict(theirs)
    for k in ours:
        if k.endswith(LEGACY_OPTIONAL_SUFFIX) and k not in theirs:
            complete[k] = ours[k]
    return KeyMatch(missing, unexpected, misshapen, complete)

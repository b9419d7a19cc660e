"""The two files training writes: the resumable state and the finished model.

- ``work_dir/state.pt`` (:func:`save_state` / :func:`load_state`): everything needed to continue a run bit for bit
  — all weights and BatchNorm buffers (generator and discriminators), both Adam states, the position (stage,
  step, epoch, batch within the epoch), every RNG state and the resolved config. It holds only tensors and plain
  Python values, so it loads with ``torch.load(weights_only=True)`` (no pickled objects); written atomically
  (temporary file, fsync, ``os.replace``), so a kill at any moment leaves either the old or the new file.
- the finished model (:func:`save_model` / :func:`load_model`): a safetensors file with the inference networks
  (``DAVS.generator_state_dict()``); its header metadata carries the ``ModelConfig``, the format version, the
  stage and the step count, so evaluation and rendering rebuild the model from this file alone.

Bump ``CHECKPOINT_FORMAT_VERSION`` (``davs_model/__init__.py``) when either layout changes.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from davs_model import CHECKPOINT_FORMAT_VERSION, __version__
from davs_model.model import DAVS, GENERATOR_MODULES
from davs_model.training.config import ModelConfig

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "STATE_FILE",
    "CheckpointError",
    "load_model",
    "load_modules",
    "load_state",
    "read_model_metadata",
    "save_model",
    "save_state",
]

STATE_FILE = "state.pt"


class CheckpointError(RuntimeError):
    """A state or model file of another format version, or not one of ours."""


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a temporary file next to ``path``, fsync it, and rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ------------------------------------------------------------------------------------------------ RNG states
def capture_rng(step_generator: torch.Generator) -> dict[str, Any]:
    """Every RNG a run can touch, as tensors and plain values (``weights_only``-loadable)."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    rng: dict[str, Any] = {
        "torch_cpu": torch.get_rng_state(),
        "step_generator": step_generator.get_state(),
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
    }  # fmt: skip
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["torch_cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: dict[str, Any], step_generator: torch.Generator) -> None:
    torch.set_rng_state(rng["torch_cpu"])
    step_generator.set_state(rng["step_generator"])
    py = rng["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    npr = rng["numpy"]
    np.random.set_state(
        (npr["kind"], npr["keys"].numpy().astype(np.uint32), npr["pos"], npr["has_gauss"], npr["cached"])
    )
    if "torch_cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["torch_cuda"][: torch.cuda.device_count()])


# ------------------------------------------------------------------------------------------------ resumable state
def save_state(
    path: str | os.PathLike[str],
    *,
    model: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    stage: str,
    step: int,
    epoch: int,
    position: int,
    step_generator: torch.Generator,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the full resumable state atomically. ``position``: global batches of ``epoch`` already used;
    ``extra``: more state dicts (e.g. stage 1's identity pretraining), stored under ``"extra"``."""
    state = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "davs_model_version": __version__,
        "stage": stage,
        "step": int(step),
        "epoch": int(epoch),
        "position": int(position),
        "model": model.state_dict(),
        "opt_g": opt_g.state_dict(),
        "opt_d": opt_d.state_dict(),
        "rng": capture_rng(step_generator),
        "config": json.loads(json.dumps(config)),  # plain lists/dicts only
        "extra": extra or {},
    }
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: str | os.PathLike[str], map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """The dict written by :func:`save_state` (``weights_only=True``); CheckpointError on another version."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    version = state.get("format_version") if isinstance(state, dict) else None
    if version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: training state of format version {version}, this davs_model reads "
            f"{CHECKPOINT_FORMAT_VERSION}; delete the work directory to start the run again"
        )
    return state


# ------------------------------------------------------------------------------------------------ finished model
def save_model(
    model: DAVS,
    out_path: str | os.PathLike[str],
    *,
    step: int,
    stage: str = "main",
    trained_modules: Sequence[str] = GENERATOR_MODULES,
) -> Path:
    """Write the inference networks as safetensors, with the recipe in the header metadata (atomic)."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.generator_state_dict().items()}
    metadata = {
        "format": "davs_model",
        "format_version": str(CHECKPOINT_FORMAT_VERSION),
        "davs_model_version": __version__,
        "model_config": json.dumps(model.config.to_dict()),
        "stage": stage,
        "step": str(int(step)),
        "trained_modules": ",".join(trained_modules),
    }
    return atomic_write(out_path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_model_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The header of a model file: format_version, model_config (dict), stage, step, trained_modules (list)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != "davs_model" or meta.get("format_version") != str(CHECKPOINT_FORMAT_VERSION):
        raise CheckpointError(
            f"{path}: not a davs_model model file of format version {CHECKPOINT_FORMAT_VERSION} "
            f"(found format={meta.get('format')!r}, version={meta.get('format_version')!r})"
        )
    return {
        **meta,
        "model_config": json.loads(meta["model_config"]),
        "step": int(meta["step"]),
        "trained_modules": [m for m in meta.get("trained_modules", "").split(",") if m],
    }


def load_model(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> DAVS:
    """A :class:`DAVS` (inference networks only) rebuilt from a model file alone, in eval mode."""
    meta = read_model_metadata(path)
    model = DAVS(ModelConfig.from_dict(meta["model_config"]), with_discriminators=False)
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.to(device).eval()


def load_modules(model: DAVS, path: str | os.PathLike[str], modules: Sequence[str] | None = None) -> list[str]:
    """Initialise ``model``'s networks from a model file (e.g. stage 2 from stage 1): the modules the file says it
    trained (or ``modules``) that it holds. Returns their names; raises on a shape mismatch."""
    meta = read_model_metadata(path)
    state = load_file(str(path))
    wanted = list(modules) if modules is not None else meta["trained_modules"]
    loaded = []
    for name in wanted:
        prefix = f"{name}."
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if sub:
            getattr(model, name).load_state_dict(sub, strict=True)
            loaded.append(name)
    return loaded

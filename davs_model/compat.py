"""The authors' released checkpoint: read it safely, map it strictly onto our networks, convert it.

The released ``.pth.tar`` is a PyTorch-0.2 / Python-2 pickle: a dict whose keys ``ID_encoder``, ``Decoder``,
``mfcc_encoder``, ``lip_feature_encoder``, ``model_fusion`` (and training-only ones) hold state dicts with the
DataParallel ``module.`` prefix and without BatchNorm's ``num_batches_tracked``. We never unpickle it with the full
pickle machinery: ``torch.load(weights_only=True)`` only rebuilds tensors, containers and plain values (an
allow-list), so a file that carries code is refused. The original matched keys silently (``copy_state_dict``
skipped unknown names and left layers random); we match them strictly and name every missing or unexpected key.
"""

from __future__ import annotations

import pickle
import warnings
from collections import OrderedDict
from pathlib import Path

import torch

from davs_model.model import DAVS, DISCRIMINATOR_MODULES, GENERATOR_MODULES
from davs_model.training.config import ModelConfig
from davs_model.utils.state_dict import match_keys

# Keys of the released file that are not networks of the inference model (kept by training only).
TRAINING_ONLY_KEYS = (
    "netD",
    "netD_mul",
    "ID_lip_discriminator",
    "discriminator_audio",
    "optimizer_D",
    "optimizer_G",
)
PREFIX = "module."


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the fix."""


def read_original_checkpoint(path: str | Path) -> dict:
    """The raw dict of an original-format checkpoint, read through the allow-listed unpickler."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            # torch warns that encoding= is for full unpickling; its allow-listed unpickler decodes Python-2
            # strings itself (the original's keys are ASCII).
            warnings.filterwarnings("ignore", message="pickle_load_args only works")
            data = torch.load(path, map_location="cpu", weights_only=True, encoding="latin1")
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[-1][:300] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: refused: the file contains objects outside the allow-list of tensors, containers and plain "
            f"values (a checkpoint needs nothing else; this one may run code when unpickled). Detail: {first}"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({err})") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict of state dicts, found {type(data).__name__}")
    return data


def _strip_prefix(state: dict, name: str, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: entry {name!r} is a {type(state).__name__}, expected a state dict")
    return OrderedDict((k[len(PREFIX) :] if k.startswith(PREFIX) else k, v) for k, v in state.items())


def _match(model: DAVS, data: dict, names: tuple[str, ...], path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Strict key and shape matching of every module; one error lists all problems."""
    problems: list[str] = []
    matched = {}
    for name in names:
        if name not in data:
            problems.append(f"missing module {name!r}")
            continue
        ours = getattr(model, name).state_dict()
        theirs = _strip_prefix(data[name], name, path)
        m = match_keys(ours, theirs)  # PyTorch 0.2 saved no num_batches_tracked: those may be missing
        shapes = sorted(f"{k}: file {tuple(theirs[k].shape)} vs model {tuple(ours[k].shape)}" for k in m.misshapen)
        for label, items in (
            ("missing keys", sorted(m.missing)),
            ("unexpected keys", sorted(m.unexpected)),
            ("shape mismatch", shapes),
        ):
            if items:
                shown = ", ".join(items[:12]) + (f", … ({len(items)} in all)" if len(items) > 12 else "")
                problems.append(f"{name}: {label}: {shown}")
        matched[name] = m.complete
    if problems:
        raise CheckpointError(
            f"{path} does not match the DAVS networks:\n  - "
            + "\n  - ".join(problems)
            + "\nIs it the authors' DAVS checkpoint (e.g. 101_DAVS_checkpoint.pth.tar) at the paper's size?"
        )
    return matched


def load_original_checkpoint(
    path: str | Path, *, config: ModelConfig | None = None, with_discriminators: bool = False
) -> DAVS:
    """The authors' released checkpoint (or any file in its format) as a DAVS model in eval mode.

    ``config`` defaults to the paper's sizes. With ``with_discriminators`` the training-only networks present in
    the file are loaded too (they must all be there).
    """
    path = Path(path)
    data = read_original_checkpoint(path)
    model = DAVS(config or ModelConfig(), with_discriminators=with_discriminators)
    names = GENERATOR_MODULES + (DISCRIMINATOR_MODULES if with_discriminators else ())
    for name, state in _match(model, data, names, path).items():
        getattr(model, name).load_state_dict(state, strict=True)
    return model.eval()


def save_original_checkpoint(model: DAVS, path: str | Path, *, step: int = 0, epoch: int = 0) -> None:
    """Write ``model`` in the original's format (``module.`` prefix, no num_batches_tracked, legacy pickle
    protocol 2), e.g. for the original code or to test the loader."""
    data: dict = {"step": step, "epoch": epoch}
    names = GENERATOR_MODULES + (DISCRIMINATOR_MODULES if model.with_discriminators else ())
    for name in names:
        state = getattr(model, name).state_dict()
        data[name] = OrderedDict(
            (PREFIX + k, v.detach().cpu().clone())
            for k, v in state.items()
            if not k.endswith("num_batches_tracked")
        )
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(data, tmp, _use_new_zipfile_serialization=False, pickle_protocol=2)
    tmp.replace(path)

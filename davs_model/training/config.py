"""Typed model and training configuration (the ``model:`` and ``train:`` sections of config.yaml)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from davs_model.config import check_keys
from davs_model.losses import LossWeights


@dataclass(frozen=True)
class ModelConfig:
    """Network sizes. The defaults are the paper's; ``width`` < 1 and ``image_size`` 64/128 are for tests and CPU
    experiments. ``n_words`` = 0 means "from the data" (max label + 1 of the training shards)."""

    image_size: int = 256
    width: float = 1.0
    n_words: int = 500
    wid_dim: int = 256
    pred_length: int = 12
    sequence_length: int = 6
    disfc_length: int = 20

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None) -> ModelConfig:
        data = dict(data or {})
        check_keys(cls, data, "model")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StageConfig:
    """One training stage (``train.pretrain`` or ``train.main``)."""

    steps: int = 1000
    batch_size: int = 16
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str) -> StageConfig:
        data = dict(data or {})
        check_keys(cls, data, where)
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        return cls(**data)


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a training run except the machine (threads, GPUs count come from the job)."""

    seed: int = 0
    device: str = "auto"
    gpus: int = 1
    nodes: int = 1
    pretrain: StageConfig = field(default_factory=lambda: StageConfig(steps=1000))
    main: StageConfig = field(default_factory=lambda: StageConfig(steps=10000))
    loss_weights: LossWeights = field(default_factory=LossWeights)
    checkpoint_every: int = 200
    log_every: int = 10
    sample_every: int = 200
    num_workers: int = 2
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    fused_adam: bool = False
    identity_pretrain: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None) -> TrainConfig:
        data = dict(data or {})
        check_keys(cls, data, "train")
        if "pretrain" in data:
            data["pretrain"] = StageConfig.from_dict(data["pretrain"], "train.pretrain")
        if "main" in data:
            data["main"] = StageConfig.from_dict(data["main"], "train.main")
        if "loss_weights" in data:
            check_keys(LossWeights, data["loss_weights"], "train.loss_weights")
            data["loss_weights"] = replace(LossWeights(), **data["loss_weights"])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

"""Typed ``evaluate:`` section of config.yaml (validated and defaulted by the schema first). No heavy imports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from davs_model.config import check_keys

METRICS = ("word_accuracy", "retrieval", "psnr", "ssim", "lmd", "cpbd", "jitter")
DEFAULT_MODEL = "results/train/main/model.safetensors"


class ModelChoice:
    """For config sections with a ``checkpoint`` key: the model file they use, and their dict form."""

    checkpoint: str | None

    @property
    def model_path(self) -> str:
        """``checkpoint`` (ours or the authors' .pth.tar) or, when null, our trained model."""
        return self.checkpoint or DEFAULT_MODEL

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SyncNetConfig:
    """SyncNet weights for LSE-C / LSE-D (Wav2Lip's evaluation); both null = skipped."""

    weights: str | None = None
    sha256: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None) -> SyncNetConfig:
        data = dict(data or {})
        check_keys(cls, data, "evaluate.syncnet")
        out = cls(**data)
        if out.weights is not None and not out.sha256:
            raise ValueError("evaluate.syncnet.weights needs evaluate.syncnet.sha256 (the file's SHA-256, 64 hex)")
        return out


@dataclass(frozen=True)
class EvaluateConfig(ModelChoice):
    """The ``evaluate:`` section. See the schema for each field."""

    split: str = "test"
    checkpoint: str | None = None
    max_clips: int | None = None
    metrics: tuple[str, ...] = METRICS
    finetune_steps: int = 0
    audio_wid_scale: float | None = None
    video_wid_scale: float | None = None
    syncnet: SyncNetConfig = field(default_factory=SyncNetConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None) -> EvaluateConfig:
        data = dict(data or {})
        check_keys(cls, data, "evaluate")
        if "metrics" in data:
            data["metrics"] = tuple(data["metrics"])
            bad = set(data["metrics"]) - set(METRICS)
            if bad:
                raise ValueError(f"evaluate.metrics: unknown {sorted(bad)}; choose from {METRICS}")
        if "syncnet" in data:
            data["syncnet"] = SyncNetConfig.from_dict(data["syncnet"])
        if data.get("split", "test") not in ("val", "test"):
            raise ValueError(f"evaluate.split must be val or test, got {data['split']!r}")
        if data.get("max_clips") is not None and data["max_clips"] < 1:
            raise ValueError("evaluate.max_clips must be >= 1 or null")
        return cls(**data)

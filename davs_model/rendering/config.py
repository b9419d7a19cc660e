"""Typed ``render:`` section of config.yaml: the samples to render. No heavy imports (the Snakefile imports it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from davs_model.evaluation.config import ModelChoice, check_keys

DEMO = "demo"  # identity: skimage's astronaut photo; audio: a sentence synthesised offline by espeak-ng
DEFAULT_FINETUNE_STEPS = 5  # the original's test-time fine-tuning (test_train)


@dataclass(frozen=True)
class SampleConfig:
    """One render sample: an identity (photo, video or ``demo``) driven by audio and/or a video.

    With ``video`` the mouth follows the video's lips (the original's video mode) and the soundtrack is ``audio``
    or else the video's own; with ``audio`` only, the speech drives the mouth (audio mode).
    """

    identity: str
    audio: str | None = None
    video: str | None = None
    finetune_steps: int = DEFAULT_FINETUNE_STEPS
    wid_scale: float | None = None
    gif: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str = "?") -> SampleConfig:
        data = dict(data)
        check_keys(cls, data, f"render.samples.{name}")
        if "identity" not in data:
            raise ValueError(f"render.samples.{name}: `identity` is required (a photo, a video or 'demo')")
        out = cls(**data)
        if out.audio is None and out.video is None:
            raise ValueError(f"render.samples.{name}: give `audio` (a file or 'demo') and/or `video`")
        if out.video == DEMO:
            raise ValueError(f"render.samples.{name}: `video: demo` is not available; use `audio: demo`")
        if out.finetune_steps < 0:
            raise ValueError(f"render.samples.{name}: finetune_steps must be >= 0")
        return out

    def input_files(self) -> list[str]:
        """The files this sample reads (the built-in ``demo`` inputs are made in memory)."""
        return [p for p in (self.identity, self.audio, self.video) if p is not None and p != DEMO]


@dataclass(frozen=True)
class RenderConfig(ModelChoice):
    """The ``render:`` section: which checkpoint renders which samples; ``paste_back``: the mp4 shows the whole
    photo with the generated face blended in (else the aligned crop)."""

    checkpoint: str | None = None
    grid_frames: int = 8
    paste_back: bool = True
    samples: dict[str, SampleConfig] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None) -> RenderConfig:
        data = dict(data or {})
        check_keys(cls, data, "render")
        if "samples" in data:
            data["samples"] = {
                name: SampleConfig.from_dict(spec, name) for name, spec in (data["samples"] or {}).items()
            }
        if data.get("grid_frames", 8) < 1:
            raise ValueError("render.grid_frames must be >= 1")
        if not isinstance(data.get("paste_back", True), bool):
            raise ValueError("render.paste_back must be true or false")
        return cls(**data)

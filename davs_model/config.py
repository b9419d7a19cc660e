"""Typed configuration: frozen dataclasses built from the validated ``config.yaml`` sections.

The workflow validates config.yaml against ``workflow/schemas/config.schema.yaml`` (which also fills defaults) and
hands the resolved sections to the package; nothing past that point touches the raw dict. ``from_dict`` applies the
same defaults so the package can be used without the workflow, and a test keeps the field names equal to the
schema's property names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

SPLITS = ("train", "val", "test")
SOURCE_KINDS = ("demo", "lrw", "voxceleb1", "voxceleb2", "folder", "manifest")
# Kinds that follow the original's LRW audio protocol: whole audio stream, 600 samples cut from the end.
LRW_PROTOCOL_KINDS = ("lrw", "demo")


def check_keys(cls: type, data: dict[str, Any], where: str) -> None:
    """Raise ValueError naming unknown keys of ``data`` (not fields of the dataclass ``cls``) and the fix."""
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(
            f"unknown key(s) {sorted(unknown)} in {where}; known keys: {sorted(known)}. "
            "Fix the spelling in config.yaml (see workflow/schemas/config.schema.yaml)."
        )


@dataclass(frozen=True)
class SourceConfig:
    """One entry of ``sources:``. See the schema for the meaning of each field."""

    kind: str
    root: str | None = None
    path: str | None = None
    splits: tuple[str, ...] = SPLITS
    word_list: str | None = None
    boxes_root: str | None = None
    split: str = "train"
    split_map: dict[str, str] = field(default_factory=lambda: {"dev": "train", "test": "test"})
    mfcc_trim_end: int | None = None
    trim_audio_to_video: bool | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str = "?") -> SourceConfig:
        check_keys(cls, data, f"sources.{name}")
        if data.get("kind") not in SOURCE_KINDS:
            raise ValueError(f"sources.{name}.kind must be one of {SOURCE_KINDS}, got {data.get('kind')!r}")
        data = dict(data)
        if "splits" in data:
            data["splits"] = tuple(data["splits"])
        return cls(**data)

    @property
    def effective_trim_end(self) -> int:
        """Samples cut from the audio end before the MFCC (600 = LRW's ``save_mfccs.m``)."""
        if self.mfcc_trim_end is not None:
            return self.mfcc_trim_end
        return 600 if self.kind in LRW_PROTOCOL_KINDS else 0

    @property
    def effective_trim_to_video(self) -> bool:
        """Whether the audio is cut to the video duration before the MFCC (the AAC-priming fix)."""
        if self.trim_audio_to_video is not None:
            return self.trim_audio_to_video
        return self.kind not in LRW_PROTOCOL_KINDS


@dataclass(frozen=True)
class PreprocessConfig:
    """The ``preprocess:`` section: alignment, MFCC, storage, QC thresholds."""

    fps: float = 25
    sample_rate_hz: int = 16000
    shards: dict[str, int] = field(default_factory=lambda: {"train": 4, "val": 1, "test": 1})
    image_format: str = "jpeg"
    jpeg_quality: int = 95
    detector_upsample: int = 0
    keyframe_interval: int = 30
    tracking_iou: float = 0.5
    landmark_batch: int = 16
    duplicate_eyes: bool = True
    smoothing_sigma_frames: float = 0.0
    min_detection_rate: float = 0.8
    min_frames: int = 5

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None) -> PreprocessConfig:
        data = dict(data or {})
        check_keys(cls, data, "preprocess")
        if "shards" in data:
            data["shards"] = {**{"train": 4, "val": 1, "test": 1}, **data["shards"]}
        if data.get("image_format", "jpeg") not in ("jpeg", "raw"):
            raise ValueError("preprocess.image_format must be 'jpeg' or 'raw'")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DemoSection:
    """The ``demo:`` section: the embedded demo dataset."""

    root: str = "resources/demo/lipread_mp4"
    words: tuple[str, ...] = ("ABOUT", "AFTER", "BECAUSE", "HOUSE", "MONEY", "PEOPLE")
    voices: tuple[str, ...] = ("en-us", "en+f3", "en-gb-x-rp+m3")
    clips_per_word: dict[str, int] = field(default_factory=lambda: {"train": 6, "val": 2, "test": 2})
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None) -> DemoSection:
        data = dict(data or {})
        check_keys(cls, data, "demo")
        for key in ("words", "voices"):
            if key in data:
                data[key] = tuple(data[key])
        if "clips_per_word" in data:
            data["clips_per_word"] = {**{"train": 6, "val": 2, "test": 2}, **data["clips_per_word"]}
        return cls(**data)

    def dataset_config(self):
        """The generator's own config object (imported lazily: it pulls in numpy and OpenCV)."""
        from davs_model.demo.dataset import DemoConfig

        return DemoConfig(
            words=self.words,
            voices=self.voices,
            clips_per_word=dict(self.clips_per_word),
            seed=self.seed,
        )


def schema_errors(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Every error of ``config`` against the JSON schema, one short line each naming the key (unknown keys with the
    closest known one). Snakemake's ``validate`` stops at the first error and prints the whole schema section."""
    import difflib

    import jsonschema  # a dependency of Snakemake; imported only when the workflow validates

    lines = []
    for err in sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in err.absolute_path)
        if err.validator == "additionalProperties" and err.schema.get("additionalProperties") is False:
            known = sorted(err.schema.get("properties", {}))
            for key in sorted(set(err.instance) - set(known)):
                near = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                lines.append(f"unknown key {where + '.' if where else ''}{key}{hint}; known: {', '.join(known)}")
        else:
            lines.append(f"{where or 'config'}: {err.message}")
    return lines


def sources_from_dict(data: dict[str, dict[str, Any]] | None) -> dict[str, SourceConfig]:
    """``sources:`` → {name: SourceConfig}; the demo dataset when none is given."""
    data = data or {"demo": {"kind": "demo"}}
    return {name: SourceConfig.from_dict(spec, name) for name, spec in data.items()}

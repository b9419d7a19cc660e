"""config.yaml and the tiny test config validate; the typed objects mirror the schema exactly."""

from __future__ import annotations

import copy
from dataclasses import fields

import jsonschema
import pytest
import yaml

from davs_model.config import DemoSection, PreprocessConfig, SourceConfig, sources_from_dict
from tests.conftest import REPO

SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())


def _validate_with_defaults(config: dict) -> dict:
    """jsonschema validation that fills defaults, as Snakemake's validate() does."""
    validator_cls = jsonschema.validators.validator_for(SCHEMA)

    def set_defaults(validator, properties, instance, schema):
        for name, sub in properties.items():
            if isinstance(instance, dict) and "default" in sub:
                instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from validator_cls.VALIDATORS["properties"](validator, properties, instance, schema)

    filling = jsonschema.validators.extend(validator_cls, {"properties": set_defaults})
    config = copy.deepcopy(config)
    filling(SCHEMA).validate(config)
    return config


@pytest.mark.parametrize("path", ["config.yaml", ".test/config.yaml"])
def test_configs_validate_and_build_typed_objects(path):
    config = _validate_with_defaults(yaml.safe_load((REPO / path).read_text()))
    pre = PreprocessConfig.from_dict(config["preprocess"])
    demo = DemoSection.from_dict(config["demo"])
    sources = sources_from_dict(config["sources"])
    assert pre.fps == 25 and pre.sample_rate_hz == 16000 and pre.jpeg_quality == 95
    assert demo.words and sources["demo"].kind == "demo"


def test_empty_config_gets_the_demo_defaults():
    config = _validate_with_defaults({})
    assert list(config["sources"]) == ["demo"] and config["sources"]["demo"]["kind"] == "demo"
    assert PreprocessConfig.from_dict(config["preprocess"]) == PreprocessConfig()
    assert DemoSection.from_dict(config["demo"]) == DemoSection()


def test_schema_properties_equal_dataclass_fields():
    props = SCHEMA["properties"]
    assert set(props["preprocess"]["properties"]) == {f.name for f in fields(PreprocessConfig)}
    assert set(props["demo"]["properties"]) == {f.name for f in fields(DemoSection)}
    assert set(SCHEMA["$defs"]["source"]["properties"]) == {f.name for f in fields(SourceConfig)}


def test_schema_defaults_equal_dataclass_defaults():
    schema_pre = props_defaults(SCHEMA["properties"]["preprocess"]["properties"])
    typed = PreprocessConfig().to_dict()
    for key, value in schema_pre.items():
        if key != "shards":
            assert typed[key] == value, key


def props_defaults(props: dict) -> dict:
    return {k: v["default"] for k, v in props.items() if "default" in v}


@pytest.mark.parametrize(
    "bad",
    [
        {"preprocess": {"jpeg_qualty": 90}},  # typo: unknown key
        {"preprocess": {"jpeg_quality": "high"}},  # wrong type
        {"preprocess": {"fps": 30}},  # DAVS pairs bins with 25 fps frames
        {"sources": {"x": {"kind": "lrw"}}},  # lrw needs a root
        {"sources": {"x": {"kind": "youtube", "root": "."}}},  # unknown kind
        {"demo": {"words": ["about"]}},  # LRW words are upper case
    ],
)
def test_bad_configs_are_rejected(bad):
    with pytest.raises(jsonschema.ValidationError):
        _validate_with_defaults(bad)


def test_typed_objects_reject_unknown_keys_with_the_fix():
    with pytest.raises(ValueError, match="jpeg_qualty.*config.yaml"):
        PreprocessConfig.from_dict({"jpeg_qualty": 90})


def test_source_protocol_defaults_follow_the_original():
    lrw = SourceConfig(kind="lrw", root=".")
    vox = SourceConfig(kind="voxceleb2", root=".")
    assert (lrw.effective_trim_end, lrw.effective_trim_to_video) == (600, False)
    assert (vox.effective_trim_end, vox.effective_trim_to_video) == (0, True)
    assert SourceConfig(kind="lrw", root=".", mfcc_trim_end=0).effective_trim_end == 0


def test_model_and_train_schema_match_the_dataclasses():
    from davs_model.losses import LossWeights
    from davs_model.training.config import ModelConfig, StageConfig, TrainConfig

    props = SCHEMA["properties"]
    assert set(props["model"]["properties"]) == {f.name for f in fields(ModelConfig)}
    assert set(props["train"]["properties"]) == {f.name for f in fields(TrainConfig)}
    assert set(SCHEMA["$defs"]["stage"]["properties"]) == {f.name for f in fields(StageConfig)}
    config = _validate_with_defaults(yaml.safe_load((REPO / "config.yaml").read_text()))
    train = TrainConfig.from_dict(config["train"])
    assert ModelConfig.from_dict(config["model"]).image_size in (64, 128, 256)
    paper = TrainConfig.from_dict(_validate_with_defaults({})["train"])  # the schema's defaults are the paper's
    assert paper.main.lr == 2e-4 and paper.main.betas == (0.9, 0.999) and paper.loss_weights == LossWeights()
    assert (train.main.lr, train.loss_weights.l1_mouth) == (1e-3, 64)  # config.yaml: the demo's settings
    assert ModelConfig() == ModelConfig.from_dict(_validate_with_defaults({})["model"])  # paper size by default
    with pytest.raises(ValueError, match="l1_mouht"):
        TrainConfig.from_dict({"loss_weights": {"l1_mouht": 8}})
    assert TrainConfig.from_dict({"loss_weights": {"l1_mouth": 2}}).loss_weights == LossWeights(l1_mouth=2)

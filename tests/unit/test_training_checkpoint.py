"""The resumable state and the finished-model file: round trips, weights_only loading, atomic writes, versions."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from davs_model import CHECKPOINT_FORMAT_VERSION
from davs_model.model import DAVS
from davs_model.training import checkpoint as ckpt
from davs_model.training.config import ModelConfig, TrainConfig
from davs_model.training.loop import build_optimizers

CFG = ModelConfig(image_size=64, width=1 / 16, n_words=6)


def trained_model() -> tuple[DAVS, torch.optim.Optimizer, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = DAVS(CFG)
    opt_g, opt_d = build_optimizers(model, "main", TrainConfig(), torch.device("cpu"))
    for opt in (opt_g, opt_d):  # one Adam step so the optimisers have state
        for group in opt.param_groups:
            for p in group["params"]:
                p.grad = torch.randn_like(p)
        opt.step()
    return model, opt_g, opt_d


def test_state_round_trip_with_weights_only(tmp_path):
    model, opt_g, opt_d = trained_model()
    gen = torch.Generator().manual_seed(5)
    torch.rand(3, generator=gen)
    random.seed(1)
    np.random.seed(2)
    path = ckpt.save_state(
        tmp_path / ckpt.STATE_FILE, model=model, opt_g=opt_g, opt_d=opt_d, stage="main", step=12, epoch=3,
        position=1, step_generator=gen, config={"model": CFG.to_dict(), "train": TrainConfig().to_dict()},
    )  # fmt: skip
    raw = torch.load(path, weights_only=True)  # no pickled objects
    assert raw["format_version"] == CHECKPOINT_FORMAT_VERSION == 1
    expected = (
        torch.get_rng_state(),
        gen.get_state(),
        random.random(),
        np.random.random(),
        torch.rand(2, generator=gen),
    )
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    state = ckpt.load_state(path)
    assert (state["stage"], state["step"], state["epoch"], state["position"]) == ("main", 12, 3, 1)
    assert state["config"]["train"]["main"]["betas"] == [0.9, 0.999]
    fresh_gen = torch.Generator()
    ckpt.restore_rng(state["rng"], fresh_gen)
    assert torch.equal(torch.get_rng_state(), expected[0]) and torch.equal(fresh_gen.get_state(), expected[1])
    assert random.random() == expected[2] and np.random.random() == expected[3]
    assert torch.equal(torch.rand(2, generator=fresh_gen), expected[4])

    torch.manual_seed(1)
    other = DAVS(CFG)
    other_g, other_d = build_optimizers(other, "main", TrainConfig(), torch.device("cpu"))
    other.load_state_dict(state["model"])
    other_g.load_state_dict(state["opt_g"])
    other_d.load_state_dict(state["opt_d"])
    ours, theirs = model.state_dict(), other.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert torch.equal(other_g.state_dict()["state"][0]["exp_avg"], opt_g.state_dict()["state"][0]["exp_avg"])


def test_state_of_another_version_is_refused(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"format_version": 0}, path)
    with pytest.raises(ckpt.CheckpointError, match="format version 0"):
        ckpt.load_state(path)


def test_model_file_carries_its_recipe_and_reproduces_the_outputs(tmp_path):
    model, _, _ = trained_model()
    model.eval()
    path = ckpt.save_model(model, tmp_path / "model.safetensors", step=42, stage="main")
    meta = ckpt.read_model_metadata(path)
    assert meta["step"] == 42 and meta["stage"] == "main" and meta["format_version"] == "1"
    assert ModelConfig.from_dict(meta["model_config"]) == CFG
    assert set(load_file(path)) == set(model.generator_state_dict())  # inference networks only
    loaded = ckpt.load_model(path)
    assert not loaded.training and not loaded.with_discriminators
    identity, mfcc = torch.rand(3, 64, 64), torch.randn(5, 20, 12)
    assert torch.equal(loaded.generate(identity, mfcc=mfcc), model.generate(identity, mfcc=mfcc))
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was renamed


def test_load_modules_initialises_only_what_stage_1_trained(tmp_path):
    torch.manual_seed(0)
    stage1 = DAVS(CFG)
    path = ckpt.save_model(stage1, tmp_path / "pre.safetensors", step=3, stage="pretrain",
                           trained_modules=("mfcc_encoder", "lip_feature_encoder", "model_fusion"))  # fmt: skip
    torch.manual_seed(1)
    stage2 = DAVS(CFG)
    assert ckpt.load_modules(stage2, path) == ["mfcc_encoder", "lip_feature_encoder", "model_fusion"]
    assert torch.equal(stage2.model_fusion.fc_1.weight, stage1.model_fusion.fc_1.weight)
    assert not torch.equal(stage2.Decoder.conv7_2.weight, stage1.Decoder.conv7_2.weight)


def test_foreign_safetensors_file_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"format": "something"})
    with pytest.raises(ckpt.CheckpointError, match="not a davs_model model file"):
        ckpt.load_model(path)


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    path = tmp_path / "f.json"
    path.write_text(json.dumps({"old": True}))

    def failing(tmp):
        tmp.write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        ckpt.atomic_write(path, failing)
    assert json.loads(path.read_text()) == {"old": True} and len(list(tmp_path.iterdir())) == 1

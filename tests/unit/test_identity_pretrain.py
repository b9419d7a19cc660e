"""Stage 1's optional identity pretraining of E_p on the shards' speakers (spec §4.6 step 1)."""

from __future__ import annotations

import logging

import pytest
import torch
from torch.utils.data import DataLoader

from davs_model.model import DAVS
from davs_model.networks.face_id_classifier import FaceIdClassifier
from davs_model.training.checkpoint import load_model, load_modules, load_state, read_model_metadata
from davs_model.training.config import ModelConfig, TrainConfig
from davs_model.training.identity import IdentityPretraining
from davs_model.training.loop import make_dataset, train_stage
from davs_model.training.step import ASSOCIATION_MODULES
from tests.unit.training_data import write_training_shards

MODEL = ModelConfig(image_size=64, width=1 / 16, n_words=6)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_training_shards(tmp_path_factory.mktemp("speakers"), n_train=12, n_val=3, speakers=3)


def test_classifier_shapes_and_paper_size_parameters():
    head = FaceIdClassifier(40145)  # the original's Face_ID_fc: Dropout(0.5) + Linear(256 → 40,145)
    assert sum(p.numel() for p in head.parameters()) == 256 * 40145 + 40145 == 10_317_265
    assert FaceIdClassifier(5, pid_dim=16)(torch.zeros(3, 16)).shape == (3, 5)
    with pytest.raises(ValueError, match="at least 2 identities"):
        FaceIdClassifier(1)
    with pytest.raises(ValueError, match=r"expected pid \(B, 16\)"):
        FaceIdClassifier(5, pid_dim=16)(torch.zeros(3, 17))


def test_dataset_names_speakers(shards):
    ds = make_dataset(shards[0], "train", MODEL, train=True, seed=0)
    assert ds.speakers == ["id00", "id01", "id02"]
    assert ds.speaker_ids.tolist() == [i % 3 for i in range(12)]
    assert int(ds[4]["speaker"]) == 1


def test_step_moves_only_the_identity_encoder_and_learns_the_speakers(shards):
    torch.manual_seed(0)
    model = DAVS(MODEL).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pre = IdentityPretraining(model, 3, lr=1e-3, betas=(0.9, 0.999))
    ds = make_dataset(shards[0], "train", MODEL, train=True, seed=0)
    batches = list(DataLoader(ds, batch_size=6, shuffle=False))
    first = pre.step(batches[0])
    changed = {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"ID_encoder"}
    history = [first] + [pre.step(batches[k % 2]) for k in range(1, 16)]
    ce = [h["ID/speaker_ce"] for h in history]
    assert sum(ce[-4:]) < 0.5 * sum(ce[:4]), ce  # colour tells the 3 speakers apart: the CE must fall
    assert min(h["ID/speaker_acc"] for h in history[-2:]) > 0.8, history[-2:]  # both batches of 6, ≤ 1 miss


def test_pretrain_stage_trains_the_identity_encoder_resumes_and_feeds_stage_2(shards, tmp_path):
    train, val = shards
    cfg = TrainConfig.from_dict({"pretrain": {"steps": 2, "batch_size": 3}, "num_workers": 0, "log_every": 1,
                                 "checkpoint_every": 1, "seed": 3})  # fmt: skip
    common = dict(model_cfg=MODEL, train_shards=train, val_shards=val, progress=False)
    straight = train_stage("pretrain", cfg=cfg, work_dir=tmp_path / "a", out_model=tmp_path / "a.st", **common)
    assert read_model_metadata(straight)["trained_modules"] == [*ASSOCIATION_MODULES, "ID_encoder"]
    half = TrainConfig.from_dict({**cfg.to_dict(), "pretrain": {"steps": 1, "batch_size": 3}})
    train_stage("pretrain", cfg=half, work_dir=tmp_path / "b", out_model=tmp_path / "b_half.st", **common)
    resumed = train_stage("pretrain", cfg=cfg, work_dir=tmp_path / "b", out_model=tmp_path / "b.st", **common)
    a, b = load_model(straight).state_dict(), load_model(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the head and its Adam state resumed too
    head = load_state(tmp_path / "b" / "state.pt")["extra"]["identity"]["head"]
    assert head["fc.weight"].shape == (3, model_width_pid())
    fresh = DAVS(MODEL)  # stage 2 starts from this E_p (train_stage's init_from calls load_modules)
    assert load_modules(fresh, straight) == [*ASSOCIATION_MODULES, "ID_encoder"]
    assert all(torch.equal(v, a[f"ID_encoder.{k}"]) for k, v in fresh.ID_encoder.state_dict().items())


def test_switched_off_or_without_speakers_it_is_skipped(caplog):
    model = DAVS(MODEL)
    with caplog.at_level(logging.INFO, logger="davs_model.training.identity"):
        assert IdentityPretraining.maybe(model, ["id00", "id01"], False, lr=1e-3, betas=(0.9, 0.999)) is None
        assert IdentityPretraining.maybe(model, ["only"], True, lr=1e-3, betas=(0.9, 0.999)) is None
    assert "needs ≥ 2" in caplog.text


def model_width_pid() -> int:
    return DAVS(MODEL).ID_encoder.pid_dim

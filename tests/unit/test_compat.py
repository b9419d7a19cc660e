"""The original checkpoint format: strict, safe loading, and outputs identical to the model that wrote it."""

from __future__ import annotations

import pickle

import pytest
import torch

from davs_model.compat import (
    CheckpointError,
    load_original_checkpoint,
    read_original_checkpoint,
    save_original_checkpoint,
)
from davs_model.model import DAVS, GENERATOR_MODULES
from davs_model.training.config import ModelConfig

TINY = ModelConfig(image_size=64, width=1 / 16, n_words=6)


def _inputs(size: int):
    g = torch.Generator().manual_seed(0)
    return (
        torch.rand(3, size, size, generator=g),
        torch.randn(7, 20, 12, generator=g),
        torch.rand(12, 3, size, size, generator=g),
    )


def _trained_like(model: DAVS) -> DAVS:
    """Give BatchNorm non-trivial running statistics, as a trained model has."""
    model.train()
    with torch.no_grad():
        model.encode_identity(torch.rand(4, 3, model.config.image_size, model.config.image_size))
        model.encode_audio(torch.randn(2, 12, 20, 12))
        model.encode_video(torch.rand(1, 4, 3, model.config.image_size, model.config.image_size))
    return model.eval()


def test_original_format_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(1)
    model = _trained_like(DAVS(TINY, with_discriminators=False))
    path = tmp_path / "101_DAVS_checkpoint.pth.tar"
    save_original_checkpoint(model, path, step=7, epoch=101)
    raw = read_original_checkpoint(path)
    assert set(GENERATOR_MODULES) <= set(raw) and raw["epoch"] == 101
    assert all(k.startswith("module.") for k in raw["ID_encoder"])
    assert not any(k.endswith("num_batches_tracked") for name in GENERATOR_MODULES for k in raw[name])
    with open(path, "rb") as fh:  # the legacy (non-zip) serialization, pickle protocol 2
        assert fh.read(2) == b"\x80\x02"

    loaded = load_original_checkpoint(path, config=TINY)
    assert not loaded.training
    identity, mfcc, video = _inputs(64)
    assert torch.equal(loaded.generate(identity, mfcc=mfcc), model.generate(identity, mfcc=mfcc))
    assert torch.equal(loaded.generate(identity, video=video[:5]), model.generate(identity, video=video[:5]))
    assert torch.equal(
        loaded.word_logits(mfcc=mfcc[:1].expand(12, 20, 12)), model.word_logits(mfcc=mfcc[:1].expand(12, 20, 12))
    )
    assert torch.equal(loaded.word_logits(video=video), model.word_logits(video=video))


def test_paper_size_checkpoint_with_training_modules_loads(tmp_path):
    model = DAVS(ModelConfig())  # paper size, with the discriminators the released file also carries
    path = tmp_path / "paper.pth.tar"
    save_original_checkpoint(model, path)
    loaded = load_original_checkpoint(path, with_discriminators=True)
    for name in GENERATOR_MODULES + ("netD_mul", "discriminator_audio", "ID_lip_discriminator"):
        ours, theirs = getattr(model, name).state_dict(), getattr(loaded, name).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours if not k.endswith("num_batches_tracked"))
    sample = read_original_checkpoint(path)
    assert "module.block1.conv01_a.weight" in sample["ID_encoder"]  # Python 2's str(01) == "1"
    assert "module.model.m0.b2_plus_1.conv1.weight" in sample["lip_feature_encoder"]


def _edit(path, tmp_path, fn):
    data = read_original_checkpoint(path)
    fn(data)
    out = tmp_path / "edited.pth.tar"
    torch.save(data, out, _use_new_zipfile_serialization=False, pickle_protocol=2)
    return out


@pytest.fixture
def tiny_file(tmp_path):
    path = tmp_path / "tiny.pth.tar"
    save_original_checkpoint(DAVS(TINY, with_discriminators=False), path)
    return path


def test_missing_unexpected_and_misshapen_keys_are_all_listed(tiny_file, tmp_path):
    def damage(data):
        del data["Decoder"]["module.conv7_2.weight"]
        data["mfcc_encoder"]["module.extra.weight"] = torch.zeros(1)
        data["model_fusion"]["module.fc_2.weight"] = torch.zeros(3, 3)

    with pytest.raises(CheckpointError) as err:
        load_original_checkpoint(_edit(tiny_file, tmp_path, damage), config=TINY)
    text = str(err.value)
    assert "Decoder: missing keys: conv7_2.weight" in text
    assert "mfcc_encoder: unexpected keys: extra.weight" in text
    assert "model_fusion: shape mismatch: fc_2.weight" in text


def test_missing_module_and_wrong_size_config(tiny_file, tmp_path):
    with pytest.raises(CheckpointError, match="missing module 'lip_feature_encoder'"):
        load_original_checkpoint(_edit(tiny_file, tmp_path, lambda d: d.pop("lip_feature_encoder")), config=TINY)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_original_checkpoint(tiny_file, config=ModelConfig(image_size=64, width=1 / 8, n_words=6))


def test_prefix_free_state_dicts_load_too(tiny_file, tmp_path):
    def strip(data):
        for name in GENERATOR_MODULES:
            data[name] = {k.removeprefix("module."): v for k, v in data[name].items()}

    load_original_checkpoint(_edit(tiny_file, tmp_path, strip), config=TINY)


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth.tar"
    with open(path, "wb") as fh:
        pickle.dump({"ID_encoder": _Payload()}, fh, protocol=2)
    with pytest.raises(CheckpointError, match="refused"):
        load_original_checkpoint(path, config=TINY)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("content", [b"", b"garbage bytes"])
def test_unreadable_files_get_a_clear_error(tmp_path, content):
    path = tmp_path / "x.pth.tar"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="x.pth.tar"):
        load_original_checkpoint(path, config=TINY)


def test_convert_original_cli_writes_safetensors_that_load_to_the_same_model(tmp_path, monkeypatch):
    import json

    from davs_model.cli import main
    from davs_model.training.checkpoint import load_model

    paper = DAVS(ModelConfig(), with_discriminators=False).eval()
    src = tmp_path / "101_DAVS_checkpoint.pth.tar"
    save_original_checkpoint(paper, src, step=3)
    out = tmp_path / "converted"
    assert main(["convert-original", str(src), str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["model_config"]["image_size"] == 256
    loaded = load_model(out / "model.safetensors")
    ours = paper.generator_state_dict()
    theirs = loaded.generator_state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if not k.endswith("num_batches_tracked"))
    bad = tmp_path / "bad.pth.tar"
    bad.write_bytes(b"nope")
    assert main(["convert-original", str(bad), str(tmp_path / "x")]) == 2

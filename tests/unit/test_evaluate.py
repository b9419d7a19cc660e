"""evaluate() on tiny shards written with ShardWriter and a tiny model: files, keys, ground-truth row, LSE row."""

from __future__ import annotations

import hashlib
import json
import wave

import cv2
import numpy as np
import pytest
import torch

from davs_model.evaluation.config import EvaluateConfig
from davs_model.evaluation.evaluate import LSE_SKIPPED, evaluate, lse_status
from davs_model.evaluation.metrics import PSNR_CAP_DB
from davs_model.io.shards import ClipRecord, ShardWriter
from davs_model.model import DAVS
from davs_model.rendering.inputs import load_identity
from davs_model.training.config import ModelConfig

N_FRAMES, N_BINS = 29, 25


def _record(clip_id: str, label: int, frames_bgr: np.ndarray) -> ClipRecord:
    """A clip whose bins 2..26 pair with frames 2..26 (random MFCCs)."""
    return ClipRecord(
        clip_id=clip_id,
        source="demo",
        split="test",
        label=label,
        word=f"W{label}",
        speaker="s",
        frames_bgr=frames_bgr,
        mfcc=np.random.default_rng(label).standard_normal((N_BINS, 20, 12)) * 10,
        bin_numbers=np.arange(2, 2 + N_BINS),
        frame_index=np.arange(2, 2 + N_BINS),
        transforms=np.tile(np.eye(2, 3), (len(frames_bgr), 1, 1)),
        detected=np.ones(len(frames_bgr), bool),
        input_fps=25.0,
    )


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    """One test shard: 4 clips of the aligned astronaut with a moving chin and random MFCCs, labels 0..3."""
    face = load_identity("demo")[:, :, ::-1]  # 256 BGR aligned crop
    base = cv2.copyMakeBorder(face, 2, 2, 2, 2, cv2.BORDER_REPLICATE)  # back to the 260-px layout
    path = tmp_path_factory.mktemp("shards") / "000.h5"
    with ShardWriter(path, "test", 0) as writer:
        for c in range(4):
            frames = np.stack([np.roll(base, (t + c) % 3, axis=0) for t in range(N_FRAMES)])
            writer.add(_record(f"demo/clip{c}", c, frames))
    return path


@pytest.fixture(scope="module")
def model() -> DAVS:
    torch.manual_seed(0)
    return DAVS(ModelConfig(image_size=64, width=1 / 16, n_words=6), with_discriminators=False).eval()


@pytest.fixture(scope="module")
def result(shard, model, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    paths = [out / "metrics.json", out / "metrics.md", out / "metrics.png"]
    res = evaluate("in-memory", [shard], *paths, EvaluateConfig(), model=model, device="cpu")
    return res, paths


def test_json_has_every_metric(result):
    res, (js, md, png) = result
    data = json.loads(js.read_text())
    assert data["n_clips"] == 4 and data["n_frames"] == 4 * N_BINS
    assert set(data["word_accuracy"]) == {"audio", "video", "fused", "n_clips"}
    for direction in ("audio_to_video", "video_to_audio"):
        assert set(data["retrieval"][direction]) == {"R@1", "R@5", "R@10", "R@50", "median_rank", "mean_rank"}
        assert data["retrieval"][direction]["R@50"] == 100.0  # 4 clips: every match is in the top 50
    assert set(data["reconstruction"]) == {"ground_truth", "audio_driven", "video_driven"}
    for row in data["reconstruction"].values():
        assert set(row) == {"psnr", "ssim", "lmd", "cpbd", "jitter"}
    assert set(data["definitions"]) >= {"psnr", "ssim", "lmd", "cpbd", "jitter", "word_accuracy", "retrieval"}
    assert png.stat().st_size > 1000


def test_ground_truth_row_is_computed_by_the_same_code(result):
    gt = result[0]["reconstruction"]["ground_truth"]
    assert gt["psnr"] == PSNR_CAP_DB and gt["ssim"] == pytest.approx(1.0) and gt["lmd"] == 0.0
    assert 0 < gt["cpbd"] <= 1 and gt["jitter"] > 0  # the rolled frames move by a pixel
    generated = result[0]["reconstruction"]["audio_driven"]
    assert generated["psnr"] < PSNR_CAP_DB and generated["ssim"] < 1


def test_markdown_table_and_definitions(result):
    md = result[1][1].read_text()
    assert "| frames | PSNR (dB) ↑ | SSIM ↑ | LMD ↓ | CPBD ↑ | jitter ↓ |" in md
    assert "| ground truth | 100.00 | 1.0000 | 0.0000 |" in md
    assert "| audio → video |" in md and "| fused (sum of logits) |" in md
    assert "inter-ocular distance" in md and "skimage" in md
    assert LSE_SKIPPED in md


def test_lse_is_skipped_without_weights_and_checked_with_them(tmp_path):
    assert lse_status(EvaluateConfig().syncnet) == {"status": "skipped: weights not provided"}
    weights = tmp_path / "syncnet_v2.model"
    weights.write_bytes(b"not really weights")
    good = hashlib.sha256(weights.read_bytes()).hexdigest()
    cfg = EvaluateConfig.from_dict({"syncnet": {"weights": str(weights), "sha256": good}})
    assert lse_status(cfg.syncnet) == {"status": "ready", "sha256": good}
    bad = EvaluateConfig.from_dict({"syncnet": {"weights": str(weights), "sha256": "0" * 64}})
    with pytest.raises(ValueError, match="SHA-256"):
        lse_status(bad.syncnet)


def _wav(path, samples: np.ndarray) -> str:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(samples.astype("<i2").tobytes())
    return str(path)


def test_lse_rows_from_source_audio(model, tmp_path, monkeypatch):
    """With weights and the clips' source audio, LSE scores every row; a synced ground truth has offset 0 (the
    soundtrack is cut as the renderer cuts it); a clip without a source video is counted, not fatal."""
    from davs_model.evaluation import syncnet
    from davs_model.evaluation.lse import LSEScorer
    from tests.unit.test_syncnet import EnergyBrightness, _talking

    path, audio_paths = tmp_path / "000.h5", {}
    with ShardWriter(path, "test", 0) as writer:
        for c in range(3):
            pattern = (np.random.default_rng(c).random(N_FRAMES + 8) < 0.5).astype(np.uint8)
            bright, audio = _talking(pattern, rng_seed=c)  # source frame t is bright when its audio is loud
            frames = np.ascontiguousarray(np.broadcast_to(bright[:N_FRAMES, :1, :1], (N_FRAMES, 260, 260, 3)))
            if c < 2:
                audio_paths[f"demo/sync{c}"] = _wav(tmp_path / f"{c}.wav", audio)
            writer.add(_record(f"demo/sync{c}", c, frames))
    weights = tmp_path / "syncnet_v2.model"
    weights.write_bytes(b"stand-in")
    sha = hashlib.sha256(b"stand-in").hexdigest()
    monkeypatch.setattr(syncnet, "load_syncnet", lambda path, device: EnergyBrightness())
    cfg = EvaluateConfig.from_dict({"metrics": ["psnr"], "syncnet": {"weights": str(weights), "sha256": sha}})
    outs = [tmp_path / "m.json", tmp_path / "m.md", tmp_path / "m.png"]
    res = evaluate("in-memory", [path], *outs, cfg, model=model, device="cpu", audio_paths=audio_paths)
    lse = json.loads(outs[0].read_text())["lse"]
    assert lse["status"].startswith("computed on 2 clips") and lse["n_clips"] == 2 and lse["sha256"] == sha
    assert lse["skipped_clips"] == {"no source video for the clip": 1}
    assert set(lse["rows"]) == {"ground_truth", "audio_driven", "video_driven"}
    gt = lse["rows"]["ground_truth"]
    assert gt["in_sync_percent"] == 100.0 and gt["mean_abs_offset"] == 0.0 and gt["lse_c"] > 0.5
    md = outs[1].read_text()
    assert "| frames | LSE-D ↓ | LSE-C ↑ |" in md and "| ground truth | " in md and "**lse**" in md
    assert res["lse"] == lse
    no_audio = LSEScorer(lse_status(cfg.syncnet), cfg.syncnet, audio_paths=None)  # what evaluate() does without
    assert not no_audio.active and no_audio.result()["status"].startswith("skipped: shards hold no audio")


def test_model_file_round_trip_and_metric_selection(shard, model, tmp_path):
    from davs_model.training.checkpoint import save_model

    path = save_model(model, tmp_path / "model.safetensors", step=1)
    cfg = EvaluateConfig.from_dict({"metrics": ["word_accuracy", "psnr"], "max_clips": 2})
    res = evaluate(path, [shard], tmp_path / "m.json", tmp_path / "m.md", tmp_path / "m.png", cfg, device="cpu")
    assert res["n_clips"] == 2 and "retrieval" not in res
    assert set(res["reconstruction"]["audio_driven"]) == {"psnr"}


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="max_clip"):
        EvaluateConfig.from_dict({"max_clip": 3})


def test_schema_sections_mirror_the_dataclasses():
    from dataclasses import fields

    import yaml

    from davs_model.evaluation.config import SyncNetConfig
    from davs_model.rendering.config import RenderConfig, SampleConfig
    from tests.conftest import REPO

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    pairs = [
        (schema["properties"]["evaluate"]["properties"], EvaluateConfig()),
        (schema["properties"]["evaluate"]["properties"]["syncnet"]["properties"], SyncNetConfig()),
        (schema["properties"]["render"]["properties"], RenderConfig()),
        (schema["$defs"]["sample"]["properties"], SampleConfig(identity="demo", audio="demo")),
    ]
    for props, typed in pairs:
        assert set(props) == {f.name for f in fields(typed)}
        for name, prop in props.items():
            if name not in ("syncnet", "samples", "identity", "audio") and "default" in prop:
                value = getattr(typed, name)
                assert (list(value) if isinstance(value, tuple) else value) == prop["default"], name

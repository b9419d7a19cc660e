"""SyncNet (network, safe strict loading) and LSE-D / LSE-C (offset search, the 80 ms soundtrack shift)."""

from __future__ import annotations

import hashlib
import os
import pickle

import numpy as np
import pytest
import torch

from davs_model.evaluation.config import SyncNetConfig
from davs_model.evaluation.lse import (
    LSE_SKIPPED,
    VSHIFT,
    clip_soundtrack,
    lse_scores,
    lse_status,
    syncnet_mfcc,
)
from davs_model.evaluation.syncnet import N_PARAMETERS, SyncNet, load_syncnet

SPF = 640  # audio samples per 25 fps frame at 16 kHz
LOUD, QUIET = 6000.0, 30.0


@pytest.fixture(scope="module")
def net() -> SyncNet:
    torch.manual_seed(0)
    model = SyncNet()
    for m in model.modules():  # non-trivial BatchNorm statistics, so that loading them matters
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_shapes_names_and_parameter_count(net):
    assert sum(p.numel() for p in net.parameters()) == N_PARAMETERS == 13_631_616
    keys = net.state_dict().keys()
    # module indices of syncnet_python's SyncNetModel.S (conv, BN, ReLU[, pool] per block)
    for k in (
        "netcnnaud.0.weight",
        "netcnnaud.18.weight",
        "netcnnaud.19.running_var",
        "netfcaud.3.weight",
        "netcnnlip.0.weight",
        "netcnnlip.18.weight",
        "netcnnlip.19.running_mean",
        "netfclip.1.weight",
    ):
        assert k in keys, k
    with torch.no_grad():
        assert net.forward_audio(torch.randn(3, 1, 13, 20)).shape == (3, 1024)
        assert net.forward_lip(torch.rand(2, 3, 5, 224, 224) * 255).shape == (2, 1024)


def test_state_dict_round_trip_is_exact_and_strict(net, tmp_path):
    path = tmp_path / "syncnet.model"
    torch.save(net.state_dict(), path)
    loaded = load_syncnet(path)
    a, v = torch.randn(4, 1, 13, 20), torch.rand(2, 3, 5, 224, 224) * 255
    with torch.no_grad():
        assert torch.equal(loaded.forward_audio(a), net.forward_audio(a))
        assert torch.equal(loaded.forward_lip(v), net.forward_lip(v))
    legacy = {k: t for k, t in net.state_dict().items() if not k.endswith("num_batches_tracked")}  # PyTorch < 0.4
    torch.save(legacy, path)
    with torch.no_grad():
        assert torch.equal(load_syncnet(path).forward_audio(a), net.forward_audio(a))
    broken = dict(legacy)
    broken.pop("netfclip.3.weight")
    broken["module.extra"] = torch.zeros(1)
    broken["netcnnaud.0.weight"] = torch.zeros(64, 1, 5, 5)
    torch.save(broken, path)
    with pytest.raises(ValueError, match=r"missing \(1\): netfclip.3.weight.*unexpected \(1\): module.extra.*"
                       r"wrong shape \(1\): netcnnaud.0.weight"):  # fmt: skip
        load_syncnet(path)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_and_foreign_files_are_refused(tmp_path):
    evil = _Evil()
    evil.marker = tmp_path / "pwned"
    for name, write in (
        ("pickle.model", lambda p: p.write_bytes(pickle.dumps({"netcnnaud.0.weight": evil}, protocol=2))),
        ("torch.model", lambda p: torch.save({"netcnnaud.0.weight": evil}, p)),
        ("junk.model", lambda p: p.write_bytes(b"not a model at all")),
    ):
        path = tmp_path / name
        write(path)
        with pytest.raises(ValueError, match=rf"{name}: not a torch-saved state_dict .*weights_only=True"):
            load_syncnet(path)
    assert not evil.marker.exists()
    torch.save(SyncNet(), tmp_path / "module.model")  # a whole pickled module, not its state_dict
    with pytest.raises(ValueError, match="module.model: not a torch-saved state_dict"):
        load_syncnet(tmp_path / "module.model")
    torch.save([torch.zeros(1)], tmp_path / "list.model")
    with pytest.raises(ValueError, match="list.model: holds a list, expected a torch-saved state_dict"):
        load_syncnet(tmp_path / "list.model")


def test_status_skips_without_weights_and_checks_the_hash(tmp_path):
    assert lse_status(SyncNetConfig()) == {"status": LSE_SKIPPED}
    weights = tmp_path / "syncnet_v2.model"
    weights.write_bytes(b"weights")
    good = hashlib.sha256(b"weights").hexdigest()
    assert lse_status(SyncNetConfig(str(weights), good.upper())) == {"status": "ready", "sha256": good}
    with pytest.raises(ValueError, match=r"syncnet_v2.model: SHA-256 .* differs"):
        lse_status(SyncNetConfig(str(weights), "0" * 64))
    with pytest.raises(FileNotFoundError, match="nothere.model not found"):
        lse_status(SyncNetConfig(str(tmp_path / "nothere.model"), good))


class EnergyBrightness:
    """A stand-in SyncNet whose embeddings are known: per frame of a window, the lips' mean brightness and the
    audio's log energy (python_speech_features' c0), both mapped to about ±0.5."""

    def __init__(self) -> None:
        rng = np.random.default_rng(1)
        c0 = [syncnet_mfcc((rng.standard_normal(16000) * a).astype(np.int16))[0].mean() for a in (LOUD, QUIET)]
        self.mid, self.half = (c0[0] + c0[1]) / 2, (c0[0] - c0[1]) / 2

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 5, 224, 224) BGR 0-255
        return x.mean(dim=(1, 3, 4)) / 255 - 0.5

    def forward_audio(self, a: torch.Tensor) -> torch.Tensor:  # (B, 1, 13, 20)
        c0 = a[:, 0, 0].reshape(len(a), 5, 4).mean(-1)
        return ((c0 - self.mid) / self.half).clamp(-1, 1) / 2


def _talking(pattern: np.ndarray, delay: int = 0, rng_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames bright when pattern[t] (the mouth "open"), and audio loud in frame t when pattern[t - delay]."""
    rng = np.random.default_rng(rng_seed)
    frames = (
        np.repeat((20 + 200 * pattern).astype(np.uint8)[:, None, None, None], 32, 1).repeat(32, 2).repeat(3, 3)
    )
    amp = np.where(np.roll(pattern, delay), LOUD, QUIET)
    audio = (rng.standard_normal((len(pattern), SPF)) * amp[:, None]).astype(np.int16).ravel()
    return frames, audio


@pytest.mark.parametrize("delay", [0, 3, -2])
def test_offset_search_finds_a_planted_shift(delay):
    pattern = (np.random.default_rng(7).random(60) < 0.5).astype(np.uint8)
    frames, audio = _talking(pattern, delay)
    score = lse_scores(frames, audio, EnergyBrightness())
    # audio `delay` frames late: video window i matches audio window i + delay, i.e. offset -delay
    assert score.offset == -delay
    assert score.curve.shape == (2 * VSHIFT + 1,) and score.dist == pytest.approx(score.curve.min())
    assert score.curve[VSHIFT + delay] == score.dist
    if delay:
        assert score.dist < score.curve[VSHIFT] - 0.5  # LSE-D is clearly lower at the true shift than at 0
    assert score.conf == pytest.approx(np.median(score.curve) - score.dist) and score.conf > 0.5


def test_clip_soundtrack_is_the_renderer_shift():
    """Frames k of a run starting at source bin/frame f are heard with source audio from f·40 ms (the renderer
    drops 80 ms from bin f−2's start): a synced source scores offset 0; without the shift the sound comes two
    frames late (offset −2)."""
    source = np.arange(100 * SPF, dtype=np.int64).astype(np.int16)
    f, n = 7, 30
    np.testing.assert_array_equal(clip_soundtrack(source, f, n), source[f * SPF : (f + n) * SPF])
    assert len(clip_soundtrack(source, 95, 10)) == 10 * SPF  # zero-padded at the end, as the mp4 soundtrack
    with pytest.raises(ValueError, match="bin numbers start at 2"):
        clip_soundtrack(source, 1, 5)

    pattern = (np.random.default_rng(3).random(90) < 0.5).astype(np.uint8)
    src_frames, src_audio = _talking(pattern)  # a perfectly synced source video
    model = EnergyBrightness()
    heard = clip_soundtrack(src_audio, f, 60)
    assert lse_scores(src_frames[f : f + 60], heard, model).offset == 0
    unshifted = src_audio[(f - 2) * SPF : (f + 58) * SPF]  # bin f's window start, without the 80 ms
    assert lse_scores(src_frames[f : f + 60], unshifted, model).offset == -2


def test_too_short_is_a_clear_error():
    with pytest.raises(ValueError, match="more than 5 frames"):
        lse_scores(np.zeros((5, 8, 8, 3), np.uint8), np.zeros(5 * SPF, np.int16), EnergyBrightness())

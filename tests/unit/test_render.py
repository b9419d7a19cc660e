"""Rendering with a tiny in-memory model: files, timing of the soundtrack, fine-tuning, alignment, flat memory."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import wave

import av
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from davs_model.audio import mfcc_bins
from davs_model.face import FaceLandmarker
from davs_model.io.media import read_audio
from davs_model.model import DAVS
from davs_model.rendering import inputs
from davs_model.rendering.finetune import FINETUNED_MODULES, finetune_identity, reconstruction_loss
from davs_model.rendering.render import ModelNotFoundError, load_model_file, render
from davs_model.training.config import ModelConfig
from tests.conftest import REPO

SR = 16000
CLICK_S = 1.0


def tiny_model() -> DAVS:
    torch.manual_seed(0)
    return DAVS(ModelConfig(image_size=64, width=1 / 16, n_words=6), with_discriminators=False).eval()


@pytest.fixture(scope="module")
def model() -> DAVS:
    return tiny_model()


@pytest.fixture(scope="module")
def landmarker() -> FaceLandmarker:
    return FaceLandmarker(upsample=1)


def write_wav(path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(samples.astype(np.int16).tobytes())


def click_track(seconds: float) -> np.ndarray:
    x = (np.random.default_rng(0).standard_normal(int(seconds * SR)) * 50).astype(np.int16)
    x[int(CLICK_S * SR) : int(CLICK_S * SR) + 16] = 20000  # a 1 ms click
    return x


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, model, landmarker):
    tmp = tmp_path_factory.mktemp("render")
    speech = click_track(3.0)
    write_wav(tmp / "click.wav", speech)
    out = {
        k: tmp / name for k, name in [("mp4", "a.mp4"), ("sbs", "a_sbs.mp4"), ("png", "a.png"), ("gif", "a.gif")]
    }
    result = render(
        model,
        "demo",
        out["mp4"],
        audio=tmp / "click.wav",
        side_by_side=out["sbs"],
        grid=out["png"],
        gif=out["gif"],
        finetune_steps=0,
        landmarker=landmarker,
        grid_frames=4,
    )
    return result, out, speech


def test_mp4_has_one_frame_per_bin_at_25_fps_and_aac(rendered):
    result, out, speech = rendered
    n = len(mfcc_bins(speech, SR))
    assert result.n_frames == n and result.mode == "audio"
    with av.open(str(out["mp4"])) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.codec_context.name == "h264" and a.codec_context.name == "aac"
        assert v.average_rate == 25
        assert float(a.duration * a.time_base) == pytest.approx(n / 25, abs=1e-3)  # as long as the video
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(v)]
    assert len(frames) == n and frames[0].shape == (512, 512, 3)  # the whole 512² photo (paste-back)
    decoded = read_audio(out["mp4"], SR)
    assert 0 <= len(decoded) - n * SR / 25 < 1024  # the decoder adds at most the last AAC frame's padding


def test_soundtrack_starts_80_ms_into_the_input(rendered):
    _, out, _ = rendered
    decoded = read_audio(out["mp4"], SR).astype(np.float64)
    template = np.zeros(400)
    template[200:216] = 1.0
    corr = np.correlate(np.abs(decoded), template, mode="valid")
    click_at = (np.argmax(corr) + 200) / SR
    assert click_at == pytest.approx(CLICK_S - 0.080, abs=0.002)


def test_side_by_side_grid_and_gif(rendered):
    result, out, _ = rendered
    with av.open(str(out["sbs"])) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (3 * 64, 64)
        assert sum(1 for _ in c.decode(v)) == result.n_frames
        assert len(c.streams.audio) == 1
    grid = cv2.imread(str(out["png"]))
    assert grid.shape == (2 * 64, 5 * 64, 3)  # identity + 4 stills; waveform panels below
    gif = Image.open(out["gif"])
    assert gif.n_frames == result.n_frames and gif.info["duration"] == 40


def test_finetune_changes_only_identity_encoder_and_decoder(model):
    m = tiny_model()
    a = torch.rand(3, 64, 64)
    wid = m.encode_audio(torch.randn(1, 5, 20, 12))[0].detach()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        loss_before = float(reconstruction_loss(m, a, wid[0]))
    losses = finetune_identity(m, a, wid, steps=5)
    with torch.no_grad():
        loss_after = float(reconstruction_loss(m, a, wid[0]))
    assert len(losses) == 5 and losses[0] == pytest.approx(loss_before, rel=1e-5)
    assert loss_after < loss_before
    changed = {k.split(".")[0] for k, v in m.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and changed <= set(FINETUNED_MODULES)
    assert all(p.grad is None for p in m.parameters()) and not m.training


def test_render_leaves_the_given_model_unchanged(model, tmp_path, landmarker):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    write_wav(tmp_path / "s.wav", click_track(0.6))
    result = render(model, "demo", tmp_path / "o.mp4", audio=tmp_path / "s.wav", landmarker=landmarker)
    assert len(result.finetune_losses) == 5
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_any_photo_is_aligned(tmp_path, landmarker):
    import skimage.data

    photo = tmp_path / "astronaut.jpg"
    cv2.imwrite(str(photo), skimage.data.astronaut()[:, :, ::-1])  # 512×512
    aligned = inputs.load_identity(photo, landmarker)
    assert aligned.shape == (256, 256, 3) and aligned.dtype == np.uint8
    demo = inputs.load_identity("demo", landmarker)  # the same photo, in memory
    assert np.abs(aligned.astype(float) - demo).mean() < 8  # same alignment, up to JPEG loss


def test_photo_without_a_face_is_a_clear_error(tmp_path, landmarker):
    photo = tmp_path / "wall.png"
    cv2.imwrite(str(photo), np.full((300, 300, 3), 200, np.uint8))
    with pytest.raises(inputs.NoFaceError, match="no face found"):
        inputs.load_identity(photo, landmarker)


def test_missing_model_file_names_the_fix(tmp_path):
    with pytest.raises(ModelNotFoundError, match="snakemake train"):
        load_model_file(tmp_path / "nope.safetensors")


def test_chunked_mfcc_equals_whole_signal():
    x = (np.random.default_rng(1).standard_normal(SR * 3 + 77) * 3000).astype(np.int16)
    chunks = np.concatenate(list(inputs.iter_mfcc_bins(x, chunk_bins=7)))
    assert np.array_equal(chunks, mfcc_bins(x, SR).astype(np.float32))
    assert inputs.count_bins(x) == len(chunks)


RSS_SCRIPT = textwrap.dedent(
    """
    import resource, sys, wave
    import numpy as np, torch
    from davs_model.model import DAVS
    from davs_model.rendering.render import render
    from davs_model.training.config import ModelConfig
    seconds, out = float(sys.argv[1]), sys.argv[2]
    x = (np.random.default_rng(0).standard_normal(int(seconds * 16000)) * 3000).astype(np.int16)
    with wave.open(out + ".wav", "wb") as w:
        w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000); w.writeframes(x.tobytes())
    torch.manual_seed(0)
    m = DAVS(ModelConfig(image_size=64, width=1 / 16, n_words=6), with_discriminators=False).eval()
    r = render(m, "demo", out, audio=out + ".wav", finetune_steps=0)
    print(r.n_frames, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


def test_peak_memory_is_flat_in_the_audio_length(tmp_path):
    peaks = {}
    for seconds in (4, 40):
        proc = subprocess.run(
            [sys.executable, "-c", RSS_SCRIPT, str(seconds), str(tmp_path / f"r{seconds}.mp4")],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        frames, peaks[seconds] = (int(v) for v in proc.stdout.split()[-2:])
        assert frames == seconds * 25 - 5
    assert peaks[40] <= 1.2 * peaks[4], peaks


def test_cli_render_writes_every_output(tmp_path, model, capsys, monkeypatch):
    import davs_model.rendering.render as render_module
    from davs_model.cli import main
    from davs_model.training.checkpoint import save_model

    ckpt = save_model(model, tmp_path / "m.safetensors", step=0)
    write_wav(tmp_path / "s.wav", click_track(0.6))
    out = {k: tmp_path / f"o{k}" for k in (".mp4", "_sbs.mp4", ".png", ".gif")}
    argv = ["render", "--face", "demo", "--audio", str(tmp_path / "s.wav"), "-o", str(out[".mp4"])]
    argv += [
        "--checkpoint",
        str(ckpt),
        "--no-finetune",
        "--wid-scale",
        "1.0",
        "--side-by-side",
        str(out["_sbs.mp4"]),
    ]
    monkeypatch.setattr(render_module, "has_fast_bf16", lambda device: False)
    assert main([*argv, "--grid", str(out[".png"]), "--gif", str(out[".gif"])]) == 0
    assert all(p.stat().st_size > 0 for p in out.values())
    assert "--bf16" not in capsys.readouterr().out
    crop = tmp_path / "crop.mp4"
    argv = ["render", "--face", "demo", "--audio", str(tmp_path / "s.wav"), "-o", str(crop), "--crop-only"]
    monkeypatch.setattr(render_module, "has_fast_bf16", lambda device: True)  # where it has: a tip to use it
    assert main([*argv, "--checkpoint", str(ckpt), "--no-finetune"]) == 0
    assert "tip: this machine computes bfloat16 natively: --bf16" in capsys.readouterr().out
    with av.open(str(crop)) as c:
        assert (c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height) == (64, 64)


def test_cli_driving_video_flag_and_its_old_alias():
    from davs_model.cli import build_parser

    base = ["render", "--face", "demo", "-o", "o.mp4"]
    assert build_parser().parse_args([*base, "--driving-video", "d.mp4"]).video == "d.mp4"
    assert build_parser().parse_args([*base, "--video", "d.mp4"]).video == "d.mp4"
    assert "--video" not in build_parser()._subparsers._group_actions[0].choices["render"].format_help()


def test_cli_render_without_a_model_names_the_fix(tmp_path, capsys):
    from davs_model.cli import main

    missing = str(tmp_path / "none.safetensors")
    assert (
        main(
            ["render", "--face", "demo", "--audio", "demo", "-o", str(tmp_path / "o.mp4"), "--checkpoint", missing]
        )
        == 2
    )
    assert "snakemake train" in capsys.readouterr().err


def test_video_driven_with_an_identity_video(tmp_path, model, landmarker):
    from davs_model.demo.dataset import DemoConfig, make_demo_clip

    clip = make_demo_clip(DemoConfig(), "ABOUT", "test", 1, tmp_path / "ABOUT_00001.mp4")  # 29 frames + speech
    out = tmp_path / "v.mp4"
    result = render(
        model, clip, out, video=clip, side_by_side=tmp_path / "v_sbs.mp4", finetune_steps=1, landmarker=landmarker
    )
    assert result.mode == "video" and result.n_frames == 29 - 2  # frame i shows driving frame i + 2
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(c.streams.video[0])) == 27
        a = c.streams.audio[0]  # the driving video's own sound, from 80 ms on
        assert float(a.duration * a.time_base) == pytest.approx(27 / 25, abs=1e-3)

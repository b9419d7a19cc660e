"""The embedded demo dataset: espeak-ng speech, the talking astronaut, LRW-shaped clips."""

from __future__ import annotations

import builtins
import os
from pathlib import Path

import numpy as np
import pytest

from davs_model.demo.dataset import (
    AUDIO_SAMPLES,
    DemoConfig,
    clip_spec,
    demo_clip_paths,
    make_demo_clip,
    synthesize_clip_audio,
)
from davs_model.demo.face import mouth_box, mouth_opening, render_talking_face
from davs_model.demo.speech import synthesize

CFG = DemoConfig(words=("PEOPLE",), clips_per_word={"train": 1}, seed=7)


def _frame_envelope(x: np.ndarray, n: int, hop: int = 640) -> np.ndarray:
    """Independent check: plain RMS over each video frame's 40 ms of audio."""
    x = np.asarray(x, np.float64)
    return np.array([np.sqrt(np.mean(x[t * hop : (t + 1) * hop] ** 2)) for t in range(n)])


def _decode(path: Path) -> dict:
    import av

    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        info = {
            "fps": float(vs.average_rate),
            "rate": c.streams.audio[0].rate,
        }
        info["frames"] = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        info["audio"] = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
    return info


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "PEOPLE" / "train" / "PEOPLE_00001.mp4"
    return make_demo_clip(CFG, "PEOPLE", "train", 1, path)


# ----------------------------------------------------------------------------- speech


def test_synthesize_gives_a_word_of_plausible_length():
    x, sr = synthesize("about", "en-us")
    assert sr == 16000 and x.dtype == np.int16 and x.ndim == 1
    assert 0.2 < len(x) / sr < 1.2
    assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) > 500  # not silent
    assert np.abs(x).max() < 32767  # not clipped


def test_voices_differ_and_synthesis_is_repeatable():
    a, _ = synthesize("money", "en-us")
    b, _ = synthesize("money", "en+f3")
    c, _ = synthesize("money", "en-gb-x-rp+m3")
    assert np.array_equal(a, synthesize("money", "en-us")[0])

    def centroid(x):
        mag = np.abs(np.fft.rfft(x.astype(np.float64)))
        return float((mag * np.fft.rfftfreq(len(x), 1 / 16000)).sum() / mag.sum())

    cents = [centroid(x) for x in (a, b, c)]
    assert min(abs(p - q) for i, p in enumerate(cents) for q in cents[i + 1 :]) > 20, cents
    assert not np.array_equal(synthesize("money", rate_wpm=200)[0], synthesize("money")[0])


def test_unknown_voice_is_a_clear_error():
    with pytest.raises(ValueError, match="voice not found"):
        synthesize("about", "xx-not-a-voice")


# ----------------------------------------------------------------------------- config and paths


def test_demo_clip_paths_from_config_only(tmp_path, monkeypatch):
    root = tmp_path / "not-there"

    def no_disk(*args, **kwargs):
        raise AssertionError("demo_clip_paths touched the disk")

    for name in ("stat", "lstat", "listdir", "scandir", "mkdir", "makedirs"):
        monkeypatch.setattr(os, name, no_disk)
    monkeypatch.setattr(builtins, "open", no_disk)
    cfg = DemoConfig()
    paths = demo_clip_paths(cfg, root)
    monkeypatch.undo()

    assert len(paths) == 6 * (6 + 2 + 2) == len(set(paths))
    assert not root.exists()
    assert paths[0] == root / "ABOUT" / "train" / "ABOUT_00001.mp4"
    assert root / "ABOUT" / "train" / "ABOUT_00006.mp4" in paths
    assert root / "PEOPLE" / "test" / "PEOPLE_00002.mp4" in paths
    assert root / "ABOUT" / "val" / "ABOUT_00003.mp4" not in paths
    for p in paths:
        word, split, name = p.relative_to(root).parts
        assert split in ("train", "val", "test") and name.startswith(word + "_")
        assert len(name) == len(word) + len("_00001.mp4")


def test_config_validation_and_hash():
    assert hash(DemoConfig()) == hash(DemoConfig())
    assert DemoConfig(clips_per_word={"test": 1, "train": 2}).clips_per_word == {
        "train": 2,
        "test": 1,
    }
    with pytest.raises(ValueError):
        DemoConfig(words=("about",))
    with pytest.raises(ValueError):
        DemoConfig(clips_per_word={"dev": 1})


def test_clip_audio_is_lrw_shaped_and_centred():
    spec = clip_spec(CFG, "PEOPLE", "train", 1)
    audio, duration = synthesize_clip_audio(CFG, spec)
    assert audio.dtype == np.int16 and len(audio) == AUDIO_SAMPLES
    assert len(audio) - 600 >= 18800  # DAVS LRW MFCC: bins 2..26 after the 600-sample trim
    assert 0.2 < duration < 1.0
    x = audio.astype(np.float64)
    assert np.count_nonzero(audio) > 0.9 * len(audio)  # low noise, never digital silence
    energy = x**2
    centre = (energy * np.arange(len(x))).sum() / energy.sum() / 16000
    assert abs(centre - 0.58) < 0.12  # the word sits on the middle of the 1.16 s video
    assert np.sqrt(np.mean(x[:1000] ** 2)) < 60  # low noise before the word


# ----------------------------------------------------------------------------- face


def test_mouth_opening_follows_the_speech_envelope():
    spec = clip_spec(CFG, "PEOPLE", "train", 1)
    audio, _ = synthesize_clip_audio(CFG, spec)
    a = mouth_opening(audio, 16000, 29)
    assert a.shape == (29,) and a.min() >= 0 and a.max() == pytest.approx(1.0)
    env = _frame_envelope(audio, 29)
    assert np.corrcoef(a, env)[0, 1] > 0.8
    assert np.all(mouth_opening(np.zeros(20480, np.int16), 16000, 29) == 0)


def _inside_outside(a: np.ndarray, b: np.ndarray, box) -> tuple[float, float]:
    x0, y0, x1, y1 = box
    diff = np.abs(a.astype(np.float64) - b).mean(axis=2)
    inside = np.zeros(diff.shape, bool)
    inside[y0:y1, x0:x1] = True
    return float(diff[inside].mean()), float(diff[~inside].mean())


@pytest.mark.parametrize("variant", [0, 1])
def test_mouth_region_changes_more_than_the_rest(variant):
    # same seed, same frame index → same head pose: only the mouth (and with it the jaw) moves
    (closed,) = render_talking_face(np.array([0.0]), seed=1, variant=variant)
    (opened,) = render_talking_face(np.array([1.0]), seed=1, variant=variant)
    inside, outside = _inside_outside(closed, opened, mouth_box(variant))
    assert inside > 10 and inside > 5 * outside, (inside, outside)


def test_speaker_variants_differ():
    a = render_talking_face(np.zeros(1), seed=0, variant=0)[0].astype(np.float64)
    b = render_talking_face(np.zeros(1), seed=0, variant=1)[0].astype(np.float64)
    assert np.abs(a - b).mean() > 10


# ----------------------------------------------------------------------------- one clip


def test_clip_decodes_like_lrw(clip):
    d = _decode(clip)
    assert len(d["frames"]) == 29 and d["fps"] == 25
    assert all(f.shape == (256, 256, 3) for f in d["frames"])
    assert d["rate"] == 16000
    assert abs(len(d["audio"]) - AUDIO_SAMPLES) <= 1024  # ~1.28 s
    txt = clip.with_suffix(".txt").read_text().splitlines()
    assert txt[0] == "Text: PEOPLE"
    assert any(line.startswith("Duration: 0.") and line.endswith(" seconds") for line in txt)


def test_clip_mouth_moves_with_the_audio(clip):
    d = _decode(clip)
    frames, audio = d["frames"], d["audio"]
    env = _frame_envelope(audio, 29)
    # Visible opening: how dark the mouth box is (the opened gap is the darkest region there).
    x0, y0, x1, y1 = mouth_box(clip_spec(CFG, "PEOPLE", "train", 1).speaker)
    dark = np.array([-f[y0:y1, x0:x1].astype(np.float64).mean() for f in frames])
    assert np.corrcoef(dark, env)[0, 1] > 0.8
    # with the head moving (≤ 3 px) the rest of the frame changes too, but much less
    closed, opened = frames[int(np.argmin(env))], frames[int(np.argmax(env))]
    inside, outside = _inside_outside(closed, opened, (x0, y0, x1, y1))
    assert inside > 10 and inside > 2.5 * outside, (inside, outside)


def test_dlib_finds_the_face_in_every_frame(clip):
    import dlib

    from davs_model.demo.face import _predictor_path

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(_predictor_path()))
    d = _decode(clip)
    gaps = []
    for f in d["frames"]:
        rgb = np.ascontiguousarray(f[:, :, ::-1])
        rects = detector(rgb, 0)
        assert len(rects) == 1
        assert 90 < rects[0].width() < 160
        pts = np.array([(p.x, p.y) for p in predictor(rgb, rects[0]).parts()], float)
        gaps.append(pts[65:68, 1].mean() - pts[61:64, 1].mean())
    env = _frame_envelope(d["audio"], 29)
    # the detector sees the inner lips further apart when the speech is loud
    assert gaps[int(np.argmax(env))] > gaps[int(np.argmin(env))] + 3


def test_same_seed_same_clip(clip, tmp_path):
    again = make_demo_clip(CFG, "PEOPLE", "train", 1, tmp_path / "again.mp4")
    a, b = _decode(clip), _decode(again)
    assert np.array_equal(a["audio"], b["audio"])
    assert all(np.array_equal(x, y) for x, y in zip(a["frames"], b["frames"], strict=True))
    other = DemoConfig(words=CFG.words, clips_per_word=CFG.clips_per_word, seed=8)
    s1, s2 = clip_spec(CFG, "PEOPLE", "train", 1), clip_spec(other, "PEOPLE", "train", 1)
    assert s1 != s2
    assert not np.array_equal(synthesize_clip_audio(CFG, s1)[0], synthesize_clip_audio(other, s2)[0])


def test_speech_is_independent_of_what_came_before():
    first, _ = synthesize("house", "en-us")
    synthesize("because people have money", "en+f3", rate_wpm=120)
    assert np.array_equal(first, synthesize("house", "en-us")[0])


def test_broken_library_is_a_clear_error(monkeypatch, tmp_path):
    import espeakng_loader

    from davs_model.demo import speech

    fake = tmp_path / "libespeak-ng.so"
    fake.write_bytes(b"not a library")
    monkeypatch.setattr(espeakng_loader, "get_library_path", lambda: str(fake))
    with pytest.raises(RuntimeError, match=str(fake)):
        speech._Espeak()

"""davs_model.io.clip_reader: one open of a clip gives what probe, iter_video_frames and read_audio give (bit for
bit), and the preprocessing pipeline opens each clip's file once for pass 1 and the audio."""

from __future__ import annotations

import logging

import av
import numpy as np
import pytest

from davs_model.io import media
from davs_model.io.clip_reader import open_clip
from davs_model.io.media import MediaError, iter_video_frames, probe, read_audio
from tests.unit.test_media import SR, H, W, decode_index, make_video


def _outcome(fn):
    """fn()'s value, or its MediaError's reason and message: what two ways of reading must agree on."""
    try:
        return "ok", fn()
    except MediaError as e:
        return "error", e.reason, str(e)


def _same(a, b) -> bool:
    if a[0] == "error" or b[0] == "error":
        return a == b
    x, y = a[1], b[1]
    if isinstance(x, list):
        return len(x) == len(y) and all(
            np.array_equal(f, g) and f.dtype == g.dtype for f, g in zip(x, y, strict=True)
        )
    return x.dtype == y.dtype and np.array_equal(x, y)


def check_equal(p, fps=25.0, sample_rate=16000, threads=0, max_duration_s=None):
    """open_clip's info, frames and audio against the three calls; returns the reader (read and closed)."""
    with open_clip(p, fps, sample_rate, threads) as r:
        assert r.info == probe(p)
        assert _same(
            _outcome(lambda: list(r.frames())), _outcome(lambda: list(iter_video_frames(p, fps, threads)))
        )
        assert _same(
            _outcome(lambda: r.audio(max_duration_s)), _outcome(lambda: read_audio(p, sample_rate, max_duration_s))
        )
        assert r.closed  # read to the end of the file: closed before the end of the `with`
    return r


@pytest.mark.parametrize(
    ("n", "src_fps", "audio", "threads", "max_duration_s"),
    [
        (36, 30, "stereo", 0, None),
        (36, 30, "stereo", 1, 36 / 30),
        (25, 25, "mono", 1, 0.5),
        (61, 60, "stereo", 0, 0.8),
    ],
)
def test_equals_probe_frames_and_audio(tmp_path, n, src_fps, audio, threads, max_duration_s):
    p = make_video(tmp_path / "a.mp4", n_frames=n, fps=src_fps, audio=audio)
    check_equal(p, threads=threads, max_duration_s=max_duration_s)
    check_equal(p, fps=50.0, sample_rate=8000, threads=threads, max_duration_s=max_duration_s)
    with open_clip(p) as r:  # a 44.1 kHz track (stereo: its first channel) -> 16 kHz
        assert (r.info.audio_sample_rate, r.info.audio_channels) == (SR, 2 if audio == "stereo" else 1)
        if max_duration_s is not None:
            assert len(r.audio(max_duration_s)) == round(max_duration_s * 16000)


def test_rotation(tmp_path):
    p = tmp_path / "rot.mp4"
    try:
        make_video(p, n_frames=10, fps=25, rotation=-90)
    except (AttributeError, NotImplementedError) as e:  # pragma: no cover - old PyAV
        pytest.skip(f"PyAV cannot write a display matrix: {e}")
    check_equal(p)
    with open_clip(p) as r:
        assert r.info.rotation_deg == 90
        frames = list(r.frames())
    assert frames[0].shape == (W, H, 3) and [decode_index(np.rot90(f)) for f in frames] == list(range(10))


def test_audio_before_the_frames(tmp_path):
    """audio() first: the rest of the file is demuxed for the audio alone; the frames are not read after it."""
    p = make_video(tmp_path / "a.mp4", n_frames=40, fps=30)
    with open_clip(p, threads=1) as r:
        assert np.array_equal(r.audio(1.0), read_audio(p, max_duration_s=1.0))
        assert np.array_equal(r.audio(), read_audio(p))  # again, untrimmed
        assert r.closed
        with pytest.raises(RuntimeError, match="after audio"):
            r.frames()
    # frames part-read: the audio is still whole, and the frames cannot go on
    with open_clip(p) as r:
        frames = r.frames()
        assert decode_index(next(frames)) == 0
        assert np.array_equal(r.audio(), read_audio(p))
        with pytest.raises(RuntimeError, match="audio"):
            list(frames)


def test_frames_once_and_abandoned(tmp_path):
    p = make_video(tmp_path / "a.mp4", n_frames=30, fps=25)
    r = open_clip(p)
    frames = r.frames()
    with pytest.raises(RuntimeError, match="once"):
        r.frames()
    assert decode_index(next(frames)) == 0
    frames.close()  # abandoned: the audio is still read to its end
    assert not r.closed and np.array_equal(r.audio(), read_audio(p)) and r.closed
    r.close()  # again: nothing
    with open_clip(p) as r:
        assert decode_index(next(r.frames())) == 0
    with pytest.raises(RuntimeError, match="after close"):  # not read to its end: not half of it
        r.audio()


def test_without_audio(tmp_path):
    p = make_video(tmp_path / "a.mp4", n_frames=20, fps=25, audio=None)
    with open_clip(p) as r:
        assert not r.info.has_audio and r.info == probe(p)
        assert _same(("ok", list(r.frames())), ("ok", list(iter_video_frames(p))))
        assert r.closed
        with pytest.raises(MediaError) as ei:
            r.audio()
    assert ei.value.reason == "no_audio_stream" and "a.mp4" in str(ei.value)


def test_an_audio_failure_does_not_stop_the_frames(tmp_path, monkeypatch):
    """The resampler fails on the 3rd audio frame: every frame still comes; audio() raises read_audio's error."""
    p = make_video(tmp_path / "a.mp4", n_frames=30, fps=25)
    real, calls = media._AudioSink.add, []

    def failing(self, frame):
        calls.append(frame)
        if len(calls) == 3:
            raise MediaError("unreadable", self.path, "audio resampling failed: test")
        real(self, frame)

    monkeypatch.setattr(media._AudioSink, "add", failing)
    with open_clip(p) as r:
        assert _same(("ok", list(r.frames())), ("ok", list(iter_video_frames(p))))
        with pytest.raises(MediaError, match="resampling failed") as ei:
            r.audio()
    assert ei.value.reason == "unreadable" and len(calls) == 3


def test_truncated_file_same_frames_audio_and_warnings(tmp_path, caplog):
    p = make_video(tmp_path / "a.mp4", n_frames=60, fps=25, faststart=True)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        with open_clip(p) as r:
            got = r.info, _outcome(lambda: list(r.frames())), _outcome(r.audio)
        new = sorted(caplog.messages)
        caplog.clear()
        want = probe(p), _outcome(lambda: list(iter_video_frames(p))), _outcome(lambda: read_audio(p))
        old = sorted(caplog.messages)
    assert got[0] == want[0] and _same(got[1], want[1]) and _same(got[2], want[2])
    assert 0 < len(got[1][1]) < 60 and r.closed
    assert new == old and any("decoding stopped" in m for m in new), new  # here: a cut audio packet


@pytest.mark.parametrize("cut", ["moov", "header"])
def test_truncated_before_the_frames(tmp_path, cut):
    p = make_video(tmp_path / "a.mp4", n_frames=60, fps=25, faststart=cut == "header")
    data = p.read_bytes()
    p.write_bytes(data[: data.index(b"mdat") + 64] if cut == "header" else data[: len(data) // 2])
    if cut == "moov":  # no index: the open fails, as probe's
        with pytest.raises(MediaError) as ei:
            open_clip(p)
        assert ei.value.reason == "truncated"
    else:  # nothing decodes: the info as probe's, then the frames' and audio's errors as the three calls'
        check_equal(p)


@pytest.mark.parametrize("name", ["empty.mp4", "text.mp4", "no.mp4"])
def test_unusable_files_raise_as_probe(tmp_path, name):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 100)
    p = tmp_path / name
    assert _outcome(lambda: open_clip(p))[1:] == _outcome(lambda: probe(p))[1:]
    with pytest.raises(ValueError, match="threads"):
        open_clip(p, threads=-1)


def test_the_pipeline_opens_each_clip_once(tmp_path, monkeypatch):
    """process_clip: one av.open for pass 1 and the audio; every reader closed, a rejected clip's too."""
    from davs_model.audio import mfcc_bins
    from davs_model.config import PreprocessConfig, SourceConfig
    from davs_model.face import FaceLandmarker
    from davs_model.io import clip_reader
    from davs_model.preprocess import pipeline
    from davs_model.preprocess.sources import Clip
    from tests.bad_inputs import _clip, talking_frames, write_video

    good, mute = tmp_path / "good.mp4", tmp_path / "mute.mp4"
    frames = talking_frames(29, seed=1)
    _clip(good, frames)
    write_video(mute, frames[:5], audio=None)
    opens, readers, real_open = [], [], av.open

    def counted(*args, **kw):
        opens.append(str(args[0]))
        return real_open(*args, **kw)

    def recorded(*args, **kw):
        readers.append(clip_reader.open_clip(*args, **kw))
        return readers[-1]

    monkeypatch.setattr(av, "open", counted)
    monkeypatch.setattr(pipeline, "open_clip", recorded)
    src, cfg, landmarker = SourceConfig(kind="folder", root="/"), PreprocessConfig(), FaceLandmarker()
    record, qc = pipeline.process_clip(Clip("x/good", str(good), "x", "folder", "train"), src, cfg, landmarker)
    assert (qc.status, qc.frames, record.frames_bgr.frames is not None) == ("ok", 29, True)
    assert opens == [str(good)]
    max_duration = 29 / cfg.fps if src.effective_trim_to_video else None
    audio = read_audio(good, cfg.sample_rate_hz, max_duration_s=max_duration)  # what the pipeline read before
    want = pipeline._select_bins(mfcc_bins(audio, cfg.sample_rate_hz, trim_end=src.effective_trim_end), 29, False)
    assert np.array_equal(record.mfcc, want[0]) and len(want[0]) > 20
    record, qc = pipeline.process_clip(Clip("x/mute", str(mute), "x", "folder", "train"), src, cfg, landmarker)
    assert record is None and (qc.status, qc.reason) == ("rejected", "no_audio_stream")
    assert opens[-1] == str(mute) and len(readers) == 2 and all(r.closed for r in readers)

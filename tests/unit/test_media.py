"""Tests for davs_model.io.media on small videos written with PyAV in tmp_path.

Each frame encodes its index in binary: 8 black/white 16x16 cells in a row (cell j = bit j), so
the index survives H.264 compression and resampling can be checked exactly.
"""

from __future__ import annotations

import math
from fractions import Fraction

import av
import numpy as np
import pytest

from davs_model.io.media import MediaError, iter_video_frames, probe, read_audio

H, W, CELL = 32, 128, 16
SR = 44100


def code_image(i: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    for j in range(8):
        if (i >> j) & 1:
            img[8:24, j * CELL : (j + 1) * CELL] = 255
    img[:4, :4] = (0, 0, 255)  # red marker, top-left of the stored frame
    return img


def decode_index(img: np.ndarray) -> int:
    assert img.shape == (H, W, 3)
    return sum(1 << j for j in range(8) if img[8:24, j * CELL : (j + 1) * CELL].mean() > 127)


def make_video(
    path,
    n_frames: int = 30,
    fps: int = 25,
    *,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    audio: str | None = "stereo",
    rotation: int | None = None,
    faststart: bool = False,
    sr: int = SR,
):
    """H.264 (+ AAC at ``sr``, 44.1 kHz: ch0 440 Hz, ch1 1000 Hz) mp4; ``pts`` in ``time_base`` for VFR."""
    opts = {"movflags": "faststart"} if faststart else {}
    out = av.open(str(path), "w", options=opts)
    v = out.add_stream("libx264", rate=fps)
    v.width, v.height, v.pix_fmt = W, H, "yuv420p"
    v.options = {"crf": "12"}
    if time_base is not None:
        v.codec_context.time_base = time_base
        v.time_base = time_base
    if rotation is not None:
        v.set_display_rotation(rotation)
    a = out.add_stream("aac", rate=sr, layout=audio) if audio else None
    for i in range(n_frames):
        f = av.VideoFrame.from_ndarray(code_image(i), format="bgr24")
        f.pts = pts[i] if pts is not None else i
        if time_base is not None:
            f.time_base = time_base
        for p in v.encode(f):
            out.mux(p)
    for p in v.encode():
        out.mux(p)
    if a is not None:
        ns = int(round(n_frames / fps * sr))
        t = np.arange(ns) / sr
        ch = [0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 1000 * t)]
        data = np.stack(ch[: 2 if audio == "stereo" else 1]).astype(np.float32)
        for s in range(0, ns, 1024):
            chunk = np.ascontiguousarray(data[:, s : s + 1024])
            fr = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=audio)
            fr.sample_rate, fr.pts = sr, s
            for p in a.encode(fr):
                out.mux(p)
        for p in a.encode():
            out.mux(p)
    out.close()
    return path


def expected_indices(times: list[Fraction], end: Fraction, fps: int) -> list[int]:
    """Reference: nearest source frame in time (ties -> earlier), round(span * fps) outputs."""
    n_out = max(1, math.floor(end * fps + Fraction(1, 2)))
    res = []
    for k in range(n_out):
        t = Fraction(k, fps)
        res.append(min(range(len(times)), key=lambda j: (abs(times[j] - t), j)))
    return res


def indices(path, fps=25.0):
    return [decode_index(f) for f in iter_video_frames(path, fps)]


def test_25fps_passes_through_one_to_one(tmp_path):
    p = make_video(tmp_path / "a.mp4", n_frames=40, fps=25)
    frames = list(iter_video_frames(p))
    assert [decode_index(f) for f in frames] == list(range(40))
    assert all(f.dtype == np.uint8 and f.shape == (H, W, 3) for f in frames)
    b, g, r = frames[0][1, 1].tolist()  # BGR order: the red marker is ~(0, 0, 255)
    assert r > 200 and b < 40 and g < 40


def test_decoding_in_the_calling_thread_gives_the_same_frames(tmp_path):
    p = make_video(tmp_path / "a.mp4", n_frames=30, fps=30)
    one = list(iter_video_frames(p, threads=1))
    default = list(iter_video_frames(p))
    assert len(one) == len(default) == 25
    assert all(np.array_equal(a, b) for a, b in zip(one, default, strict=True))
    with pytest.raises(ValueError, match="threads must be >= 0"):
        next(iter_video_frames(p, threads=-1))


@pytest.mark.parametrize("src_fps,n", [(30, 36), (30, 34), (60, 61), (15, 20), (50, 50)])
def test_constant_rate_resampling_is_nearest_in_time(tmp_path, src_fps, n):
    p = make_video(tmp_path / "a.mp4", n_frames=n, fps=src_fps)
    times = [Fraction(i, src_fps) for i in range(n)]
    want = expected_indices(times, Fraction(n, src_fps), 25)
    assert indices(p) == want
    if src_fps == 30 and n == 36:  # spot check by hand: 1.44 s -> 30 frames, 5 of 6 kept
        assert want[:7] == [0, 1, 2, 4, 5, 6, 7]
        assert len(want) == 30


def test_variable_frame_rate(tmp_path):
    tb = Fraction(1, 1000)
    pts = [0, 30, 50, 100, 170, 180, 190, 260, 300, 400, 410, 440]
    p = make_video(tmp_path / "vfr.mp4", n_frames=len(pts), pts=pts, time_base=tb, audio=None)
    times = [Fraction(x, 1000) for x in pts]
    # the muxer stores the last frame's duration as the nominal 1/25 s: span 0.48 s -> 12 frames
    assert indices(p) == expected_indices(times, Fraction(480, 1000), 25)


def test_other_output_rate(tmp_path):
    p = make_video(tmp_path / "a.mp4", n_frames=25, fps=25, audio=None)
    got = indices(p, fps=50)
    assert got == [i // 2 for i in range(50)]  # every frame twice (midpoint ties -> earlier)


def test_duplicates_are_independent_arrays(tmp_path):
    p = make_video(tmp_path / "a.mp4", n_frames=5, fps=25, audio=None)
    frames = list(iter_video_frames(p, fps=50))
    frames[0][:] = 7
    assert decode_index(frames[1]) == 0 and frames[1].max() > 200


def test_probe(tmp_path):
    p = make_video(tmp_path / "a.mp4", n_frames=36, fps=30)
    info = probe(p)
    assert (info.width, info.height) == (W, H)
    assert info.fps == pytest.approx(30.0)
    assert info.n_frames == 36
    assert info.duration_s == pytest.approx(1.2, abs=0.02)
    assert info.has_audio and info.audio_sample_rate == SR and info.audio_channels == 2
    assert info.rotation_deg == 0


def test_probe_without_audio(tmp_path):
    info = probe(make_video(tmp_path / "a.mp4", audio=None))
    assert not info.has_audio and info.audio_sample_rate == 0 and info.audio_channels == 0


def _tone_amplitude(x: np.ndarray, sr: int, freq: float) -> float:
    t = np.arange(len(x)) / sr
    return float(np.abs(np.dot(x, np.exp(-2j * np.pi * freq * t))) * 2 / len(x))


def test_read_audio_first_channel_16k(tmp_path):
    p = make_video(tmp_path / "a.mp4", n_frames=50, fps=25)  # 2.0 s
    x = read_audio(p)
    assert x.dtype == np.int16 and x.ndim == 1
    # AAC pads the end to a whole 1024-sample frame (<= 372 samples at 16 kHz); priming is removed
    assert 32000 <= len(x) <= 32000 + math.ceil(1024 * 16000 / SR) + 1
    xf = x[1000:31000].astype(np.float64) / 32768
    a440, a1000 = _tone_amplitude(xf, 16000, 440), _tone_amplitude(xf, 16000, 1000)
    assert a440 == pytest.approx(0.5, abs=0.03)  # channel 0 only ...
    assert a1000 < 0.01  # ... channel 1 (1000 Hz) absent: no downmix


def test_read_audio_trim_and_rate(tmp_path):
    p = make_video(tmp_path / "a.mp4", n_frames=29, fps=25)
    assert len(read_audio(p, max_duration_s=29 / 25)) == 18560
    full = read_audio(p, sample_rate=8000)
    assert 9280 <= len(full) <= 9280 + 200
    assert np.array_equal(read_audio(p, 8000, max_duration_s=0.5), full[:4000])


def test_read_audio_mono_source(tmp_path):
    p = make_video(tmp_path / "a.mp4", n_frames=25, fps=25, audio="mono")
    x = read_audio(p, max_duration_s=1.0)
    assert len(x) == 16000
    assert _tone_amplitude(x[500:15500] / 32768, 16000, 440) == pytest.approx(0.5, abs=0.03)


def _resampled(frames, rate: int = 16000) -> np.ndarray:
    """What FFmpeg's resampler gives: s16p at ``rate``, source layout kept, plane 0."""
    r = av.AudioResampler(format="s16p", layout=frames[0].layout, rate=rate)
    out = [o.to_ndarray()[0] for f in [*frames, None] for o in r.resample(f)]
    return np.concatenate(out)


@pytest.mark.parametrize("layout", ["mono", "stereo"])
def test_audio_already_at_16k_equals_ffmpegs_resampler(tmp_path, layout):
    """16 kHz float audio (LRW's AAC) is converted without the resampler: the same samples."""
    p = make_video(tmp_path / "a.mp4", n_frames=29, fps=25, audio=layout, sr=16000)
    with av.open(str(p)) as c:
        frames = list(c.decode(c.streams.audio[0]))
    assert frames[0].format.name == "fltp" and frames[0].sample_rate == 16000
    ref = _resampled(frames)
    assert len(ref) > 18000
    np.testing.assert_array_equal(read_audio(p), ref)


def test_direct_float_to_int16_rounds_and_clips_as_ffmpeg() -> None:
    """Halves round to even, values beyond ±1 clip: as swresample's lrintf + av_clip_int16."""
    from davs_model.io.media import _AudioSink

    rng = np.random.default_rng(0)
    halves = (np.arange(-3000, 3000) + 0.5) / 32768
    x = np.concatenate([rng.uniform(-1.5, 1.5, 5000), halves, [1.0, -1.0, -1.00001, 32767.5 / 32768]])
    frames = []
    for at in range(0, len(x), 1024):
        f = av.AudioFrame.from_ndarray(x[None, at : at + 1024].astype(np.float32), format="fltp", layout="mono")
        f.sample_rate, f.pts = 16000, at
        frames.append(f)
    sink = _AudioSink("x.mp4", 16000)
    for f in frames:
        sink.add(f)
    np.testing.assert_array_equal(sink.result(), _resampled(frames))
    stereo = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp", layout="stereo")
    stereo.sample_rate = 16000
    with pytest.raises(MediaError, match="audio resampling failed"):  # a layout change mid-stream, as FFmpeg's
        sink2 = _AudioSink("x.mp4", 16000)
        sink2.add(frames[0])
        sink2.add(stereo)


def test_read_audio_without_audio_stream(tmp_path):
    p = make_video(tmp_path / "a.mp4", audio=None)
    with pytest.raises(MediaError) as ei:
        read_audio(p)
    assert ei.value.reason == "no_audio_stream" and "a.mp4" in str(ei.value)


def test_audio_only_file_has_no_video_stream(tmp_path):
    p = tmp_path / "a.m4a"
    out = av.open(str(p), "w", format="mp4")
    a = out.add_stream("aac", rate=SR, layout="mono")
    fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
    fr.sample_rate, fr.pts = SR, 0
    for pk in [*a.encode(fr), *a.encode()]:
        out.mux(pk)
    out.close()
    assert len(read_audio(p)) > 0
    for fn in (probe, lambda q: next(iter_video_frames(q))):
        with pytest.raises(MediaError) as ei:
            fn(p)
        assert ei.value.reason == "no_video_stream"


@pytest.mark.parametrize(
    "fn", [probe, read_audio, lambda p: next(iter_video_frames(p))], ids=["probe", "audio", "video"]
)
def test_empty_unreadable_missing(tmp_path, fn):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "text.mp4"
    text.write_text("this is not a video\n" * 100)
    for path, reason in [(empty, "empty_file"), (text, "unreadable"), (tmp_path / "no.mp4", None)]:
        with pytest.raises(MediaError) as ei:
            fn(path)
        assert ei.value.reason == (reason or "not_found")
        assert str(path) in str(ei.value) and "Fix:" in str(ei.value)
    with pytest.raises(MediaError) as ei:
        fn(text)
    assert "Invalid data" in str(ei.value)  # FFmpeg's message is kept
    assert ei.value.__cause__ is not None


def test_truncated_faststart_yields_prefix(tmp_path):
    p = make_video(tmp_path / "a.mp4", n_frames=60, fps=25, faststart=True)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    got = indices(p)
    assert 0 < len(got) < 60
    assert got[:5] == [0, 1, 2, 3, 4]


def test_truncated_moov_at_end(tmp_path):
    p = make_video(tmp_path / "a.mp4", n_frames=60, fps=25)  # moov written last
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    for fn in (probe, read_audio, lambda q: list(iter_video_frames(q))):
        with pytest.raises(MediaError) as ei:
            fn(p)
        assert ei.value.reason == "truncated"


def test_truncated_to_header_only(tmp_path):
    p = make_video(tmp_path / "a.mp4", n_frames=60, fps=25, faststart=True)
    data = p.read_bytes()
    moov_end = data.index(b"mdat") + 64  # header + a few bytes of the first sample
    p.write_bytes(data[:moov_end])
    with pytest.raises(MediaError) as ei:
        list(iter_video_frames(p))
    assert ei.value.reason in ("truncated", "unreadable")


@pytest.mark.parametrize("ccw,cw", [(-90, 90), (90, 270), (180, 180)])
def test_rotation_is_applied(tmp_path, ccw, cw):
    p = tmp_path / "rot.mp4"
    try:
        make_video(p, n_frames=10, fps=25, audio=None, rotation=ccw)
    except (AttributeError, NotImplementedError) as e:  # pragma: no cover - old PyAV
        pytest.skip(f"PyAV cannot write a display matrix: {e}")
    assert probe(p).rotation_deg == cw
    frames = list(iter_video_frames(p))
    assert len(frames) == 10
    # undo the display rotation and check the content and the marker
    k = cw // 90  # we rotated clockwise by cw; rot90 with +k turns it back
    back = [np.rot90(f, k=k) for f in frames]
    assert [decode_index(b) for b in back] == list(range(10))
    expect_shape = (W, H, 3) if cw in (90, 270) else (H, W, 3)
    assert frames[0].shape == expect_shape and frames[0].flags["C_CONTIGUOUS"]
    # ffmpeg's autorotate for `rotate=90` (clockwise): the stored top-left goes to the top-right
    corner = {90: frames[0][:4, -4:], 270: frames[0][-4:, :4], 180: frames[0][-4:, -4:]}[cw]
    assert corner[..., 2].mean() > 150 and corner[..., 1].mean() < 100


def test_non_utf8_file_name(tmp_path):
    import os

    name = os.fsdecode(b"caf\xe9.mp4")
    try:
        p = make_video(tmp_path / name, n_frames=5, fps=25, audio=None)
    except (UnicodeEncodeError, OSError) as e:  # pragma: no cover - file system refuses
        pytest.skip(f"file system refuses non-UTF-8 names: {e}")
    assert indices(p) == list(range(5))


def test_generator_can_be_abandoned(tmp_path):
    p = make_video(tmp_path / "a.mp4", n_frames=30, fps=25, audio=None)
    it = iter_video_frames(p)
    assert decode_index(next(it)) == 0
    it.close()  # closes the container without error

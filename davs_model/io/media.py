"""PyAV decoding: video -> constant-rate BGR frames, audio -> 16 kHz mono int16 (first channel).

All FFmpeg/PyAV failures surface as :class:`MediaError` with a short ``reason`` code and a message
that names the file and the fix. Video is streamed (never held in memory as a whole).
``clip_reader.open_clip`` gives ``probe``'s, ``iter_video_frames``' and ``read_audio``'s results from one open.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter

from davs_model.io.frame_rate import VideoTiming, as_fraction, constant_rate, rotation_from, timed_frames

log = logging.getLogger(__name__)

_FIXES = {
    "not_found": "check the path (and the source's root in the config).",
    "empty_file": "the file is 0 bytes: re-download / re-extract it, or remove it from the source.",
    "unreadable": "check it with `ffprobe FILE`; re-download it or remove it from the source.",
    "truncated": "the file is cut short (interrupted download or copy): fetch it again.",
    "no_video_stream": "give a video file (audio-only files cannot be used), or remove it.",
    "no_audio_stream": "give a video with a sound track, or remove it from the source.",
    "too_few_frames": "the clip is shorter than the pipeline needs: use a longer clip or drop it.",
}
_AV_ERRORS = (av.error.FFmpegError, OSError)


class MediaError(Exception):
    """A media file cannot be used. ``reason`` is a short code (see ``_FIXES``)."""

    def __init__(self, reason: str, path: str | os.PathLike, detail: str):
        self.reason = reason
        self.path = os.fspath(path)
        fix = _FIXES.get(reason, "")
        super().__init__(f"{self.path}: {detail} [{reason}]" + (f" Fix: {fix}" if fix else ""))


@dataclass(frozen=True)
class MediaInfo:
    width: int  # as stored (before rotation)
    height: int
    fps: float  # average frame rate
    n_frames: int  # container's count, or an estimate from the duration
    duration_s: float
    has_audio: bool
    audio_sample_rate: int  # 0 without audio
    audio_channels: int  # 0 without audio
    rotation_deg: int  # clockwise rotation needed for display (0, 90, 180, 270), like `rotate`


def _open(path) -> av.container.InputContainer:
    path = os.fspath(path)
    try:
        size = os.stat(path).st_size
    except FileNotFoundError as e:
        raise MediaError("not_found", path, f"no such file ({e.strerror}).") from e
    except OSError as e:
        raise MediaError("unreadable", path, f"cannot stat the file ({e}).") from e
    if size == 0:
        raise MediaError("empty_file", path, "the file is empty (0 bytes).")
    try:
        return av.open(path, mode="r", metadata_errors="replace")
    except _AV_ERRORS as e:
        if _looks_like_mp4(path):  # FFmpeg only logs "moov atom not found"; the error is generic
            detail = f"an MP4/MOV without its index (moov atom), FFmpeg says: {e}"
            raise MediaError("truncated", path, detail) from e
        raise MediaError("unreadable", path, f"FFmpeg cannot open it: {e}") from e


def _looks_like_mp4(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head[4:8] == b"ftyp"


def _best(container, kind: str, path: str):
    streams = getattr(container.streams, kind)
    if not streams:
        raise MediaError(f"no_{kind}_stream", path, f"the file has no {kind} stream.")
    try:
        return container.streams.best(kind) or streams[0]
    except Exception:  # pragma: no cover - best() is only a preference
        return streams[0]


def _stopped(path: str, what: str, n: int, err: Exception) -> None:
    """A decoding error after ``n`` frames: MediaError "truncated" if none decoded, else a warning (stop there)."""
    if n == 0:
        raise MediaError("truncated", path, f"no {what} decodes: {err}") from err
    log.warning("%s: %s decoding stopped after %d frames: %s", path, what, n, err)


def _decode(container, stream, path: str, what: str) -> Iterator:
    """Decoded frames of ``stream``; on a decoding error after >= 1 frame: warn and stop."""
    it = container.decode(stream)
    n = 0
    while True:
        try:
            frame = next(it)
        except StopIteration:
            return
        except _AV_ERRORS as e:
            _stopped(path, what, n, e)
            return
        n += 1
        yield frame


def _to_bgr(frame, rot_cw: int, path: str, reformatter: VideoReformatter, threads: int) -> np.ndarray:
    try:  # one swscale context per stream (``reformatter``), not one per frame: ~2x less CPU
        img = reformatter.reformat(frame, format="bgr24", threads=threads).to_ndarray(format="bgr24")
    except (*_AV_ERRORS, ValueError) as e:
        raise MediaError("unreadable", path, f"cannot convert a frame to BGR: {e}") from e
    if rot_cw:
        img = np.ascontiguousarray(np.rot90(img, k=-(rot_cw // 90)))  # k < 0: clockwise
    return img


def _media_info(c, v, path: str, first_frame: Callable[[], object]) -> MediaInfo:
    """``probe``'s answer from an open container; ``first_frame()`` decodes the first video frame (or None)."""
    rate = v.average_rate or v.guessed_rate or v.base_rate
    fps = float(rate) if rate else 0.0
    if v.duration and v.time_base:
        duration = float(v.duration * v.time_base)
    elif c.duration:
        duration = c.duration / av.time_base
    else:
        duration = v.frames / fps if (v.frames and fps) else 0.0
    n_frames = int(v.frames) if v.frames else int(round(duration * fps))
    has_audio = bool(c.streams.audio)
    a = _best(c, "audio", path) if has_audio else None  # before any audio decoding, which may change them
    audio_rate, channels = (int(a.rate or 0), int(a.channels or 0)) if a is not None else (0, 0)
    rotation = rotation_from(first_frame(), v.metadata)
    return MediaInfo(
        width=int(v.codec_context.width),
        height=int(v.codec_context.height),
        fps=fps,
        n_frames=n_frames,
        duration_s=duration,
        has_audio=has_audio,
        audio_sample_rate=audio_rate,
        audio_channels=channels,
        rotation_deg=rotation,
    )


def probe(path) -> MediaInfo:
    """Stream properties of a video file (decodes at most the first frame, for the rotation)."""
    path = os.fspath(path)
    with _open(path) as c:
        v = _best(c, "video", path)

        def first_frame():
            v.codec_context.thread_count = 1  # one frame: no decoder threads to start
            try:
                return next(c.decode(v), None)
            except _AV_ERRORS as e:
                log.warning("%s: cannot decode the first frame for the rotation: %s", path, e)
                return None

        return _media_info(c, v, path, first_frame)


def _video_frames(
    frames: Iterable, v: VideoTiming, rate: Fraction, path: str, threads: int
) -> Iterator[np.ndarray]:
    """Decoded frames -> upright BGR frames at ``rate`` (``iter_video_frames``, ``ClipReader.frames``)."""
    reformatter = VideoReformatter()
    bgr = functools.partial(_to_bgr, path=path, reformatter=reformatter, threads=threads)
    n = 0
    for img in constant_rate(timed_frames(frames, v, bgr), rate, v.nominal, v.end):
        n += 1
        yield img
    if n == 0:
        raise MediaError("truncated", path, "no video frame decodes.")


def _check_threads(threads: int) -> None:
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")


def iter_video_frames(path, fps: float = 25.0, threads: int = 0) -> Iterator[np.ndarray]:
    """Yield upright BGR uint8 frames resampled to a constant ``fps`` by presentation time.

    Output frame k (t = k/fps, from the first decoded frame) shows the source frame nearest in time; frames are
    duplicated or dropped as needed, a source already at ``fps`` passes through 1:1; round(span * fps) frames, at
    least 1, where span runs from the first frame to the end of the last one (like ffmpeg's fps filter,
    eof_action=round): ``frame_rate.constant_rate``. Duplicated frames are copies.
    Truncated files yield what decodes, then stop (with a warning). ``threads``: decoder and colour-conversion
    (swscale) threads, 0 = FFmpeg's choice (one per core, plus one); 1 runs both in the calling thread, for a job
    given one core (swscale's own pool cost a thread start per clip and a futex wake per frame).
    """
    path = os.fspath(path)
    rate = as_fraction(fps)
    _check_threads(threads)
    with _open(path) as c:
        v = _best(c, "video", path)
        v.thread_type = "AUTO"
        v.codec_context.thread_count = threads
        yield from _video_frames(_decode(c, v, path, "video"), VideoTiming.of(v, rate), rate, path, threads)


def _resampling_failed(path: str, err: Exception) -> MediaError:
    """The audio cannot be turned into samples (a resampler or decoder refusal): MediaError "unreadable"."""
    return MediaError("unreadable", path, f"audio resampling failed: {err}")


class _AudioSink:
    """Audio frames -> FFmpeg's resampler (``read_audio``'s conversion), fed frame by frame.

    Float planar audio already at ``sample_rate`` (AAC at 16 kHz: LRW, the demo) skips the resampler: its
    conversion is then swresample's float -> int16 alone, ``av_clip_int16(lrintf(x * 32768))``, done here in numpy
    with the same rounding (half to even) and clipping; equal sample for sample (tests/unit/test_media.py), ~1 ms
    less per LRW clip. Any other input goes through FFmpeg's resampler.
    """

    def __init__(self, path: str, sample_rate: int):
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
        self.path, self.sample_rate = path, sample_rate
        self._resampler = None
        self._direct: tuple | None = None  # (format, layout, rate) of a stream converted here
        self._chunks: list[np.ndarray] = []
        self._out: np.ndarray | None = None

    def add(self, frame) -> None:
        """Resample ``frame``; None flushes the resampler."""
        try:
            if self._resampler is None and self._direct is None and frame is not None:
                if frame.format.name == "fltp" and frame.sample_rate == self.sample_rate:
                    self._direct = (frame.format.name, frame.layout.name, frame.sample_rate)
                else:
                    self._resampler = av.AudioResampler(format="s16p", layout=frame.layout, rate=self.sample_rate)
            if self._direct is not None:
                self._convert(frame)
                return
            self._chunks.extend(o.to_ndarray()[0].copy() for o in self._resampler.resample(frame))
        except (*_AV_ERRORS, ValueError) as e:  # ValueError: layout/format change mid-stream
            raise _resampling_failed(self.path, e) from e

    def _convert(self, frame) -> None:
        """swresample's fltp -> s16p at an unchanged rate, first channel: what the resampler would give."""
        if frame is None:
            return  # same rate: the resampler holds nothing back
        if (frame.format.name, frame.layout.name, frame.sample_rate) != self._direct:
            raise ValueError("Frame does not match AudioResampler setup.")  # as the resampler refuses it
        x = frame.to_ndarray()[0]
        self._chunks.append(np.clip(np.rint(x * np.float32(32768)), -32768, 32767).astype(np.int16))

    def result(self, max_duration_s: float | None = None) -> np.ndarray:
        """All the samples (the resampler flushed on the first call; later calls share the array), or the first
        round(max_duration_s * sample_rate)."""
        if self._out is None:
            if self._resampler is not None:
                self.add(None)
            chunks, self._chunks = self._chunks, []
            self._out = np.concatenate(chunks).astype(np.int16, copy=False) if chunks else np.zeros(0, np.int16)
        out = self._out
        return out if max_duration_s is None else out[: int(round(max_duration_s * self.sample_rate))]


def _check_max_duration(max_duration_s: float | None) -> None:
    if max_duration_s is not None and max_duration_s < 0:
        raise ValueError(f"max_duration_s must be >= 0, got {max_duration_s}")


def read_audio(path, sample_rate: int = 16000, max_duration_s: float | None = None) -> np.ndarray:
    """First channel of the audio as int16, resampled by FFmpeg's resampler (= ``ffmpeg -ar``).

    The source channel layout is kept while resampling (no remix), then plane 0 is taken, as the
    original's MATLAB used channel 1 of the stereo wav. ``max_duration_s`` trims the result to
    round(max_duration_s * sample_rate) samples (AAC decodes up to one 1024-sample frame of
    padding beyond the real end; pass the video's duration).
    """
    path = os.fspath(path)
    sink = _AudioSink(path, sample_rate)
    _check_max_duration(max_duration_s)
    with _open(path) as c:
        a = _best(c, "audio", path)
        try:
            for frame in _decode(c, a, path, "audio"):
                sink.add(frame)
        except ValueError as e:  # a decoder's, e.g. an unknown codec
            raise _resampling_failed(path, e) from e
        return sink.result(max_duration_s)

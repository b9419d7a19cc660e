"""PyAV decoding: video -> constant-rate BGR frames, audio -> 16 kHz mono int16 (first channel).

All FFmpeg/PyAV failures surface as :class:`MediaError` with a short ``reason`` code and a message
that names the file and the fix. Video is streamed (never held in memory as a whole).
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter

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
            if n == 0:
                raise MediaError("truncated", path, f"no {what} decodes: {e}") from e
            log.warning("%s: %s decoding stopped after %d frames: %s", path, what, n, e)
            return
        n += 1
        yield frame


def _rotation_from(frame, stream) -> int:
    """Clockwise display rotation in {0, 90, 180, 270}.

    The display matrix (FFmpeg attaches the stream's DISPLAYMATRIX to every decoded frame; PyAV
    exposes it as ``VideoFrame.rotation``, counter-clockwise degrees) wins over a legacy ``rotate``
    tag (clockwise degrees).
    """
    ccw = getattr(frame, "rotation", 0) if frame is not None else 0
    if ccw:
        cw = -float(ccw)
    else:
        try:
            cw = float(stream.metadata.get("rotate", 0) or 0)
        except (TypeError, ValueError):
            cw = 0.0
    snapped = int(round(cw / 90.0)) * 90 % 360
    if abs(((cw - snapped) + 180) % 360 - 180) > 1:
        log.warning("rotation %.1f deg is not a multiple of 90; using %d", cw, snapped)
    return snapped


def _to_bgr(
    frame, rot_cw: int, path: str, reformatter: VideoReformatter | None = None, threads: int = 0
) -> np.ndarray:
    try:
        if reformatter is not None:  # one swscale context per stream, not one per frame: ~2x less CPU
            frame = reformatter.reformat(frame, format="bgr24", threads=threads)
        img = frame.to_ndarray(format="bgr24")
    except (*_AV_ERRORS, ValueError) as e:
        raise MediaError("unreadable", path, f"cannot convert a frame to BGR: {e}") from e
    if rot_cw:
        img = np.ascontiguousarray(np.rot90(img, k=-(rot_cw // 90)))  # k < 0: clockwise
    return img


def probe(path) -> MediaInfo:
    """Stream properties of a video file (decodes at most the first frame, for the rotation)."""
    path = os.fspath(path)
    with _open(path) as c:
        v = _best(c, "video", path)
        rate = v.average_rate or v.guessed_rate or v.base_rate
        fps = float(rate) if rate else 0.0
        if v.duration and v.time_base:
            duration = float(v.duration * v.time_base)
        elif c.duration:
            duration = c.duration / av.time_base
        else:
            duration = v.frames / fps if (v.frames and fps) else 0.0
        n_frames = int(v.frames) if v.frames else int(round(duration * fps))
        first = None
        v.codec_context.thread_count = 1  # one frame: no decoder threads to start
        try:
            first = next(c.decode(v), None)
        except _AV_ERRORS as e:
            log.warning("%s: cannot decode the first frame for the rotation: %s", path, e)
        rotation = _rotation_from(first, v)
        has_audio = bool(c.streams.audio)
        a = _best(c, "audio", path) if has_audio else None
        return MediaInfo(
            width=int(v.codec_context.width),
            height=int(v.codec_context.height),
            fps=fps,
            n_frames=n_frames,
            duration_s=duration,
            has_audio=has_audio,
            audio_sample_rate=int(a.rate or 0) if a is not None else 0,
            audio_channels=int(a.channels or 0) if a is not None else 0,
            rotation_deg=rotation,
        )


def _as_fraction(x) -> Fraction:
    f = x if isinstance(x, Fraction) else Fraction(x).limit_denominator(1_000_000)
    if f <= 0:
        raise ValueError(f"fps must be > 0, got {x!r}")
    return f


def iter_video_frames(path, fps: float = 25.0, threads: int = 0) -> Iterator[np.ndarray]:
    """Yield upright BGR uint8 frames resampled to a constant ``fps`` by presentation time.

    Times are relative to the first decoded frame. Output frame k (t = k/fps) shows the source
    frame nearest in time: the last one with pts < t + half its interval to the next frame (ties
    go to the earlier frame), so frames are duplicated or dropped as needed; a source already at
    ``fps`` passes through 1:1. The number of output frames is round(span * fps) (at least 1),
    where span runs from the first frame to the end of the last one (like ffmpeg's fps filter,
    eof_action=round). All arithmetic is exact (fractions). Duplicated frames are copies.
    Truncated files yield what decodes, then stop (with a warning). ``threads``: decoder and colour-conversion
    (swscale) threads, 0 = FFmpeg's choice (one per core, plus one); 1 runs both in the calling thread, for a job
    given one core (swscale's own pool cost a thread start per clip and a futex wake per frame).
    """
    path = os.fspath(path)
    rate = _as_fraction(fps)
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    with _open(path) as c:
        v = _best(c, "video", path)
        v.thread_type = "AUTO"
        v.codec_context.thread_count = threads
        tb = v.time_base or Fraction(1, 90_000)
        avg = v.average_rate or v.guessed_rate
        nominal = 1 / Fraction(avg) if avg else 1 / rate
        stream_end = None  # end of the last frame per the container (pts units of the stream)
        if v.duration:
            stream_end = (v.start_time or 0) + v.duration
        pending: deque[np.ndarray] = deque()
        k = 0  # next output index to schedule
        emitted = 0
        last_out = None
        rot = None
        reformatter = VideoReformatter()
        origin = prev_t = prev_img = prev_dur = last_pts = None

        def release(limit: Fraction) -> Iterator[np.ndarray]:
            nonlocal emitted, last_out
            # output frame n exists iff (n + 1/2) / fps <= span; safe to emit once limit <= span
            while pending and (emitted + Fraction(1, 2)) / rate <= limit:
                img = pending.popleft()
                yield img.copy() if img is last_out else img
                last_out = img
                emitted += 1

        for frame in _decode(c, v, path, "video"):
            if frame.pts is not None:
                t = Fraction(frame.pts) * tb
            elif prev_t is not None:
                t = origin + prev_t + nominal
            else:
                t = Fraction(0)
            if rot is None:
                rot = _rotation_from(frame, v)
            img = _to_bgr(frame, rot, path, reformatter, threads)
            if origin is None:
                origin = t
            t -= origin
            # frame.duration comes from packets in decode order (wrong after B-frame reordering),
            # so the previous interval is the first guess for this frame's duration
            dur = Fraction(frame.duration) * tb if frame.duration else nominal
            if prev_img is not None:
                if t <= prev_t:  # broken timestamps: keep order, assume the nominal interval
                    t = prev_t + nominal
                mid = (prev_t + t) / 2
                while k / rate <= mid:  # ties at the midpoint go to the earlier frame
                    pending.append(prev_img)
                    k += 1
                yield from release(t)
                dur = t - prev_t
            prev_t, prev_img, prev_dur = t, img, dur
            last_pts = frame.pts
        if prev_img is None:
            raise MediaError("truncated", path, "no video frame decodes.")
        end = prev_t + prev_dur
        if stream_end is not None and last_pts is not None:
            tail = (stream_end - last_pts) * tb  # the container's duration of the last frame
            if 0 < tail <= 4 * max(prev_dur, nominal):  # not for truncated files
                end = prev_t + tail
        while k / rate < end:
            pending.append(prev_img)
            k += 1
        yield from release(end)
        if emitted == 0:  # a single very short frame: still show it once
            yield prev_img


def read_audio(path, sample_rate: int = 16000, max_duration_s: float | None = None) -> np.ndarray:
    """First channel of the audio as int16, resampled by FFmpeg's resampler (= ``ffmpeg -ar``).

    The source channel layout is kept while resampling (no remix), then plane 0 is taken, as the
    original's MATLAB used channel 1 of the stereo wav. ``max_duration_s`` trims the result to
    round(max_duration_s * sample_rate) samples (AAC decodes up to one 1024-sample frame of
    padding beyond the real end; pass the video's duration).
    """
    path = os.fspath(path)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    if max_duration_s is not None and max_duration_s < 0:
        raise ValueError(f"max_duration_s must be >= 0, got {max_duration_s}")
    chunks: list[np.ndarray] = []
    with _open(path) as c:
        a = _best(c, "audio", path)
        resampler = None
        try:
            for frame in _decode(c, a, path, "audio"):
                if resampler is None:
                    resampler = av.AudioResampler(format="s16p", layout=frame.layout, rate=sample_rate)
                chunks.extend(o.to_ndarray()[0].copy() for o in resampler.resample(frame))
            if resampler is not None:
                chunks.extend(o.to_ndarray()[0].copy() for o in resampler.resample(None))
        except (*_AV_ERRORS, ValueError) as e:  # ValueError: layout/format change mid-stream
            raise MediaError("unreadable", path, f"audio resampling failed: {e}") from e
    out = np.concatenate(chunks).astype(np.int16, copy=False) if chunks else np.zeros(0, np.int16)
    if max_duration_s is not None:
        out = out[: int(round(max_duration_s * sample_rate))]
    return out

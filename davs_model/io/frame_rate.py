"""Decoded video frames -> a constant frame rate (nearest frame in time): the timing shared by ``media`` and
``clip_reader`` (a video stream's time base, nominal interval, end and display rotation), without PyAV calls."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

log = logging.getLogger(__name__)


def as_fraction(x) -> Fraction:
    f = x if isinstance(x, Fraction) else Fraction(x).limit_denominator(1_000_000)
    if f <= 0:
        raise ValueError(f"fps must be > 0, got {x!r}")
    return f


def rotation_from(frame, metadata: dict) -> int:
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
            cw = float(metadata.get("rotate", 0) or 0)
        except (TypeError, ValueError):
            cw = 0.0
    snapped = int(round(cw / 90.0)) * 90 % 360
    if abs(((cw - snapped) + 180) % 360 - 180) > 1:
        log.warning("rotation %.1f deg is not a multiple of 90; using %d", cw, snapped)
    return snapped


@dataclass(frozen=True)
class VideoTiming:
    """What the conversion of a video stream's frames needs of the stream (read while its container is open)."""

    time_base: Fraction
    nominal: Fraction  # the frame interval, for missing or broken timestamps (s)
    end: Fraction | None  # end of the last frame per the container (s)
    metadata: dict  # the stream's tags (a legacy ``rotate``)

    @classmethod
    def of(cls, stream, rate: Fraction) -> VideoTiming:
        tb = stream.time_base or Fraction(1, 90_000)
        avg = stream.average_rate or stream.guessed_rate
        end = ((stream.start_time or 0) + stream.duration) * tb if stream.duration else None
        return cls(tb, 1 / Fraction(avg) if avg else 1 / rate, end, stream.metadata)


def timed_frames(
    frames: Iterable, v: VideoTiming, convert: Callable[..., np.ndarray]
) -> Iterator[tuple[Fraction | None, Fraction | None, np.ndarray]]:
    """(pts, duration, ``convert(frame, rot_cw)``) of decoded frames; the rotation is the first frame's."""
    rot = None
    for frame in frames:
        if rot is None:
            rot = rotation_from(frame, v.metadata)
        img = convert(frame, rot)
        pts = None if frame.pts is None else Fraction(frame.pts) * v.time_base
        yield pts, Fraction(frame.duration) * v.time_base if frame.duration else None, img


def constant_rate(
    timed: Iterable[tuple[Fraction | None, Fraction | None, np.ndarray]],
    rate: Fraction,
    nominal: Fraction,
    stream_end: Fraction | None = None,
) -> Iterator[np.ndarray]:
    """Resample ``(pts, duration, image)`` (seconds; None where unknown) to ``rate`` frames per second.

    Times are relative to the first frame. Output frame k (t = k/rate) shows the source frame nearest in time:
    the last one with pts < t + half its interval to the next frame (ties go to the earlier frame). The number of
    output frames is round(span * rate) (at least 1 when a frame came), where span runs from the first frame to
    the end of the last one: its duration per ``stream_end`` (the container's end of the last frame) when that is
    plausible, else the previous interval. ``nominal``: the source's frame interval, for missing or broken
    timestamps. All arithmetic is exact (fractions). Duplicated frames are copies. Yields nothing without frames.
    """
    pending: deque[np.ndarray] = deque()
    k = 0  # next output index to schedule
    emitted = 0
    last_out = None
    origin = prev_t = prev_img = prev_dur = last_pts = None

    def release(limit: Fraction) -> Iterator[np.ndarray]:
        nonlocal emitted, last_out
        # output frame n exists iff (n + 1/2) / rate <= span; safe to emit once limit <= span
        while pending and (emitted + Fraction(1, 2)) / rate <= limit:
            img = pending.popleft()
            yield img.copy() if img is last_out else img
            last_out = img
            emitted += 1

    for pts, duration, img in timed:
        if pts is not None:
            t = pts
        elif prev_t is not None:
            t = origin + prev_t + nominal
        else:
            t = Fraction(0)
        if origin is None:
            origin = t
        t -= origin
        # a frame's duration comes from packets in decode order (wrong after B-frame reordering),
        # so the previous interval is the first guess for this frame's duration
        dur = duration if duration else nominal
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
        last_pts = pts
    if prev_img is None:
        return
    end = prev_t + prev_dur
    if stream_end is not None and last_pts is not None:
        tail = stream_end - last_pts  # the container's duration of the last frame
        if 0 < tail <= 4 * max(prev_dur, nominal):  # not for truncated files
            end = prev_t + tail
    while k / rate < end:
        pending.append(prev_img)
        k += 1
    yield from release(end)
    if emitted == 0:  # a single very short frame: still show it once
        yield prev_img

"""PyAV encoding: BGR frames (+ optional int16 mono audio) → mp4 (H.264 yuv420p + AAC).

Small and generic: used by the demo dataset and later for rendering talking-face videos.
The file is written next to its destination under a temporary name, then moved into place
with ``os.replace``, so a reader (or Snakemake) never sees a half-written mp4.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import av
import cv2
import numpy as np

__all__ = ["write_mp4"]

_AUDIO_CHUNK = 1024  # samples per AudioFrame handed to the encoder (PyAV re-frames as needed)


def write_mp4(
    path: str | os.PathLike,
    frames_bgr: Iterable[np.ndarray],
    fps: int = 25,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    crf: int = 18,
) -> Path:
    """Encode ``frames_bgr`` (HxWx3 uint8, BGR) at ``fps`` into an mp4 at ``path``.

    ``audio``, when given, is mono int16 at ``sample_rate`` and is encoded as AAC; both streams
    start at time 0. The frame size is taken from the first frame (H and W must be even for
    yuv420p). Parent folders are created. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if audio is not None:
        audio = np.asarray(audio)
        if audio.dtype != np.int16:
            raise TypeError(f"audio must be int16, got {audio.dtype}")
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono (1-D), got shape {audio.shape}")

    # A unique hidden name in the same folder (same file system → os.replace is atomic); created
    # by FFmpeg itself so it gets the usual umask permissions.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        _encode(tmp, frames_bgr, fps, audio, sample_rate, crf)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _encode(
    tmp: Path,
    frames_bgr: Iterable[np.ndarray],
    fps: int,
    audio: np.ndarray | None,
    sample_rate: int,
    crf: int,
) -> None:
    it = iter(frames_bgr)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError("write_mp4 needs at least one frame") from None
    height, width = _check_frame(first, None)
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs even frame size, got {width}x{height}")

    with av.open(str(tmp), mode="w", format="mp4") as container:
        vstream = container.add_stream("libx264", rate=int(fps))
        vstream.width = width
        vstream.height = height
        vstream.pix_fmt = "yuv420p"
        vstream.options = {"crf": str(int(crf)), "preset": "medium"}
        astream = None
        if audio is not None:
            astream = container.add_stream("aac", rate=int(sample_rate))
            astream.layout = "mono"
            astream.bit_rate = 64000

        def put_video(img: np.ndarray, index: int) -> None:
            # OpenCV's BT.601 limited-range conversion: exact round trip through PyAV's decoder,
            # unlike swscale's default bgr24→yuv420p path, which darkens by 1–4 levels.
            i420 = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2YUV_I420)
            frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
            frame.pts = index
            container.mux(vstream.encode(frame))

        put_video(first, 0)
        n = 1
        for img in it:
            _check_frame(img, (height, width))
            put_video(img, n)
            n += 1
        container.mux(vstream.encode(None))

        if astream is not None:
            assert audio is not None
            for start in range(0, len(audio), _AUDIO_CHUNK):
                chunk = audio[start : start + _AUDIO_CHUNK]
                aframe = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(chunk.reshape(1, -1)), format="s16", layout="mono"
                )
                aframe.sample_rate = int(sample_rate)
                aframe.pts = start
                container.mux(astream.encode(aframe))
            container.mux(astream.encode(None))


def _check_frame(img: np.ndarray, shape: tuple[int, int] | None) -> tuple[int, int]:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3:
        raise TypeError("frames must be HxWx3 uint8 numpy arrays (BGR)")
    if img.shape[2] != 3:
        raise ValueError(f"frames must have 3 channels, got shape {img.shape}")
    if shape is not None and img.shape[:2] != shape:
        raise ValueError(f"frame size changed: {img.shape[:2]} != {shape}")
    return img.shape[0], img.shape[1]

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

__all__ = ["Mp4Writer", "write_mp4"]

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
    audio = _check_audio(audio)

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
    encoder = _Encoder(tmp, first, fps, audio, sample_rate, crf)
    try:
        for img in it:
            encoder.put(img)
    except BaseException:
        encoder.container.close()
        raise
    encoder.finish()


class _Encoder:
    """An open mp4 (H.264 yuv420p, optional AAC mono) that takes BGR frames one at a time; the frame size is the
    first frame's. ``finish`` flushes the video, encodes the whole audio and closes the file."""

    def __init__(self, path: Path, first: np.ndarray, fps: int, audio, sample_rate: int, crf: int) -> None:
        self.height, self.width = _check_frame(first, None)
        if self.height % 2 or self.width % 2:
            raise ValueError(f"yuv420p needs even frame size, got {self.width}x{self.height}")
        self.audio, self.sample_rate, self.n = audio, int(sample_rate), 0
        self.container = av.open(str(path), mode="w", format="mp4")
        try:
            self.vstream = self.container.add_stream("libx264", rate=int(fps))
            self.vstream.width, self.vstream.height, self.vstream.pix_fmt = self.width, self.height, "yuv420p"
            self.vstream.options = {"crf": str(int(crf)), "preset": "medium"}
            self.astream = None
            if audio is not None:
                self.astream = self.container.add_stream("aac", rate=self.sample_rate)
                self.astream.layout = "mono"
                self.astream.bit_rate = 64000
            self.put(first)
        except BaseException:
            self.container.close()
            raise

    def put(self, img: np.ndarray) -> None:
        _check_frame(img, (self.height, self.width))
        # OpenCV's BT.601 limited-range conversion: exact round trip through PyAV's decoder,
        # unlike swscale's default bgr24→yuv420p path, which darkens by 1–4 levels.
        i420 = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2YUV_I420)
        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        frame.pts = self.n
        self.container.mux(self.vstream.encode(frame))
        self.n += 1

    def finish(self) -> None:
        with self.container:
            self.container.mux(self.vstream.encode(None))
            if self.astream is not None:
                audio = self.audio
                for start in range(0, len(audio), _AUDIO_CHUNK):
                    chunk = audio[start : start + _AUDIO_CHUNK]
                    aframe = av.AudioFrame.from_ndarray(
                        np.ascontiguousarray(chunk.reshape(1, -1)), format="s16", layout="mono"
                    )
                    aframe.sample_rate = self.sample_rate
                    aframe.pts = start
                    self.container.mux(self.astream.encode(aframe))
                self.container.mux(self.astream.encode(None))


class Mp4Writer:
    """Incremental :func:`write_mp4`: ``with Mp4Writer(path, audio=…) as w: w.write(frame)`` for frames that are
    produced one at a time (memory stays flat in the video length). Same encoding, same atomic rename on success;
    on an exception nothing is left at ``path``. ``audio`` (mono int16) is encoded after the last frame."""

    def __init__(
        self,
        path: str | os.PathLike,
        fps: int = 25,
        audio: np.ndarray | None = None,
        sample_rate: int = 16000,
        crf: int = 18,
    ) -> None:
        self.path = Path(path)
        self.fps, self.audio, self.sample_rate, self.crf = fps, _check_audio(audio), sample_rate, crf
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        self._encoder: _Encoder | None = None

    def __enter__(self) -> Mp4Writer:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self

    def write(self, frame_bgr: np.ndarray) -> None:
        if self._encoder is None:
            self._encoder = _Encoder(self.tmp, frame_bgr, self.fps, self.audio, self.sample_rate, self.crf)
        else:
            self._encoder.put(frame_bgr)

    @property
    def frames_written(self) -> int:
        return 0 if self._encoder is None else self._encoder.n

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                if self._encoder is None:
                    raise ValueError(f"{self.path}: no frame was written")
                self._encoder.finish()
                os.replace(self.tmp, self.path)
            elif self._encoder is not None:
                self._encoder.container.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def _check_audio(audio: np.ndarray | None) -> np.ndarray | None:
    if audio is None:
        return None
    audio = np.asarray(audio)
    if audio.dtype != np.int16:
        raise TypeError(f"audio must be int16, got {audio.dtype}")
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {audio.shape}")
    return audio


def _check_frame(img: np.ndarray, shape: tuple[int, int] | None) -> tuple[int, int]:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3:
        raise TypeError("frames must be HxWx3 uint8 numpy arrays (BGR)")
    if img.shape[2] != 3:
        raise ValueError(f"frames must have 3 channels, got shape {img.shape}")
    if shape is not None and img.shape[:2] != shape:
        raise ValueError(f"frame size changed: {img.shape[:2]} != {shape}")
    return img.shape[0], img.shape[1]

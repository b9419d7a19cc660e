"""One ``av.open`` per clip: its stream properties, its frames and its audio from a single container.

``open_clip(path)`` gives what ``probe``, ``iter_video_frames`` and ``read_audio`` give, bit for bit, from one
open (an open costs ~2.3 ms of CPU: ``avformat_find_stream_info`` decodes frames). The video and audio packets
are demuxed in one pass, each decoded by its stream's decoder; the audio frames go to the resampler as they come.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator

import numpy as np

from davs_model.io.frame_rate import VideoTiming, as_fraction
from davs_model.io.media import (
    _AV_ERRORS,
    MediaError,
    MediaInfo,
    _AudioSink,
    _best,
    _check_max_duration,
    _check_threads,
    _media_info,
    _open,
    _resampling_failed,
    _stopped,
    _video_frames,
)

__all__ = ["ClipReader", "MediaError", "MediaInfo", "open_clip"]
log = logging.getLogger(__name__)


class ClipReader:
    """A clip's container, opened once (see :func:`open_clip`).

    ``info`` is ``probe``'s; ``frames()`` (once) streams ``iter_video_frames``' frames while the audio packets of
    the same demux pass are decoded and resampled; ``audio()`` returns ``read_audio``'s samples. Called before the
    frames are all read, ``audio()`` demuxes the rest of the file for the audio and skips the video packets: the
    frames cannot go on after it. A decoding error of one stream does not stop the other: ``frames()`` and
    ``audio()`` raise or warn as ``iter_video_frames`` and ``read_audio`` would. The container closes once the file
    is read to its end (the frames exhausted and the audio read), on ``close()`` and at the end of a ``with``.
    """

    def __init__(self, path: str, fps: float, sample_rate: int, threads: int):
        self.path = path
        self._rate = as_fraction(fps)
        _check_threads(threads)
        self._threads = threads
        self._sink = _AudioSink(path, sample_rate)
        self._container = self._packets = None
        self._queue: deque = deque()  # decoded video frames, not yet converted
        self._video = self._audio = False  # are the stream's packets decoded
        self._n_video = self._n_audio = 0  # frames decoded
        self._video_error: Exception | None = None  # what stopped the video decoding
        self._audio_error: MediaError | None = None  # what audio() raises
        self._no_audio: MediaError | None = None
        self._cut_by: str | None = None  # what stopped the video before its end
        self._audio_cut = False  # closed before the end of the audio
        self._frames_taken = False
        self._container = _open(path)
        try:
            self.info: MediaInfo = self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> MediaInfo:
        c = self._container
        v = _best(c, "video", self.path)
        v.thread_type = "AUTO"
        v.codec_context.thread_count = self._threads
        self._timing, self._video_index = VideoTiming.of(v, self._rate), v.index
        try:
            a = _best(c, "audio", self.path)
        except MediaError as e:
            a, self._no_audio = None, e
        self._packets = c.demux(v) if a is None else c.demux(v, a)
        self._video, self._audio = True, a is not None
        return _media_info(c, v, self.path, self._first_frame)

    def __enter__(self) -> ClipReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the container (again: nothing); frames or audio not read by then cannot be."""
        self._cut("close()")
        self._audio_cut, self._audio = self._audio_cut or self._audio, False
        if self._packets is not None:
            self._packets.close()
            self._packets = None
        if self._container is not None:
            container, self._container = self._container, None
            container.close()

    @property
    def closed(self) -> bool:
        return self._container is None

    def frames(self) -> Iterator[np.ndarray]:
        """``iter_video_frames(path, fps, threads)``: upright BGR frames at ``fps``, streamed; once."""
        if self._frames_taken:
            raise RuntimeError("ClipReader.frames() can be iterated once")
        if self._cut_by is not None:
            raise RuntimeError(f"ClipReader.frames() after {self._cut_by}: the video was not read")
        self._frames_taken = True
        return self._frames()

    def audio(self, max_duration_s: float | None = None) -> np.ndarray:
        """``read_audio(path, sample_rate, max_duration_s)``: the first channel as int16 at ``sample_rate``."""
        _check_max_duration(max_duration_s)
        if self._no_audio is not None:
            raise self._no_audio
        if self._audio_cut:
            raise RuntimeError("ClipReader.audio() after close(): the audio was not read to its end")
        if self._audio:  # the rest of the audio: the video packets are skipped from here
            self._cut("audio()")
            while self._pump():
                pass
        if self._audio_error is not None:
            raise self._audio_error
        try:
            return self._sink.result(max_duration_s)
        except MediaError as e:
            self._audio_error = e
            raise

    def _frames(self) -> Iterator[np.ndarray]:
        try:
            yield from _video_frames(self._decoded(), self._timing, self._rate, self.path, self._threads)
        finally:  # exhausted, or abandoned: the video packets are not wanted any more
            self._cut("the frames' iterator was closed")
            if not self._audio:
                self.close()

    def _decoded(self) -> Iterator:
        """The decoded video frames, demuxed as needed; ends (or raises) as ``media._decode`` does at an error."""
        while True:
            while self._queue:
                yield self._queue.popleft()
            if self._video:
                self._pump()
            elif self._cut_by is not None:
                raise RuntimeError(f"ClipReader: the video was not read to its end: {self._cut_by} came first")
            else:
                if self._video_error is not None:
                    _stopped(self.path, "video", self._n_video, self._video_error)
                return

    def _first_frame(self):
        """The first video frame (kept in the queue, for ``frames()``), or None, as ``probe`` decodes it."""
        while not self._queue and self._video:
            self._pump()
        if self._queue:
            return self._queue[0]
        if self._video_error is not None:
            log.warning("%s: cannot decode the first frame for the rotation: %s", self.path, self._video_error)
        return None

    def _cut(self, by: str) -> None:
        if self._video:
            self._video, self._cut_by = False, by
            self._queue.clear()

    def _pump(self) -> bool:
        """Demux and decode one packet; False (the container closed) once there is nothing more to read."""
        if not (self._video or self._audio):
            self.close()
            return False
        try:
            packet = next(self._packets)
        except StopIteration:
            self._video = self._audio = False
            self.close()
            return False
        except _AV_ERRORS as e:  # a read error ends both streams where their own reads would have ended
            if self._video:
                self._video, self._video_error = False, e
            if self._audio:
                self._audio_stopped(e)
            self.close()
            return False
        if packet.stream_index == self._video_index:
            if self._video:
                try:
                    frames = packet.decode()
                except _AV_ERRORS as e:
                    self._video, self._video_error = False, e
                else:
                    self._n_video += len(frames)
                    self._queue.extend(frames)
        elif self._audio:
            self._decode_audio(packet)
        return True

    def _decode_audio(self, packet) -> None:
        try:
            frames = packet.decode()
        except _AV_ERRORS as e:
            self._audio_stopped(e)
            return
        except ValueError as e:  # e.g. an unknown codec: read_audio's "unreadable"
            self._audio = False
            self._audio_error = _resampling_failed(self.path, e)
            self._audio_error.__cause__ = e
            return
        try:
            for frame in frames:
                self._n_audio += 1
                self._sink.add(frame)
        except MediaError as e:
            self._audio, self._audio_error = False, e

    def _audio_stopped(self, err: Exception) -> None:
        self._audio = False
        try:
            _stopped(self.path, "audio", self._n_audio, err)  # a warning after >= 1 frame
        except MediaError as e:
            self._audio_error = e


def open_clip(path, fps: float = 25.0, sample_rate: int = 16000, threads: int = 0) -> ClipReader:
    """Open a clip once for ``probe``'s info, ``iter_video_frames``' frames and ``read_audio``'s samples.

    ``threads``: decoder and colour-conversion threads, as in ``iter_video_frames``. Use it as a context manager
    (or ``close()`` it) unless the frames and the audio are both read to their end.
    """
    return ClipReader(os.fspath(path), fps, sample_rate, threads)

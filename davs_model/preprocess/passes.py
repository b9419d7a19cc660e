"""The two passes over a clip's frames: pass 1 tracks the landmarks, pass 2 warps and encodes.

Pass 1 keeps the decoded frames of a short clip (up to ``CACHE_BYTES``, e.g. an LRW clip: 29 × 196 kB), and pass 2
warps those; a longer clip is decoded again in pass 2, so memory stays flat in the video's length.
"""

from __future__ import annotations

import ctypes
import functools
import gc
from collections.abc import Iterable, Iterator
from contextlib import suppress
from pathlib import Path

import numpy as np

from davs_model.io.media import iter_video_frames

MMAP_THRESHOLD = 2**20  # bytes; see fixed_mmap_threshold
CACHE_BYTES = 32 * 2**20  # a clip's decoded frames kept for pass 2 (per clip; ``landmark_batch`` clips at once)
TRIM_EVERY = 100  # clips between two ``release_free_memory`` calls in a one-core shard job


class ClipRejected(Exception):
    """A clip that cannot be used; ``reason`` is a short code, the message says why and what to do."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Recorded:
    """Pass 1's frames, passed through; the first ``CACHE_BYTES`` of them are kept (else ``frames`` is None)."""

    def __init__(self, frames: Iterable[np.ndarray], limit: int | None = None):
        self._source, self._limit = frames, CACHE_BYTES if limit is None else limit
        self.frames: list[np.ndarray] | None = []
        self._bytes = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for frame in self._source:
            if self.frames is not None:
                self._bytes += frame.nbytes
                if self._bytes <= self._limit:
                    self.frames.append(frame)
                else:
                    self.frames = None  # too long to keep: pass 2 decodes again
            yield frame


class AlignedFrames:
    """Pass 2: the clip's frames warped one by one (a sized iterable: ``ShardWriter.add`` streams it).

    The frames pass 1 kept, or else the clip decoded again: decoding is deterministic, so that yields the frames
    pass 1 tracked, and a different count means the file changed in between (``ClipRejected`` "changed_file").
    With ``reuse_output`` every frame is written into the same array (no fresh pages per frame): for a consumer
    that is done with each frame before it draws the next, as ``ShardWriter.add``.
    """

    def __init__(
        self,
        path: Path,
        fps: float,
        transforms: np.ndarray,
        frames: list[np.ndarray] | None = None,
        reuse_output: bool = False,
    ):
        self.path, self.fps, self.transforms, self.frames = path, fps, transforms, frames
        self.reuse_output = reuse_output
        if frames is not None and len(frames) != len(transforms):
            raise ValueError(f"{len(frames)} kept frames for {len(transforms)} transforms")

    def __len__(self) -> int:
        return len(self.transforms)

    def __iter__(self) -> Iterator[np.ndarray]:
        from davs_model.align import BAND_SHAPE, OUTPUT_SHAPE, warp_aligned_fast

        band = np.empty(BAND_SHAPE, np.uint8)
        out = np.empty(OUTPUT_SHAPE, np.uint8) if self.reuse_output else None
        if self.frames is not None:
            for frame, m in zip(self.frames, self.transforms, strict=True):
                yield warp_aligned_fast(frame, m, out=out, band=band)
            return
        n = 0
        for n, frame in enumerate(iter_video_frames(self.path, fps=self.fps, threads=1), 1):
            if n > len(self):
                break
            yield warp_aligned_fast(frame, self.transforms[n - 1], out=out, band=band)
        if n != len(self):
            raise ClipRejected(
                "changed_file",
                f"{self.path}: {f'more than {len(self)}' if n > len(self) else n} frames on the second decode, "
                f"{len(self)} on the first: the file changed while it was processed. Fix: re-run",
            )


@functools.cache  # once per process
def one_core_process() -> None:
    """Set up this process for a preprocessing job on one core (``build_shard(one_core=True)``, as
    ``workflow/scripts/build_shard.py`` calls it: the rule has ``threads: 1``). Call it once the job's modules and
    models are loaded: libraries loaded later keep their thread pools, objects made later are scanned.

    - :func:`fixed_mmap_threshold`;
    - BLAS thread pools limited to one thread (``threadpoolctl``): OpenBLAS' idle threads spin after each call
      (numpy's, scipy's and OpenCV's: ~1.5 % of a job's CPU time for nothing);
    - OpenCV's own thread pool off (``cv2.setNumThreads(1)``): its small calls (the tracker's 32² patch resize)
      cost ~1.5x more CPU split over threads, and a job given one core has none to spare;
    - the objects alive now (the imported modules) frozen out of the garbage collector's scans
      (``gc.freeze``): the full collections that the job's allocations trigger otherwise walk them all (~3 %).

    Decoding runs in the calling thread too (``iter_video_frames(threads=1)`` in ``pipeline`` and here). For the
    job's process, not for a library caller's: it changes the whole process (once; later calls return at once).
    """
    import importlib

    import cv2
    from threadpoolctl import threadpool_limits

    for module in ("davs_model.align", "davs_model.audio", "davs_model.tracking"):  # the job's libraries, now
        importlib.import_module(module)
    fixed_mmap_threshold()
    threadpool_limits(limits=1, user_api="blas")
    cv2.setNumThreads(1)
    gc.freeze()


def fixed_mmap_threshold() -> None:
    """glibc: blocks of >= ``MMAP_THRESHOLD`` get their own mmap, smaller ones come from the heap, in every run.

    glibc's default raises its threshold to the largest block freed so far, so where large frames go varies with
    the run: a 720p clip's peak RSS varied from 339 to 362 MB between runs (bench/preprocess_memory.py). A fixed
    threshold makes it the same every run. It sits above a dataset-sized frame (256² or 224² BGR: 196 kB, 147 kB):
    those come from the heap and reuse its free blocks, where a mapping per frame cost ~50 page faults per frame
    (~0.25 ms of a 0.6 ms decode). Peak RSS of a 256² clip grows 0.45 MB per second of video either way (the held
    per-frame data); the heap adds ~25 MB to it. Without glibc's ``mallopt`` this does nothing.
    """
    with suppress(OSError, AttributeError):  # "libc.so.6": ctypes.util.find_library would spawn ldconfig each time
        ctypes.CDLL("libc.so.6").mallopt(-3, MMAP_THRESHOLD)  # -3: M_MMAP_THRESHOLD


def release_free_memory() -> None:
    """glibc: hand the heap's free pages back to the kernel (``malloc_trim(0)``); elsewhere nothing.

    A shard job's heap keeps the pages its clips freed (the frame cache, HDF5's buffers for JPEG blocks of every
    size) and grows by ~65 kB per clip: 490 MB after 100 clips, 522 MB after 600. Trimmed every ``TRIM_EVERY``
    clips it stays flat (BENCHMARKS.md, LRW cluster projection). One call costs a few ms.
    """
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)

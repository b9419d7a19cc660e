"""HDF5 shards of preprocessed clips: atomic writer, lazy reader.

The layout and the record type (:class:`ClipRecord`) are in :mod:`davs_model.io.shard_format`; index and export to
the original folder layout in :mod:`davs_model.io.export` (re-exported here, lazily).
"""

from __future__ import annotations

import importlib
import operator
import os
import zlib
from collections.abc import Iterable
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

import cv2
import h5py
import numpy as np

from davs_model import SHARD_FORMAT_VERSION, __version__
from davs_model.io.shard_format import (  # noqa: F401  (BIN_NUMBERS … FRAME_SIZE: re-exported)
    ALIGN_FACE,
    ARRAYS,
    BIN_NUMBERS,
    CLIP_IDS,
    CLIPS,
    CORRUPT_HINT,
    CRC32,
    FIX_HINT,
    FRAME_INDEX,
    FRAME_SIZE,
    IMAGE_FORMATS,
    MFCC,
    RECORD_ATTRS,
    ClipRecord,
    FrameStream,
    ShardError,
    encode_str,
    from_h5,
    set_attr,
)

__all__ = ["ClipRecord", "FrameStream", "ShardError", "ShardReader", "ShardWriter"]

MAX_GAP_RAW, MAX_GAP_JPEG = 8, 64  # ShardReader.frames: selected frames this close are read in one slice
JPEG_BLOCK = 32  # ShardWriter: encoded frames written to the file per HDF5 call


class ShardWriter:
    """Atomic writer: clips go to ``<name>.tmp-<pid>``, renamed to ``path`` on success.

    ``add`` writes a clip's frames one at a time as they arrive (JPEG-encoded in blocks of ``JPEG_BLOCK``), so a
    streamed clip is never held whole; a clip whose frames fail part-way is removed from the shard again.
    """

    def __init__(self, path, split: str, shard: int, image_format="jpeg", jpeg_quality=95):
        if image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
        if not 0 <= int(jpeg_quality) <= 100:
            raise ValueError(f"jpeg_quality must be in 0..100, got {jpeg_quality}")
        self.path = Path(path)
        self.split, self.shard = split, int(shard)
        self.image_format, self.jpeg_quality = image_format, int(jpeg_quality)
        self.tmp_path = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        self._f: h5py.File | None = None

    def __enter__(self) -> ShardWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f, self._ids = h5py.File(self.tmp_path, "w", libver=("v108", "v108")), []  # checksummed headers
        try:
            for key, value in {
                "format_version": SHARD_FORMAT_VERSION, "split": self.split, "shard": self.shard,
                "image_format": self.image_format, "jpeg_quality": self.jpeg_quality,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "davs_model_version": __version__,
            }.items():  # fmt: skip
                set_attr(self._f.attrs, key, value)
            self._f.create_group(CLIPS)
        except BaseException:
            self._abort()
            raise
        return self

    def add(self, record: ClipRecord) -> int:
        """Append one clip (consuming a streamed ``frames_bgr``); returns its index in the shard.

        If the frames fail part-way (a bad frame, a count other than announced, an error of the stream), the
        partial clip is deleted and the error propagates: the shard holds the clips added before, whole.
        """
        if self._f is None:
            raise RuntimeError("ShardWriter.add() called outside its `with` block")
        record.validate()
        if record.clip_id in self._ids:
            raise ValueError(f"{self.path}: clip id {record.clip_id!r} added twice")
        i, t = len(self._ids), len(record.frames_bgr)
        g = self._f.create_group(f"{CLIPS}/{i:06d}")
        try:
            self._write_frames(g, record.frames_bgr, t, record.clip_id)
            for name, (key, dtype) in ARRAYS.items():
                g.create_dataset(name, data=np.asarray(getattr(record, key), dtype=dtype), fletcher32=True)
            values = {k: getattr(record, k) for k in RECORD_ATTRS[:6]}
            values.update(input_fps=float(record.input_fps), n_frames=t)
            values.update(n_bins=len(record.mfcc), **record.extra)
            for key, value in values.items():
                set_attr(g.attrs, key, value)
        except BaseException:
            with suppress(Exception):  # the original exception matters, not this one
                del self._f[g.name]  # its file space is not reused: the shard may grow by the partial clip
            raise
        self._ids.append(record.clip_id)
        return i

    def _write_frames(self, g: h5py.Group, frames: Iterable[np.ndarray], t: int, clip_id: str) -> None:
        s, jpeg, params = FRAME_SIZE, self.image_format == "jpeg", [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality]
        if jpeg:
            ds = g.create_dataset(ALIGN_FACE, shape=(t,), dtype=h5py.vlen_dtype(np.uint8))
            crc, block = np.zeros(t, np.uint32), np.empty(JPEG_BLOCK, dtype=object)
        else:  # RGB, one chunk per frame, uncompressed: cheap random access to single frames
            ds = g.create_dataset(
                ALIGN_FACE, shape=(t, s, s, 3), dtype=np.uint8, chunks=(1, s, s, 3), fletcher32=True
            )
        n = 0
        for j, im in enumerate(frames):
            if j >= t or not (isinstance(im, np.ndarray) and im.shape == (s, s, 3) and im.dtype == np.uint8):
                got = f"more than {t} frames" if j >= t else f"{getattr(im, 'shape', type(im))}"
                raise ValueError(f"clip {clip_id!r}: frame {j}: expected ({s},{s},3) uint8, got {got}")
            if jpeg:  # cv2.imencode raises cv2.error if it fails
                block[j % JPEG_BLOCK] = data = cv2.imencode(".jpg", im, params)[1].reshape(-1)
                crc[j] = zlib.crc32(data)
                if (j + 1) % JPEG_BLOCK == 0:
                    _write_vlen(ds, j + 1 - JPEG_BLOCK, block)
            else:
                ds[j] = im[..., ::-1]
            n = j + 1
        if n != t:
            raise ValueError(f"clip {clip_id!r}: {n} frames arrived, {t} announced")
        if jpeg:
            if n % JPEG_BLOCK:
                _write_vlen(ds, n - n % JPEG_BLOCK, block[: n % JPEG_BLOCK])
            g.create_dataset(CRC32, data=crc, dtype=np.uint32, fletcher32=True)
        ds.attrs["image_format"] = self.image_format

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None:
                return  # the exception propagates; `finally` removes the temporary file
            ids = np.array([encode_str(c) for c in self._ids], dtype=object)
            self._f.create_dataset(CLIP_IDS, data=ids, dtype=h5py.string_dtype("utf-8"))
            self._f.attrs["n_clips"] = len(self._ids)
            self._f.close()
            self._f = None
            with open(self.tmp_path, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(self.tmp_path, self.path)
        finally:
            self._abort()  # after the rename there is no temporary file left: a no-op

    def _abort(self) -> None:  # removes this writer's own temporary file, nothing else
        if self._f is not None:
            with suppress(Exception):  # the original exception matters, not this one
                self._f.close()
            self._f = None
        self.tmp_path.unlink(missing_ok=True)


def _write_vlen(ds: h5py.Dataset, start: int, items: np.ndarray) -> None:
    """``ds[start : start + len(items)] = items`` for a 1-D object array of uint8 arrays (h5py's ``ds[a:b] = ``
    stacks equal-length items into a 2-D array and fails; one call per item costs ~6x more)."""
    space = ds.id.get_space()
    space.select_hyperslab((start,), (len(items),))
    ds.id.write(h5py.h5s.create_simple((len(items),)), space, items)


class ShardReader:
    """Lazy, picklable reader: the HDF5 file is opened on first access (again after unpickling)."""

    def __init__(self, path):
        self.path, self._f = Path(path), None
        self._ids, self._index = None, None  # caches: clip ids, clip id -> index

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_f": None}  # h5py handles do not pickle; workers reopen

    def _open(self) -> h5py.File:
        if self._f is None:
            if not self.path.is_file():
                raise ShardError(f"{self.path}: shard not found; re-run `snakemake preprocess`")
            f = h5py.File(self.path, "r")
            version = f.attrs.get("format_version")
            ok = version is not None and CLIPS in f and CLIP_IDS in f
            if not ok or int(version) != SHARD_FORMAT_VERSION:
                f.close()
                found = f"shard format version {version}" if ok else "not a DAVS shard"
                msg = f"{found}, this davs_model reads shard format version {SHARD_FORMAT_VERSION}"
                raise ShardError(f"{self.path}: {msg}; {FIX_HINT}")
            self._f = f
        return self._f

    @contextmanager
    def _reading(self):
        """The open file (opened and checked on first use); h5py errors become ShardError."""
        try:
            yield self._open()
        except ShardError:
            raise
        except (OSError, KeyError, RuntimeError) as e:  # h5py: damaged file, object, attributes
            raise ShardError(f"{self.path}: cannot read ({e}); {CORRUPT_HINT}") from e

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def attr(self, key: str) -> object:
        with self._reading() as f:
            return from_h5(f.attrs[key])

    @property
    def clip_ids(self) -> list[str]:
        if self._ids is None:
            with self._reading() as f:
                self._ids = [from_h5(b) for b in f[CLIP_IDS][()]]
        return self._ids

    def __len__(self) -> int:
        return len(self.clip_ids)

    def index_of(self, clip_id: str) -> int:
        self._index = self._index or {c: i for i, c in enumerate(self.clip_ids)}
        if clip_id not in self._index:
            raise KeyError(f"{self.path}: no clip {clip_id!r} in this shard")
        return self._index[clip_id]

    def _group(self, f: h5py.File, i: int) -> h5py.Group:
        n, i = len(self), operator.index(i)
        if not -n <= i < n:
            raise IndexError(f"{self.path}: clip index {i} out of range (shard has {n} clips)")
        return f[CLIPS][f"{i % n:06d}"]

    def meta(self, i: int, keys: tuple[str, ...] | None = None) -> dict:
        """Clip attributes (only ``keys`` if given); non-standard ones are under ``extra``."""
        with self._reading() as f:
            attrs = self._group(f, i).attrs
            if keys is not None:
                return {k: from_h5(attrs[k]) for k in keys}
            values = {k: from_h5(v) for k, v in attrs.items()}
        return {**{k: values.pop(k) for k in RECORD_ATTRS}, "extra": values}

    def array(self, i: int, name: str) -> np.ndarray:
        """One per-clip dataset in full (mfcc20, bin_numbers, frame_index, transforms, ...)."""
        with self._reading() as f:
            return self._group(f, i)[name][()]

    def mfcc(self, i: int) -> np.ndarray:
        return self.array(i, MFCC)

    def frames(self, i: int, idx=None) -> np.ndarray:
        """(k,260,260,3) uint8 RGB of the frames ``idx`` selects (any order, repeats allowed); only they decode."""
        with self._reading() as f:
            g = self._group(f, i)
            ds, crc = g[ALIGN_FACE], (g[CRC32][()] if CRC32 in g else None)  # no CRC32: an older shard
            sel = np.atleast_1d(np.arange(ds.shape[0])[slice(None) if idx is None else idx])
            if not len(sel):
                return np.empty((0, FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
            uniq, inverse = np.unique(sel, return_inverse=True)
            # Contiguous slices only: h5py is ~100x slower on an index list, and one read per JPEG costs ~0.4 ms.
            # Sorted frames at most MAX_GAP apart share one slice (the frames between are read and dropped).
            gap = MAX_GAP_RAW if ds.ndim == 4 else MAX_GAP_JPEG
            runs = np.split(uniq, np.flatnonzero(np.diff(uniq) > gap) + 1)
            picked = [ds[run[0] : run[-1] + 1][run - run[0]] for run in runs]
            if ds.ndim == 4:  # raw RGB
                return np.concatenate(picked)[inverse.reshape(-1)]
            decoded = np.empty((len(uniq), FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
            for k, data in enumerate(b for block in picked for b in block):
                if crc is not None and zlib.crc32(data) != crc[uniq[k]]:
                    raise ShardError(f"{self.path}: clip {i} frame {uniq[k]}: checksum mismatch; {CORRUPT_HINT}")
                im = cv2.imdecode(data, cv2.IMREAD_COLOR)
                if im is None or im.shape != decoded.shape[1:]:
                    raise ShardError(f"{self.path}: clip {i} frame {uniq[k]}: bad JPEG; {CORRUPT_HINT}")
                cv2.cvtColor(im, cv2.COLOR_BGR2RGB, dst=decoded[k])
        return decoded if len(uniq) == len(sel) and np.array_equal(uniq, sel) else decoded[inverse.reshape(-1)]

    def clip(self, i: int) -> dict:
        """Everything about one clip: meta fields, ``frames`` (RGB), ``mfcc`` and the arrays."""
        arrays = {key: self.array(i, name) for name, (key, _) in ARRAYS.items()}
        return {**self.meta(i), "frames": self.frames(i), **arrays}


def __getattr__(name: str):  # write_index, export_original_layout: lazily, export.py imports us
    if name not in ("write_index", "export_original_layout"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("davs_model.io.export"), name)

"""HDF5 shards of preprocessed clips: record type, atomic writer, lazy reader.

Layout: root attrs (``ShardWriter.__enter__``), ``clip_ids`` (n,) vlen UTF-8 (surrogateescape);
per clip a group ``clips/000000`` with ``align_face256`` (jpeg: (T,) vlen uint8, one JPEG file per
frame; raw: (T,260,260,3) uint8 RGB), ``ARRAYS`` and attrs ``RECORD_ATTRS`` + extra. Index and
export to the original folder layout: :mod:`davs_model.io.export` (re-exported here, lazily).
"""

from __future__ import annotations

import importlib
import operator
import os
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import h5py
import numpy as np

from davs_model import SHARD_FORMAT_VERSION, __version__

__all__ = ["ClipRecord", "ShardError", "ShardReader", "ShardWriter"]

CLIP_IDS, CLIPS, ALIGN_FACE, MFCC = "clip_ids", "clips", "align_face256", "mfcc20"
BIN_NUMBERS, FRAME_INDEX = "bin_numbers", "frame_index"
TRANSFORMS, DETECTED = "transforms", "detected"
# per-clip datasets besides the frames: name -> (ClipRecord field and clip() key, dtype)
ARRAYS = {
    MFCC: ("mfcc", np.float64), BIN_NUMBERS: (BIN_NUMBERS, np.int64), DETECTED: (DETECTED, bool),
    FRAME_INDEX: (FRAME_INDEX, np.int64), TRANSFORMS: (TRANSFORMS, np.float64),
}  # fmt: skip
FRAME_SIZE, IMAGE_FORMATS = 260, ("jpeg", "raw")
RECORD_ATTRS = (
    "clip_id", "source", "split", "label", "word", "speaker", "input_fps", "n_frames", "n_bins",
)  # fmt: skip
FIX_HINT = "re-run `snakemake preprocess`; the shard format changed"
CORRUPT_HINT = "the file is corrupt or truncated: delete it and re-run `snakemake preprocess`"


class ShardError(RuntimeError):
    """A shard is missing, corrupt, truncated, of another format version, or not a shard."""


def encode_str(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def from_h5(v: object) -> object:
    if isinstance(v, bytes | np.bytes_):
        return bytes(v).decode("utf-8", "surrogateescape")
    return v.item() if isinstance(v, np.generic) else v


def _set_attr(attrs: h5py.AttributeManager, key: str, value: object) -> None:
    if isinstance(value, str):
        attrs.create(key, encode_str(value), dtype=h5py.string_dtype("utf-8"))
    elif isinstance(value, bool | int | float | np.bool_ | np.integer | np.floating):
        attrs[key] = value
    else:
        raise TypeError(f"attribute {key!r}: expected str, int, float or bool, got {type(value)}")


@dataclass
class ClipRecord:
    """One preprocessed clip, as the pipeline produces it (frames in OpenCV BGR order)."""

    clip_id: str
    source: str
    split: str
    label: int  # -1: no class label
    word: str
    speaker: str
    frames_bgr: np.ndarray  # (T,260,260,3) uint8 BGR
    mfcc: np.ndarray  # (N,20,12) float64
    bin_numbers: np.ndarray  # (N,) int, the original's l >= 2
    frame_index: np.ndarray  # (N,) int, video frame paired with each bin (bin l <-> frame l)
    transforms: np.ndarray  # (T,2,3) float64
    detected: np.ndarray  # (T,) bool
    input_fps: float
    extra: dict[str, float | int | str] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ValueError naming the clip when a field has the wrong shape, type or range."""
        f, m = np.asarray(self.frames_bgr), np.asarray(self.mfcc)
        b, fi = np.asarray(self.bin_numbers), np.asarray(self.frame_index)
        t, n, s = len(f) if f.ndim else 0, len(m) if m.ndim == 3 else -1, FRAME_SIZE
        checks = [
            (f.dtype == np.uint8 and f.shape[1:] == (s, s, 3) and t > 0,
             f"frames_bgr must be (T>0,{s},{s},3) uint8, got {f.shape} {f.dtype}"),
            (m.shape == (n, 20, 12) and m.dtype.kind in "fiu",
             f"mfcc must be (N,20,12) float, got {m.shape} {m.dtype}"),
            (b.shape == (n,) and b.dtype.kind in "iu" and bool(np.all(b >= 2)),
             f"bin_numbers must be (N,) ints >= 2, got {b.shape} {b.dtype}"),
            (fi.shape == (n,) and fi.dtype.kind in "iu" and bool(np.all((fi >= 0) & (fi < t))),
             f"frame_index must be (N,) ints in [0, T={t}), got {fi.shape} {fi.dtype}"),
            (np.shape(self.transforms) == (t, 2, 3), f"transforms must be ({t},2,3)"),
            (np.shape(self.detected) == (t,), f"detected must be ({t},)"),
            (isinstance(self.label, int | np.integer) and self.label >= -1, "label must be >= -1"),
            (not set(self.extra) & set(RECORD_ATTRS), f"extra keys clash with {RECORD_ATTRS}"),
        ]  # fmt: skip
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"clip {self.clip_id!r}: {msg}")


class ShardWriter:
    """Atomic writer: clips go to ``<name>.tmp-<pid>``, renamed to ``path`` on success."""

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
        self._f, self._ids = h5py.File(self.tmp_path, "w"), []
        try:
            for key, value in {
                "format_version": SHARD_FORMAT_VERSION, "split": self.split, "shard": self.shard,
                "image_format": self.image_format, "jpeg_quality": self.jpeg_quality,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "davs_model_version": __version__,
            }.items():  # fmt: skip
                _set_attr(self._f.attrs, key, value)
            self._f.create_group(CLIPS)
        except BaseException:
            self._abort()
            raise
        return self

    def add(self, record: ClipRecord) -> int:
        """Append one clip; returns its index in the shard."""
        if self._f is None:
            raise RuntimeError("ShardWriter.add() called outside its `with` block")
        record.validate()
        if record.clip_id in self._ids:
            raise ValueError(f"{self.path}: clip id {record.clip_id!r} added twice")
        i, frames, q = len(self._ids), np.asarray(record.frames_bgr), self.jpeg_quality
        g = self._f.create_group(f"{CLIPS}/{i:06d}")
        if self.image_format == "jpeg":
            data, params = np.empty(len(frames), dtype=object), [cv2.IMWRITE_JPEG_QUALITY, q]
            for j, im in enumerate(frames):  # cv2.imencode raises cv2.error if it fails
                data[j] = cv2.imencode(".jpg", im, params)[1].reshape(-1)
            g.create_dataset(ALIGN_FACE, data=data, dtype=h5py.vlen_dtype(np.uint8))
        else:  # RGB, one chunk per frame, uncompressed: cheap random access to single frames
            rgb = np.ascontiguousarray(frames[..., ::-1])
            g.create_dataset(ALIGN_FACE, data=rgb, chunks=(1, *rgb.shape[1:]))
        g[ALIGN_FACE].attrs["image_format"] = self.image_format
        for name, (key, dtype) in ARRAYS.items():
            g.create_dataset(name, data=np.asarray(getattr(record, key), dtype=dtype))
        values = {k: getattr(record, k) for k in RECORD_ATTRS[:6]}
        values.update(input_fps=float(record.input_fps), n_frames=len(frames))
        values.update(n_bins=len(record.mfcc), **record.extra)
        for key, value in values.items():
            _set_attr(g.attrs, key, value)
        self._ids.append(record.clip_id)
        return i

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
        except (OSError, KeyError) as e:  # h5py: OSError for damaged files, KeyError for objects
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
        """(k,260,260,3) uint8 RGB; only the frames selected by ``idx`` are read and decoded."""
        with self._reading() as f:
            ds = self._group(f, i)[ALIGN_FACE]
            sel = np.atleast_1d(np.arange(ds.shape[0])[slice(None) if idx is None else idx])
            out = np.empty((len(sel), FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
            if len(sel) and ds.ndim == 4:  # raw RGB; h5py wants increasing, unique indices
                uniq, inverse = np.unique(sel, return_inverse=True)
                return ds[uniq][inverse]
            for k, j in enumerate(sel):
                im = cv2.imdecode(ds[j], cv2.IMREAD_COLOR)
                if im is None or im.shape != out.shape[1:]:
                    raise ShardError(f"{self.path}: clip {i} frame {j}: bad JPEG; {CORRUPT_HINT}")
                out[k] = cv2.cvtColor(im, cv2.COLOR_BGR2RGB)
        return out

    def clip(self, i: int) -> dict:
        """Everything about one clip: meta fields, ``frames`` (RGB), ``mfcc`` and the arrays."""
        arrays = {key: self.array(i, name) for name, (key, _) in ARRAYS.items()}
        return {**self.meta(i), "frames": self.frames(i), **arrays}


def __getattr__(name: str):  # write_index, export_original_layout: lazily, export.py imports us
    if name not in ("write_index", "export_original_layout"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("davs_model.io.export"), name)

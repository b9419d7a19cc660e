"""HDF5 shards of preprocessed clips: record type, atomic writer, lazy reader.

Layout of one shard (``SHARD_FORMAT_VERSION`` 1)::

    /            attrs format_version, split, shard, image_format, jpeg_quality, created,
                 davs_model_version, n_clips
    /clip_ids    (n,) vlen UTF-8 strings (bytes of ``str.encode('utf-8', 'surrogateescape')``)
    /clips/000000 ...  one group per clip, named by its index in the shard
        align_face256  jpeg: (T,) vlen uint8, one standard JPEG per frame (cv2.imencode of BGR)
                       raw:  (T,260,260,3) uint8 RGB, one chunk per frame, uncompressed
        mfcc20 (N,20,12) float64, bin_numbers (N,) int64 (l >= 2), frame_index (N,) int64,
        transforms (T,2,3) float64, detected (T,) bool
        attrs clip_id, source, split, label, word, speaker, input_fps, n_frames, n_bins, + extra

``write_index`` and ``export_original_layout`` live in :mod:`davs_model.io.export` and are
re-exported here lazily.
"""

from __future__ import annotations

import operator
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import h5py
import numpy as np

from davs_model import SHARD_FORMAT_VERSION, __version__

__all__ = [
    "ClipRecord",
    "ShardError",
    "ShardReader",
    "ShardWriter",
    "export_original_layout",
    "write_index",
]

CLIP_IDS = "clip_ids"
CLIPS = "clips"
ALIGN_FACE = "align_face256"
MFCC = "mfcc20"
BIN_NUMBERS = "bin_numbers"
FRAME_INDEX = "frame_index"
TRANSFORMS = "transforms"
DETECTED = "detected"
FRAME_SIZE = 260
MFCC_WINDOW = (20, 12)
IMAGE_FORMATS = ("jpeg", "raw")
RECORD_ATTRS = (
    "clip_id", "source", "split", "label", "word", "speaker", "input_fps", "n_frames", "n_bins",
)  # fmt: skip
FIX_HINT = "re-run `snakemake preprocess`; the shard format changed"
CORRUPT_HINT = "the file is corrupt or truncated: delete it and re-run `snakemake preprocess`"


class ShardError(RuntimeError):
    """A shard is missing, corrupt, truncated, of another format version, or not a shard."""


def encode_str(s: str) -> bytes:
    """UTF-8 bytes of ``s``; surrogate escapes (undecodable file-name bytes) become the raw bytes."""
    return s.encode("utf-8", "surrogateescape")


def decode_str(v: object) -> str:
    if isinstance(v, bytes | np.bytes_):
        return bytes(v).decode("utf-8", "surrogateescape")
    return str(v)


def _py(v: object) -> object:
    if isinstance(v, str | bytes | np.bytes_):
        return decode_str(v)
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
    frame_index: np.ndarray  # (N,) int, video frame paired with each bin
    transforms: np.ndarray  # (T,2,3) float64
    detected: np.ndarray  # (T,) bool
    input_fps: float
    extra: dict[str, float | int | str] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ValueError naming the clip when a field has the wrong shape, type or range."""
        f, m = np.asarray(self.frames_bgr), np.asarray(self.mfcc)
        b, fi = np.asarray(self.bin_numbers), np.asarray(self.frame_index)
        t, n = len(f) if f.ndim else 0, len(m) if m.ndim == 3 else -1
        s = FRAME_SIZE
        checks = [
            (f.dtype == np.uint8 and f.shape[1:] == (s, s, 3) and t > 0,
             f"frames_bgr must be (T>0,{s},{s},3) uint8, got {f.shape} {f.dtype}"),
            (m.shape == (n, *MFCC_WINDOW) and m.dtype.kind in "fiu",
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
    """Write clips to ``path`` atomically: a temporary ``<name>.tmp-<pid>`` is renamed on success."""

    def __init__(
        self, path, split: str, shard: int, image_format: str = "jpeg", jpeg_quality: int = 95
    ):
        if image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
        if not 0 <= int(jpeg_quality) <= 100:
            raise ValueError(f"jpeg_quality must be in 0..100, got {jpeg_quality}")
        self.path = Path(path)
        self.split, self.shard = split, int(shard)
        self.image_format, self.jpeg_quality = image_format, int(jpeg_quality)
        self.tmp_path = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        self._f: h5py.File | None = None
        self._ids: list[str] = []

    def __enter__(self) -> ShardWriter:
        if self._f is not None:
            raise RuntimeError(f"ShardWriter for {self.path} is already open")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._ids = []
        self._f = h5py.File(self.tmp_path, "w")
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
        i = len(self._ids)
        g = self._f.create_group(f"{CLIPS}/{i:06d}")
        frames = np.asarray(record.frames_bgr)
        if self.image_format == "jpeg":
            data = np.empty(len(frames), dtype=object)
            for j, im in enumerate(frames):
                ok, buf = cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
                if not ok:
                    raise ValueError(f"clip {record.clip_id!r}: JPEG encoding of frame {j} failed")
                data[j] = buf.reshape(-1)
            g.create_dataset(ALIGN_FACE, data=data, dtype=h5py.vlen_dtype(np.uint8))
        else:
            rgb = np.ascontiguousarray(frames[..., ::-1])
            g.create_dataset(ALIGN_FACE, data=rgb, chunks=(1, *rgb.shape[1:]))
        g[ALIGN_FACE].attrs["image_format"] = self.image_format
        g.create_dataset(MFCC, data=np.asarray(record.mfcc, dtype=np.float64))
        g.create_dataset(BIN_NUMBERS, data=np.asarray(record.bin_numbers, dtype=np.int64))
        g.create_dataset(FRAME_INDEX, data=np.asarray(record.frame_index, dtype=np.int64))
        g.create_dataset(TRANSFORMS, data=np.asarray(record.transforms, dtype=np.float64))
        g.create_dataset(DETECTED, data=np.asarray(record.detected, dtype=bool))
        values = {k: getattr(record, k) for k in RECORD_ATTRS[:6]}
        values.update(input_fps=float(record.input_fps), n_frames=len(frames))
        values.update(n_bins=len(record.mfcc), **record.extra)
        for key, value in values.items():
            _set_attr(g.attrs, key, value)
        self._ids.append(record.clip_id)
        return i

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self._abort()
            return False
        try:
            ids = np.array([encode_str(c) for c in self._ids] or [b""], dtype=object)
            self._f.create_dataset(
                CLIP_IDS, data=ids[: len(self._ids)], dtype=h5py.string_dtype("utf-8")
            )
            self._f.attrs["n_clips"] = len(self._ids)
            self._f.close()
            self._f = None
            with open(self.tmp_path, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(self.tmp_path, self.path)
        except BaseException:
            self._abort()
            raise
        return False

    def _abort(self) -> None:
        """Close and remove this writer's own temporary file; nothing else is touched."""
        if self._f is not None:
            try:
                self._f.close()
            except Exception:  # noqa: BLE001 - the original exception matters, not this one
                pass
            self._f = None
        self.tmp_path.unlink(missing_ok=True)


class ShardReader:
    """Lazy, picklable reader: the HDF5 file is opened on first access (again after unpickling)."""

    def __init__(self, path):
        self.path = Path(path)
        self._f: h5py.File | None = None
        self._ids: list[str] | None = None
        self._index: dict[str, int] | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_f"] = None  # h5py handles do not pickle; each DataLoader worker reopens
        return state

    @property
    def file(self) -> h5py.File:
        if self._f is None:
            if not self.path.is_file():
                raise ShardError(f"{self.path}: shard not found; re-run `snakemake preprocess`")
            try:
                f = h5py.File(self.path, "r")
            except OSError as e:
                raise ShardError(
                    f"{self.path}: not a readable HDF5 file ({e}); {CORRUPT_HINT}"
                ) from e
            try:
                version = f.attrs.get("format_version")
                if version is None or CLIPS not in f or CLIP_IDS not in f:
                    raise ShardError(
                        f"{self.path}: not a DAVS shard (no format_version); {FIX_HINT}"
                    )
                if int(version) != SHARD_FORMAT_VERSION:
                    raise ShardError(
                        f"{self.path}: shard format version {int(version)}, this davs_model reads "
                        f"version {SHARD_FORMAT_VERSION}; {FIX_HINT}"
                    )
            except BaseException as e:
                f.close()
                if isinstance(e, OSError | KeyError):
                    raise ShardError(f"{self.path}: cannot read ({e}); {CORRUPT_HINT}") from e
                raise
            self._f = f
        return self._f

    @contextmanager
    def _reading(self):
        try:
            yield self.file
        except (OSError, KeyError) as e:
            raise ShardError(f"{self.path}: cannot read ({e}); {CORRUPT_HINT}") from e

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def attr(self, key: str) -> object:
        """A root attribute (split, shard, image_format, jpeg_quality, created, ...)."""
        with self._reading() as f:
            return _py(f.attrs[key])

    @property
    def clip_ids(self) -> list[str]:
        if self._ids is None:
            with self._reading() as f:
                self._ids = [decode_str(b) for b in f[CLIP_IDS][()]]
        return self._ids

    def __len__(self) -> int:
        return len(self.clip_ids)

    def index_of(self, clip_id: str) -> int:
        if self._index is None:
            self._index = {c: i for i, c in enumerate(self.clip_ids)}
        try:
            return self._index[clip_id]
        except KeyError:
            raise KeyError(f"{self.path}: no clip {clip_id!r} in this shard") from None

    def _group(self, f: h5py.File, i: int) -> h5py.Group:
        n, i = len(self), operator.index(i)
        if not -n <= i < n:
            raise IndexError(f"{self.path}: clip index {i} out of range (shard has {n} clips)")
        return f[CLIPS][f"{i % n:06d}"]

    def meta(self, i: int, keys: tuple[str, ...] | None = None) -> dict:
        """Clip attributes; the ones beyond the standard fields are under ``extra``."""
        with self._reading() as f:
            attrs = self._group(f, i).attrs
            if keys is not None:
                return {k: _py(attrs[k]) for k in keys}
            values = {k: _py(v) for k, v in attrs.items()}
        out = {k: values.pop(k) for k in RECORD_ATTRS}
        return {**out, "index": operator.index(i) % len(self), "extra": values}

    def array(self, i: int, name: str) -> np.ndarray:
        """One per-clip dataset in full (mfcc20, bin_numbers, frame_index, transforms, ...)."""
        with self._reading() as f:
            return self._group(f, i)[name][()]

    def mfcc(self, i: int) -> np.ndarray:
        return self.array(i, MFCC)

    def encoded_frames(self, i: int) -> list[bytes]:
        """The stored JPEG files of a jpeg shard, byte for byte."""
        if self.attr("image_format") != "jpeg":
            raise ValueError(f"{self.path}: encoded_frames() needs a jpeg shard")
        return [bytes(b) for b in self.array(i, ALIGN_FACE)]

    def frames(self, i: int, idx=None) -> np.ndarray:
        """(k,260,260,3) uint8 RGB; only the frames selected by ``idx`` are read and decoded."""
        with self._reading() as f:
            ds = self._group(f, i)[ALIGN_FACE]
            sel = np.atleast_1d(np.arange(ds.shape[0])[slice(None) if idx is None else idx])
            out = np.empty((len(sel), FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
            if len(sel) == 0:
                return out
            if ds.ndim == 4:  # raw RGB; h5py wants increasing, unique indices
                uniq, inverse = np.unique(sel, return_inverse=True)
                return ds[uniq][inverse]
            for k, j in enumerate(sel):
                im = cv2.imdecode(ds[j], cv2.IMREAD_COLOR)
                if im is None or im.shape != out.shape[1:]:
                    raise ShardError(f"{self.path}: clip {i} frame {j}: bad JPEG; {CORRUPT_HINT}")
                out[k] = cv2.cvtColor(im, cv2.COLOR_BGR2RGB)
        return out

    def clip(self, i: int) -> dict:
        """Everything about one clip: meta fields, ``frames`` (RGB) and all arrays."""
        out = self.meta(i)
        out["frames"] = self.frames(i)
        for name in (MFCC, BIN_NUMBERS, FRAME_INDEX, TRANSFORMS, DETECTED):
            out["mfcc" if name == MFCC else name] = self.array(i, name)
        return out


def __getattr__(name: str):
    if name in ("write_index", "export_original_layout"):
        from davs_model.io import export

        return getattr(export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

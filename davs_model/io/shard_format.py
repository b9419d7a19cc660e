"""The HDF5 shard layout shared by the writer and the reader (:mod:`davs_model.io.shards`): names, hints,
attribute encoding, and the record of one clip that the writer takes.

Layout: root attrs (``ShardWriter.__enter__``), ``clip_ids`` (n,) vlen UTF-8 (surrogateescape); per clip a group
``clips/000000`` with ``align_face256`` (jpeg: (T,) vlen uint8, one JPEG file per frame, and ``CRC32`` of each;
raw: (T,260,260,3) uint8 RGB), ``ARRAYS`` and attrs ``RECORD_ATTRS`` + extra.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import h5py
import numpy as np

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
CORRUPT_HINT = "the file is corrupt or truncated: delete this file and re-run `snakemake preprocess` (rebuilds it)"
CRC32 = "align_face256_crc32"  # zlib.crc32 per JPEG (vlen data cannot take HDF5's fletcher32 checksum filter)


class ShardError(RuntimeError):
    """A shard is missing, corrupt, truncated, of another format version, or not a shard."""


def encode_str(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def from_h5(v: object) -> object:
    if isinstance(v, bytes | np.bytes_):
        return bytes(v).decode("utf-8", "surrogateescape")
    return v.item() if isinstance(v, np.generic) else v


def set_attr(attrs: h5py.AttributeManager, key: str, value: object) -> None:
    if isinstance(value, str):
        attrs.create(key, encode_str(value), dtype=h5py.string_dtype("utf-8"))
    elif isinstance(value, bool | int | float | np.bool_ | np.integer | np.floating):
        attrs[key] = value
    else:
        raise TypeError(f"attribute {key!r}: expected str, int, float or bool, got {type(value)}")


class FrameStream(Protocol):
    """Frames that arrive one at a time with a known count (e.g. decoded and warped as the writer asks)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[np.ndarray]: ...


@dataclass
class ClipRecord:
    """One preprocessed clip, as the pipeline produces it (frames in OpenCV BGR order)."""

    clip_id: str
    source: str
    split: str
    label: int  # -1: no class label
    word: str
    speaker: str
    frames_bgr: np.ndarray | FrameStream  # (T,260,260,3) uint8 BGR, or T such frames streamed to the writer
    mfcc: np.ndarray  # (N,20,12) float64
    bin_numbers: np.ndarray  # (N,) int, the original's l >= 2
    frame_index: np.ndarray  # (N,) int, video frame paired with each bin (bin l <-> frame l)
    transforms: np.ndarray  # (T,2,3) float64
    detected: np.ndarray  # (T,) bool
    input_fps: float
    extra: dict[str, float | int | str] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ValueError naming the clip when a field has the wrong shape, type or range.

        Streamed frames are counted here and checked one by one as ``ShardWriter.add`` writes them."""
        f, m, s = self.frames_bgr, np.asarray(self.mfcc), FRAME_SIZE
        b, fi = np.asarray(self.bin_numbers), np.asarray(self.frame_index)
        streamed = not isinstance(f, np.ndarray) and hasattr(f, "__len__") and hasattr(f, "__iter__")
        f = f if streamed else np.asarray(f)
        t, n = len(f) if streamed or f.ndim else 0, len(m) if m.ndim == 3 else -1
        frames_ok = t > 0 if streamed else f.dtype == np.uint8 and f.shape[1:] == (s, s, 3) and t > 0
        checks = [
            (frames_ok, f"frames_bgr must be (T>0,{s},{s},3) uint8, got {np.shape(f)} {getattr(f, 'dtype', '')}"),
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

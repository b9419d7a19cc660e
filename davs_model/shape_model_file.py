"""Reading dlib's ``shape_predictor`` ``.dat`` files (``dlib::serialize``, version 1) into contiguous arrays.

Hand-written because nothing else reads them: dlib loads the model only into its own objects, which expose no
arrays. ``davs_model/shape_predictor.py`` evaluates what this reads.
"""

from __future__ import annotations

import mmap
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np


@numba.njit(cache=True)
def _ints(buf, pos, out):
    """Read len(out) dlib-packed integers: a byte (bit 7 sign, low 4 bits byte count), then little-endian bytes."""
    for k in range(out.shape[0]):
        if pos < 0 or pos >= buf.shape[0]:
            return -1
        head = buf[pos]
        n = head & 0x0F
        if n > 8 or pos + n >= buf.shape[0]:
            return -1
        v = 0
        for j in range(n):
            v |= np.int64(buf[pos + 1 + j]) << (8 * j)
        out[k] = -v if head & 0x80 else v
        pos += 1 + n
    return pos


@numba.njit(cache=True)
def _floats(buf, pos, out):
    """Read len(out) dlib floats: each a packed mantissa and a packed exponent, value = mantissa · 2^exponent."""
    pair = np.empty(2, np.int64)
    for k in range(out.shape[0]):
        pos = _ints(buf, pos, pair)
        if pos < 0 or pair[1] > 10_000 or pair[1] < -10_000:  # dlib's inf/NaN markers: never in a trained model
            return -1
        out[k] = np.float32(np.float64(pair[0]) * 2.0 ** pair[1])
    return pos


@numba.njit(cache=True)
def _forests(buf, pos, n_trees, n_splits, n_parts2, idx, thresh, leaves):
    """One cascade's ``std::vector<regression_tree>`` → idx (T, S, 2), thresh (T, S), leaves (T, S+1, P)."""
    one = np.empty(1, np.int64)
    two = np.empty(2, np.int64)
    f = np.empty(1, np.float32)
    for t in range(n_trees):
        pos = _ints(buf, pos, one)
        if pos < 0 or one[0] != n_splits:
            return -1
        for s in range(n_splits):
            pos = _ints(buf, pos, two)
            idx[t, s, 0], idx[t, s, 1] = two[0], two[1]
            pos = _floats(buf, pos, f)
            thresh[t, s] = f[0]
        pos = _ints(buf, pos, one)
        if pos < 0 or one[0] != n_splits + 1:
            return -1
        for leaf in range(n_splits + 1):
            pos = _ints(buf, pos, two)  # matrix header: -rows, -cols
            if pos < 0 or two[0] != -n_parts2 or two[1] != -1:
                return -1
            pos = _floats(buf, pos, leaves[t, leaf])
            if pos < 0:
                return -1
    return pos


class _Reader:
    """Sequential reader of a dlib-serialised byte buffer: the file mapped read-only, read pages let go as it goes
    (``release``), so the 100 MB file never adds to the peak memory beside the 66 MB of arrays read from it."""

    def __init__(self, mapped: mmap.mmap, path: Path):
        self.mapped, self.buf, self.pos, self.path = mapped, np.frombuffer(mapped, np.uint8), 0, path

    def release(self) -> None:
        with suppress(AttributeError, OSError):  # madvise: Linux and macOS; elsewhere the pages just stay mapped
            self.mapped.madvise(mmap.MADV_DONTNEED, 0, self.pos // mmap.PAGESIZE * mmap.PAGESIZE)

    def _check(self, pos: int, what: str) -> None:
        if pos < 0 or pos > len(self.buf):
            raise ValueError(f"{self.path}: not a dlib shape_predictor file (bad {what} at byte {self.pos})")
        self.pos = pos

    def ints(self, n: int, what: str) -> np.ndarray:
        out = np.empty(n, np.int64)
        self._check(_ints(self.buf, self.pos, out), what)
        return out

    def floats(self, n: int, what: str) -> np.ndarray:
        out = np.empty(n, np.float32)
        self._check(_floats(self.buf, self.pos, out), what)
        return out

    def peek(self, what: str) -> int:
        pos = self.pos
        value = int(self.ints(1, what)[0])
        self.pos = pos
        return value


@dataclass(frozen=True)
class ShapeModel:
    """The arrays of a dlib ``shape_predictor``: C cascades of T trees of depth D over P points, F features."""

    initial_shape: np.ndarray  # (2P,) float32, x0 y0 x1 y1 … in the unit box
    split_idx: np.ndarray  # (C, T, 2^D − 1, 2) int32: the two features each split compares
    split_thresh: np.ndarray  # (C, T, 2^D − 1) float32
    leaves: np.ndarray  # (C, T, 2^D, 2P) float32: the shape increment of each leaf
    anchor_idx: np.ndarray  # (C, F) int32: the point each feature pixel is attached to
    deltas: np.ndarray  # (C, F, 2) float32: the pixel's offset from that point in the initial shape

    @property
    def n_parts(self) -> int:
        return len(self.initial_shape) // 2


def load_shape_model(path: str | Path) -> ShapeModel:
    """Read a dlib ``shape_predictor`` ``.dat`` file (format version 1, as ``dlib::serialize`` writes it)."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file, not a dlib shape_predictor model")
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        r = _Reader(mapped, path)
        try:
            return _read(r, path)
        finally:
            del r.buf  # the mapping closes only once no array points into it


def _read(r: _Reader, path: Path) -> ShapeModel:
    if r.ints(1, "version")[0] != 1:
        raise ValueError(f"{path}: unsupported shape_predictor version (dlib writes version 1)")
    rows, cols = r.ints(2, "initial shape header")
    if cols != -1 or rows >= 0:
        raise ValueError(f"{path}: not a dlib shape_predictor file (initial shape header {rows}, {cols})")
    initial = r.floats(-rows, "initial shape")
    n_cascades = int(r.ints(1, "cascade count")[0])
    if n_cascades < 1:
        raise ValueError(f"{path}: not a dlib shape_predictor file (no cascades)")
    n_trees = r.peek("tree count")
    n_splits = None
    idx = thresh = leaves = None
    for c in range(n_cascades):
        if r.ints(1, "tree count")[0] != n_trees:
            raise ValueError(f"{path}: cascades of different sizes are not supported")
        if n_splits is None:
            n_splits = r.peek("split count")
            if n_splits < 1 or (n_splits + 1) & n_splits:  # dlib's trees are complete: 2^depth − 1 splits
                raise ValueError(f"{path}: trees with {n_splits} splits are not complete binary trees")
            idx = np.empty((n_cascades, n_trees, n_splits, 2), np.int32)
            thresh = np.empty((n_cascades, n_trees, n_splits), np.float32)
            leaves = np.empty((n_cascades, n_trees, n_splits + 1, len(initial)), np.float32)
        pos = _forests(r.buf, r.pos, n_trees, n_splits, len(initial), idx[c], thresh[c], leaves[c])
        r._check(pos, f"trees of cascade {c}")
        r.release()
    if r.ints(1, "anchor count")[0] != n_cascades:
        raise ValueError(f"{path}: {n_cascades} cascades but a different number of feature sets")
    anchors, deltas = [], []
    for _ in range(n_cascades):
        anchors.append(r.ints(int(r.ints(1, "feature count")[0]), "anchors"))
    if r.ints(1, "delta count")[0] != n_cascades:
        raise ValueError(f"{path}: {n_cascades} cascades but a different number of feature offset sets")
    for a in anchors:
        if r.ints(1, "delta count")[0] != len(a):
            raise ValueError(f"{path}: feature offsets do not match the anchors")
        deltas.append(r.floats(2 * len(a), "deltas").reshape(-1, 2))
    if r.pos != len(r.buf):
        raise ValueError(f"{path}: {len(r.buf) - r.pos} unexpected bytes after the model")
    if len({len(a) for a in anchors}) != 1:
        raise ValueError(f"{path}: cascades with different feature counts are not supported")
    anchor_idx = np.stack(anchors)
    # the compiled evaluation does not check indices: an out-of-range one in a damaged file must stop here
    if (
        idx.min() < 0
        or idx.max() >= anchor_idx.shape[1]
        or anchor_idx.min() < 0
        or anchor_idx.max() >= len(initial) // 2
    ):
        raise ValueError(f"{path}: feature or landmark indices out of range (a damaged file?)")
    return ShapeModel(
        initial_shape=initial,
        split_idx=idx,
        split_thresh=thresh,
        leaves=leaves,
        anchor_idx=anchor_idx.astype(np.int32),
        deltas=np.stack(deltas),
    )

"""dlib's 68-point shape predictor (an ensemble of regression trees), evaluated by our own compiled code.

Why hand-written: dlib's own evaluation is the preprocessing bottleneck (1.0–1.5 ms a frame, 45 % of a shard job;
BENCHMARKS.md, issue 7.1). It keeps each of the model's 120,000 leaf vectors in its own heap block and converts the
whole frame to RGB first. Here the model's arrays are read once from the same ``.dat`` file into contiguous arrays,
and the pixels are read straight from the BGR frame. The arithmetic follows dlib's ``shape_predictor.h`` step by
step (float32 shapes, Umeyama similarity transform in float64, the (r+g+b)//3 grey of dlib's
``get_pixel_intensity``, points rounded as dlib rounds), so the landmarks equal dlib's bit for bit:
``tests/unit/test_shape_predictor.py`` compares them on real faces. dlib stays the reference
(``FaceLandmarker(engine="dlib")``).
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
    n_cascades = r.peek("cascade count")
    r.ints(1, "cascade count")
    n_trees = r.peek("tree count")
    n_splits = None
    idx = thresh = leaves = None
    for c in range(n_cascades):
        if r.ints(1, "tree count")[0] != n_trees:
            raise ValueError(f"{path}: cascades of different sizes are not supported")
        if n_splits is None:
            n_splits = r.peek("split count")
            idx = np.empty((n_cascades, n_trees, n_splits, 2), np.int64)
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
    r.ints(1, "delta count")
    for a in anchors:
        if r.ints(1, "delta count")[0] != len(a):
            raise ValueError(f"{path}: feature offsets do not match the anchors")
        deltas.append(r.floats(2 * len(a), "deltas").reshape(-1, 2))
    if r.pos != len(r.buf):
        raise ValueError(f"{path}: {len(r.buf) - r.pos} unexpected bytes after the model")
    return ShapeModel(
        initial_shape=initial,
        split_idx=idx.astype(np.int32),
        split_thresh=thresh,
        leaves=leaves,
        anchor_idx=np.stack(anchors).astype(np.int32),
        deltas=np.stack(deltas),
    )


@numba.njit(cache=True)
def _similarity(initial, shape):
    """The 2×2 part of dlib's ``find_similarity_transform(initial → shape)`` (Umeyama), as float32 like dlib.

    dlib takes it from an SVD of the 2×2 cross-covariance; in 2-D the same rotation and scale have a closed form:
    R ∝ [[a+d, b−c], [c−b, a+d]] and trace(D·S) = |(a+d, c−b)|, reflections included.
    """
    n = initial.shape[0] // 2
    mfx = mfy = mtx = mty = 0.0
    for i in range(n):
        mfx += initial[2 * i]
        mfy += initial[2 * i + 1]
        mtx += shape[2 * i]
        mty += shape[2 * i + 1]
    mfx, mfy, mtx, mty = mfx / n, mfy / n, mtx / n, mty / n
    sigma = a = b = c = d = 0.0
    for i in range(n):
        fx, fy = initial[2 * i] - mfx, initial[2 * i + 1] - mfy
        tx, ty = shape[2 * i] - mtx, shape[2 * i + 1] - mty
        sigma += fx * fx + fy * fy
        a += tx * fx
        b += tx * fy
        c += ty * fx
        d += ty * fy
    sigma, a, b, c, d = sigma / n, a / n, b / n, c / n, d / n
    cos, sin = a + d, c - b
    norm = np.sqrt(cos * cos + sin * sin)
    out = np.empty((2, 2), np.float32)
    if norm == 0.0:
        out[0, 0], out[0, 1], out[1, 0], out[1, 1] = 1.0, 0.0, 0.0, 1.0
        return out
    scale = norm / sigma if sigma != 0.0 else 1.0
    cos, sin = cos / norm, sin / norm
    out[0, 0], out[0, 1], out[1, 0], out[1, 1] = scale * cos, -scale * sin, scale * sin, scale * cos
    return out


@numba.njit(cache=True)
def _features(pixels, offset, h, w, box, initial, shape, anchor_idx, deltas, feats):
    """dlib's ``extract_feature_pixel_values``: the grey under each feature pixel of a cascade (0 outside)."""
    m = _similarity(initial, shape)
    left, top = np.float64(box[0]), np.float64(box[1])
    sx, sy = np.float64(box[2]) - left, np.float64(box[3]) - top  # unnormalizing_tform: (0,0)→tl, (1,1)→br
    for i in range(anchor_idx.shape[0]):
        k = anchor_idx[i]
        dx, dy = deltas[i, 0], deltas[i, 1]
        px = np.float32(m[0, 0] * dx + m[0, 1] * dy) + shape[2 * k]
        py = np.float32(m[1, 0] * dx + m[1, 1] * dy) + shape[2 * k + 1]
        x = np.floor(sx * np.float64(px) + left + 0.5)  # dlib rounds a dpoint to a point as floor(v + 0.5)
        y = np.floor(sy * np.float64(py) + top + 0.5)
        if 0 <= x < w and 0 <= y < h:
            at = offset + 3 * (int(y) * w + int(x))
            feats[i] = np.float32(
                (np.int32(pixels[at]) + np.int32(pixels[at + 1]) + np.int32(pixels[at + 2])) // 3
            )
        else:
            feats[i] = np.float32(0.0)


@numba.njit(cache=True)
def _predict(pixels, offsets, sizes, boxes, initial, split_idx, split_thresh, leaves, anchor_idx, deltas, out):
    """Landmarks of B faces, in lockstep: each tree's leaves are read once for all B (they are the memory traffic).

    pixels: the B BGR images, raveled and concatenated (image b at offsets[b], sizes[b] = (h, w)); boxes (B, 4):
    l, t, r, b with r and b inclusive, as dlib.rectangle; out (B, P, 2) gets dlib's integer points. Per face this
    is ``dlib::shape_predictor::operator()``.
    """
    n, n_splits = boxes.shape[0], split_thresh.shape[2]
    shapes = np.empty((n, initial.shape[0]), np.float32)
    for b in range(n):
        shapes[b] = initial
    feats = np.empty((n, anchor_idx.shape[1]), np.float32)
    leaf_of = np.empty(n, np.int64)
    for cascade in range(leaves.shape[0]):
        for b in range(n):
            _features(pixels, offsets[b], sizes[b, 0], sizes[b, 1], boxes[b], initial, shapes[b],
                      anchor_idx[cascade], deltas[cascade], feats[b])  # fmt: skip
        for t in range(leaves.shape[1]):
            idx, thresh = split_idx[cascade, t], split_thresh[cascade, t]
            for b in range(n):
                node = 0
                while node < n_splits:  # a full tree: left child 2i+1 when f[idx1] - f[idx2] > thresh
                    right = not (feats[b, idx[node, 0]] - feats[b, idx[node, 1]] > thresh[node])
                    node = 2 * node + 1 + np.int64(right)
                leaf_of[b] = node - n_splits
            for b in range(n):
                leaf = leaves[cascade, t, leaf_of[b]]
                shape = shapes[b]
                for j in range(shape.shape[0]):
                    shape[j] += leaf[j]
    for b in range(n):
        left, top = np.float64(boxes[b, 0]), np.float64(boxes[b, 1])
        sx, sy = np.float64(boxes[b, 2]) - left, np.float64(boxes[b, 3]) - top
        for i in range(out.shape[1]):
            out[b, i, 0] = np.floor(sx * np.float64(shapes[b, 2 * i]) + left + 0.5)
            out[b, i, 1] = np.floor(sy * np.float64(shapes[b, 2 * i + 1]) + top + 0.5)


class ShapePredictor:
    """``dlib.shape_predictor`` on BGR frames, one face or many at once; the same integer landmarks as dlib."""

    def __init__(self, path: str | Path):
        self.model = load_shape_model(path)

    def predict(self, frames: list[np.ndarray], boxes: np.ndarray) -> np.ndarray:
        """(B, P, 2) landmarks of the face in ``boxes[b]`` (l, t, r, b inclusive) of BGR uint8 ``frames[b]``."""
        boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
        if len(frames) != len(boxes):
            raise ValueError(f"{len(frames)} frames but {len(boxes)} boxes")
        for f in frames:
            if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
                raise ValueError(f"frames must be H×W×3 uint8 BGR, got {f.dtype} {f.shape}")
        sizes = np.array([f.shape[:2] for f in frames], np.int64).reshape(-1, 2)
        offsets = np.concatenate([[0], np.cumsum(sizes[:, 0] * sizes[:, 1] * 3)[:-1]]).astype(np.int64)
        pixels = frames[0].reshape(-1) if len(frames) == 1 else np.concatenate([f.reshape(-1) for f in frames])
        out = np.empty((len(frames), self.model.n_parts, 2), np.float64)
        m = self.model
        _predict(np.ascontiguousarray(pixels), offsets, sizes, boxes, m.initial_shape, m.split_idx, m.split_thresh,
                 m.leaves, m.anchor_idx, m.deltas, out)  # fmt: skip
        return out

    def __call__(self, frame: np.ndarray, box) -> np.ndarray:
        """(P, 2) landmarks of one face."""
        return self.predict([frame], np.asarray(box))[0]

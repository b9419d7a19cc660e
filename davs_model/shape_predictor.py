"""dlib's 68-point shape predictor (an ensemble of regression trees), evaluated by our own compiled code.

Why hand-written: dlib's own evaluation is the preprocessing bottleneck (1.0–1.5 ms a frame, 45 % of a shard job;
BENCHMARKS.md, issue 7.1). It keeps each of the model's 120,000 leaf vectors in its own heap block and converts the
whole frame to RGB first. Here the model's arrays are read once from the same ``.dat`` file (``shape_model_file``),
and the pixels are read straight from the BGR frame. The arithmetic follows dlib's ``shape_predictor.h`` step by
step (float32 shapes, Umeyama similarity transform in float64, the (r+g+b)//3 grey of dlib's
``get_pixel_intensity``, points rounded as dlib rounds), so the landmarks equal dlib's bit for bit:
``tests/unit/test_shape_predictor.py`` compares them on real faces. dlib stays the reference
(``FaceLandmarker(engine="dlib")``).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils
from numba.extending import intrinsic

from davs_model.shape_model_file import ShapeModel, load_shape_model

__all__ = ["ShapeModel", "ShapePredictor", "load_shape_model"]


PREFETCH_AHEAD = 8  # trees between a leaf's prefetch and its use (0.58 → 0.39 ms per face one at a time, here)


@intrinsic
def _prefetch_row(typingctx, rows, row):
    """Ask the processor for ``rows[row]`` (a 2-D float32 C array's row: one leaf, 544 bytes) ahead of its use.

    ``llvm.prefetch`` (read, keep in all cache levels) on every 64-byte line of the row; a hint, with no effect on
    any value. numba has no prefetch of its own.
    """
    sig = numba.types.void(rows, row)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        zero = ir.Constant(ir.IntType(64), 0)
        start = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], zero])
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        # named llvm.prefetch.p0 or .p0i8, as this llvmlite names pointer types
        fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty=fnty)
        first = builder.bitcast(start, i8p)
        item = ir.Constant(ir.IntType(64), context.get_abi_sizeof(context.get_data_type(aryty.dtype)))
        n_bytes = builder.mul(builder.extract_value(ary.shape, 1), item)
        with cgutils.for_range_slice(builder, zero, n_bytes, ir.Constant(ir.IntType(64), 64)) as (offset, _):
            builder.call(fn, [builder.gep(first, [offset]), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


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
    is ``dlib::shape_predictor::operator()``. Per cascade, all leaves are found first (they depend only on the
    cascade's feature pixels), one tree level at a time over all trees (the trees' steps are then independent
    work the processor overlaps, instead of one chain of dependent loads per tree), then added tree by tree, in
    dlib's order, each leaf prefetched PREFETCH_AHEAD trees before it is added.
    """
    n, n_trees, n_leaves, n_coords = boxes.shape[0], leaves.shape[1], leaves.shape[2], initial.shape[0]
    n_splits, depth = split_thresh.shape[2], 0
    while (1 << depth) < n_leaves:
        depth += 1
    shapes = np.empty((n, n_coords), np.float32)
    for b in range(n):
        shapes[b] = initial
    feats = np.empty(anchor_idx.shape[1], np.float32)
    nodes = np.empty(n_trees, np.int64)
    leaf_of = np.empty((n_trees, n), np.int64)  # row of ``flat``
    flat = leaves.reshape(-1, n_coords)
    for cascade in range(leaves.shape[0]):
        idx, thresh = split_idx[cascade], split_thresh[cascade]
        for b in range(n):
            _features(pixels, offsets[b], sizes[b, 0], sizes[b, 1], boxes[b], initial, shapes[b],
                      anchor_idx[cascade], deltas[cascade], feats)  # fmt: skip
            nodes[:] = 0
            for _ in range(depth):  # a full tree: left child 2i+1 when f[idx1] - f[idx2] > thresh, else 2i+2
                for t in range(n_trees):
                    node = nodes[t]
                    left = feats[idx[t, node, 0]] - feats[idx[t, node, 1]] > thresh[t, node]
                    nodes[t] = 2 * node + 2 - np.int64(left)
            for t in range(n_trees):
                leaf_of[t, b] = (cascade * n_trees + t) * n_leaves + nodes[t] - n_splits
        for t in range(n_trees):
            if t + PREFETCH_AHEAD < n_trees:
                for b in range(n):
                    _prefetch_row(flat, leaf_of[t + PREFETCH_AHEAD, b])
            for b in range(n):
                leaf, shape = flat[leaf_of[t, b]], shapes[b]
                for j in range(n_coords):
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
        # A batch's frames are copied into one kept buffer: a fresh one per batch (MBs) cost more in page faults
        # than the kernel spends on the batch. The lock guards it where threads share this (cached) predictor.
        self._pixels = np.empty(0, np.uint8)
        self._lock = threading.Lock()

    def predict(self, frames: list[np.ndarray], boxes: np.ndarray) -> np.ndarray:
        """(B, P, 2) landmarks of the face in ``boxes[b]`` (l, t, r, b inclusive) of BGR uint8 ``frames[b]``."""
        boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
        if len(frames) != len(boxes):
            raise ValueError(f"{len(frames)} frames but {len(boxes)} boxes")
        for f in frames:
            if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
                raise ValueError(f"frames must be H×W×3 uint8 BGR, got {f.dtype} {f.shape}")
        out = np.empty((len(frames), self.model.n_parts, 2), np.float64)
        if not frames:
            return out
        sizes = np.array([f.shape[:2] for f in frames], np.int64).reshape(-1, 2)
        ends = np.cumsum(sizes[:, 0] * sizes[:, 1] * 3)
        offsets = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        m = self.model
        with self._lock:
            if len(frames) == 1:
                pixels = np.ascontiguousarray(frames[0]).reshape(-1)
            else:
                if len(self._pixels) < ends[-1]:
                    self._pixels = np.empty(int(ends[-1] * 1.25), np.uint8)
                pixels = self._pixels
                for f, start, end in zip(frames, offsets, ends, strict=True):
                    pixels[start:end].reshape(f.shape)[...] = f
            _predict(pixels, offsets, sizes, boxes, m.initial_shape, m.split_idx, m.split_thresh, m.leaves,
                     m.anchor_idx, m.deltas, out)  # fmt: skip
        return out

    def __call__(self, frame: np.ndarray, box) -> np.ndarray:
        """(P, 2) landmarks of one face."""
        return self.predict([frame], np.asarray(box))[0]

"""Face alignment exactly as the original DAVS preprocessing.

The original (`preprocess/face_align.py`, `preprocess/process256_224.py`; spec §2) maps three
anchors (left-eye centre, right-eye centre, mouth centre) onto a fixed template with an orthogonal
Procrustes similarity, warps the frame onto a 356×436 canvas (border grey 127), crops 268×268 and
resizes to 260×260. Every frame is aligned independently there; :mod:`davs_model.motion` adds
smoothing over time, gap filling and jitter scores on the per-frame 2×3 matrices (the ``M256.npy``
the original stores).

Points are (x, y) pixels, 0-based; images are BGR uint8.
"""

from __future__ import annotations

import cv2
import numpy as np

TEMPLATE_SCALE = 2
#: Anchor template on the canvas: left eye, right eye, mouth centre (spec §2.2, current commit).
TEMPLATE = np.array([[70, 112], [110, 112], [90, 150]], float) * TEMPLATE_SCALE
CANVAS_WIDTH = 356  # 178·2
CANVAS_HEIGHT = 436  # 218·2
BORDER_VALUE = (127, 127, 127)
CROP_TOP, CROP_BOTTOM = 104, 372  # 218 − 134 + 20, + 268
CROP_LEFT, CROP_RIGHT = 44, 312  # 178 − 134, + 268
CROP_SIZE = 268
OUTPUT_SIZE = 260
OUTPUT_SHAPE = (OUTPUT_SIZE, OUTPUT_SIZE, 3)
BAND_SHAPE = (CROP_SIZE, CROP_RIGHT, 3)  # the rows :func:`warp_aligned_fast` warps, before the crop and resize
OUTPUT_SCALE = OUTPUT_SIZE / CROP_SIZE

#: The LRW training protocol enters the eyes twice: source [L, R, L, R, M] vs this template.
TEMPLATE_DUPLICATED_EYES = TEMPLATE[[0, 1, 0, 1, 2]]


def similarity_transform(src_points: np.ndarray, dst_points: np.ndarray) -> np.ndarray:
    """The original's orthogonal Procrustes similarity (4 DOF): ``src_points`` → ``dst_points``.

    Ported line by line from ``face_align.py:13-36`` (spec §2.2): centre both sets, divide each by
    one scalar ``np.std`` over all its coordinates, ``R = (U·Vt)ᵀ`` from the SVD of ``P0ᵀ·Q0``, and
    ``M = [sR | c2 − sR·c1]`` with ``s = s2/s1``.

    There is deliberately no reflection guard (``det(R) < 0`` is possible for mirrored inputs), as
    in the original: parity with the released checkpoint's training data matters more here.

    Args:
        src_points: (n, 2) source points, n ≥ 2.
        dst_points: (n, 2) target points.

    Returns:
        (2, 3) float64 affine matrix ``M`` with ``dst ≈ M @ [x, y, 1]``.
    """
    p = np.asarray(src_points, dtype=np.float64)
    q = np.asarray(dst_points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or p.shape != q.shape or len(p) < 2:
        raise ValueError(f"need two (n, 2) point arrays with n >= 2, got {p.shape} and {q.shape}")
    c1, c2 = p.mean(axis=0), q.mean(axis=0)
    p0, q0 = p - c1, q - c2
    s1, s2 = np.std(p0), np.std(q0)
    if not (s1 > 0 and s2 > 0):
        raise ValueError("degenerate points: all source or all target points coincide")
    u, _, vt = np.linalg.svd((p0 / s1).T @ (q0 / s2))
    r = (u @ vt).T
    sr = (s2 / s1) * r
    return np.hstack([sr, (c2 - sr @ c1)[:, None]])


def similarity_transforms(src_points: np.ndarray, dst_points: np.ndarray) -> np.ndarray:
    """:func:`similarity_transform` of T point sets onto one target in one pass: (T, n, 2) → (T, 2, 3).

    Equal bit for bit to calling it on each set (tests/unit/test_align.py): the same operations, with each
    reduction over one contiguous axis as there (a reduction over two axes sums in another order), and the same
    LAPACK/BLAS calls per matrix. ~30× faster for a clip's frames than a call per frame.
    """
    p = np.asarray(src_points, dtype=np.float64)
    q = np.asarray(dst_points, dtype=np.float64)
    if p.ndim != 3 or p.shape[2] != 2 or p.shape[1:] != q.shape or q.shape[0] < 2:
        raise ValueError(f"need (T, n, 2) points and an (n, 2) target with n >= 2, got {p.shape} and {q.shape}")
    c1, c2 = p.mean(axis=1), q.mean(axis=0)
    p0, q0 = p - c1[:, None], q - c2
    s1, s2 = np.std(p0.reshape(len(p0), -1), axis=1), np.std(q0)
    if not (np.all(s1 > 0) and s2 > 0):
        raise ValueError("degenerate points: all source or all target points coincide")
    u, _, vt = np.linalg.svd(np.swapaxes(p0 / s1[:, None, None], 1, 2) @ (q0 / s2))
    sr = (s2 / s1)[:, None, None] * np.swapaxes(u @ vt, 1, 2)
    return np.concatenate([sr, (c2 - (sr @ c1[:, :, None])[..., 0])[..., None]], axis=2)


def _validate_anchors(anchors: np.ndarray) -> np.ndarray:
    a = np.asarray(anchors, dtype=np.float64)
    if a.shape != (3, 2):
        raise ValueError(f"anchors must have shape (3, 2) [left eye, right eye, mouth], got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("anchors contain NaN or inf")
    return a


def _validate_image(image_bgr: np.ndarray) -> None:
    if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        shape = getattr(image_bgr, "shape", None)
        raise ValueError(f"image must be an H×W×3 BGR array, got shape {shape}")
    if image_bgr.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image_bgr.dtype}")


def _validate_matrix(M: np.ndarray) -> np.ndarray:
    M = np.asarray(M, dtype=np.float64)
    if M.shape != (2, 3) or not np.all(np.isfinite(M)):
        raise ValueError(f"M must be a finite (2, 3) matrix, got shape {M.shape}")
    return M


def anchor_transform(anchors: np.ndarray, duplicate_eyes: bool = True) -> np.ndarray:
    """The 2×3 source → 356×436 canvas matrix for anchors (left eye, right eye, mouth centre).

    ``duplicate_eyes=True`` is the LRW training protocol (``process256_224.py``): five points
    [L, R, L, R, M], weighting the eyes 2:1 against the mouth. ``False`` is the original test/demo
    path (``face_align.py``): the three points, equally weighted.
    """
    a = _validate_anchors(anchors)
    if duplicate_eyes:
        return similarity_transform(a[[0, 1, 0, 1, 2]], TEMPLATE_DUPLICATED_EYES)
    return similarity_transform(a, TEMPLATE)


def anchor_transforms(anchors: np.ndarray, duplicate_eyes: bool = True) -> np.ndarray:
    """:func:`anchor_transform` of T frames' anchors (T, 3, 2) in one pass → (T, 2, 3), equal bit for bit."""
    a = np.asarray(anchors, dtype=np.float64)
    if a.ndim != 3 or a.shape[1:] != (3, 2):
        raise ValueError(f"anchors must have shape (T, 3, 2) [left eye, right eye, mouth], got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("anchors contain NaN or inf")
    if duplicate_eyes:
        return similarity_transforms(a[:, [0, 1, 0, 1, 2]], TEMPLATE_DUPLICATED_EYES)
    return similarity_transforms(a, TEMPLATE)


def warp_aligned(image_bgr: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Warp to the canvas with ``M``, crop 268×268 and resize to 260×260, as ``ImageLoader256``.

    Two resamplings (bilinear warp, then bilinear resize) as the original; a single warp with
    ``0.97015·(M − offset)`` would be sharper but would not match the training statistics.
    """
    _validate_image(image_bgr)
    M = _validate_matrix(M)
    canvas = cv2.warpAffine(
        image_bgr,
        M,
        (CANVAS_WIDTH, CANVAS_HEIGHT),
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=BORDER_VALUE,
    )
    crop = canvas[CROP_TOP:CROP_BOTTOM, CROP_LEFT:CROP_RIGHT]
    return cv2.resize(crop, (OUTPUT_SIZE, OUTPUT_SIZE))


def _inverse_like_opencv(M: np.ndarray) -> np.ndarray:
    """The inverse ``cv2.warpAffine`` computes from a forward matrix, in the same double operations
    (``imgwarp.cpp``), so that passing it with ``WARP_INVERSE_MAP`` samples at the same coordinates."""
    m00, m01, m02, m10, m11, m12 = (float(v) for v in np.asarray(M, dtype=np.float64).reshape(6))
    d = m00 * m11 - m01 * m10
    d = 1.0 / d if d != 0 else 0.0
    a00, a01, a10, a11 = m11 * d, m01 * -d, m10 * -d, m00 * d
    return np.array([[a00, a01, -a00 * m02 - a01 * m12], [a10, a11, -a10 * m02 - a11 * m12]])


def warp_aligned_fast(
    image_bgr: np.ndarray, M: np.ndarray, out: np.ndarray | None = None, band: np.ndarray | None = None
) -> np.ndarray:
    """:func:`warp_aligned` computing only canvas rows 104..371 and columns 0..311 (the crop and what lies left
    of it): 46 % of the canvas, ~1.6× faster. OpenCV's fixed-point sampling depends on the absolute output
    column (``adelta[x]``) but only on the row through ``M[1]·y + M[2]``, so the rows are moved into the matrix
    and the columns kept; the output equals the parity path's (tests/unit/test_align.py checks it).

    ``out`` (``OUTPUT_SHAPE`` uint8) and ``band`` (``BAND_SHAPE`` uint8 scratch) are written in place when given: a
    caller warping many frames passes the same ones each time: no new blocks per frame (~110 fresh pages, ~0.3 ms
    of page faults, where glibc maps each large block on its own; ``preprocess.passes.fixed_mmap_threshold``).
    """
    _validate_image(image_bgr)
    M = _validate_matrix(M)
    inv = _inverse_like_opencv(M)
    inv[:, 2] += CROP_TOP * inv[:, 1]  # output row 0 is canvas row CROP_TOP
    band = cv2.warpAffine(
        image_bgr,
        inv,
        (CROP_RIGHT, CROP_SIZE),
        dst=_checked_buffer(band, BAND_SHAPE, "band"),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=BORDER_VALUE,
    )
    out = _checked_buffer(out, OUTPUT_SHAPE, "out")
    return cv2.resize(band[:, CROP_LEFT:], (OUTPUT_SIZE, OUTPUT_SIZE), dst=out)


def _checked_buffer(buf: np.ndarray | None, shape: tuple, name: str) -> np.ndarray | None:
    if buf is not None and (buf.shape != shape or buf.dtype != np.uint8 or not buf.flags.c_contiguous):
        raise ValueError(f"{name} must be a C-contiguous {shape} uint8 array, got {buf.dtype} {buf.shape}")
    return buf


def align_face(
    image_bgr: np.ndarray, anchors: np.ndarray, duplicate_eyes: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Align one frame: returns (260×260×3 BGR uint8, the 2×3 source → canvas matrix ``M``).

    ``M`` is what the original stores in ``M256.npy`` (its first two rows).
    """
    _validate_image(image_bgr)
    M = anchor_transform(anchors, duplicate_eyes=duplicate_eyes)
    return warp_aligned(image_bgr, M), M


def apply_transform(M: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine matrix to (n, 2) points."""
    p = np.asarray(points, dtype=np.float64)
    return p @ np.asarray(M, dtype=np.float64)[:, :2].T + np.asarray(M, dtype=np.float64)[:, 2]


def canvas_to_output(points: np.ndarray) -> np.ndarray:
    """Map canvas (356×436) points into the 260×260 output: ``(p − [44, 104]) · 260/268``."""
    p = np.asarray(points, dtype=np.float64)
    return (p - np.array([CROP_LEFT, CROP_TOP], float)) * OUTPUT_SCALE


def output_points(M: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Where source points land in the 260×260 output aligned with ``M``."""
    return canvas_to_output(apply_transform(M, points))

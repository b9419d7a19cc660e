"""Face alignment exactly as the original DAVS preprocessing, plus temporal smoothing.

The original (`preprocess/face_align.py`, `preprocess/process256_224.py`; spec §2) maps three
anchors (left-eye centre, right-eye centre, mouth centre) onto a fixed template with an orthogonal
Procrustes similarity, warps the frame onto a 356×436 canvas (border grey 127), crops 268×268 and
resizes to 260×260. Every frame is aligned independently there; :func:`smooth_transforms`,
:func:`interpolate_missing` and :func:`jitter_scores` are additions that work on the per-frame
2×3 matrices (the ``M256.npy`` the original stores).

Points are (x, y) pixels, 0-based; images are BGR uint8.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

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


# ---------------------------------------------------------------- temporal processing


def _decompose(Ms: np.ndarray) -> np.ndarray:
    """(T, 2, 3) similarities → (T, 4) [log scale, angle (unwrapped over T), tx, ty].

    A non-similarity (e.g. a reflection, which the unguarded Procrustes can return) is projected
    onto the nearest rotation+scale ``[[a, −b], [b, a]]`` with a = (m00 + m11)/2, b = (m10 − m01)/2.
    """
    Ms = np.asarray(Ms, dtype=np.float64)
    if Ms.ndim != 3 or Ms.shape[1:] != (2, 3):
        raise ValueError(f"transforms must have shape (T, 2, 3), got {Ms.shape}")
    a = 0.5 * (Ms[:, 0, 0] + Ms[:, 1, 1])
    b = 0.5 * (Ms[:, 1, 0] - Ms[:, 0, 1])
    scale = np.hypot(a, b)
    if np.any(~(scale > 0)):
        raise ValueError("transform with zero or non-finite scale")
    angle = np.unwrap(np.arctan2(b, a))
    return np.stack([np.log(scale), angle, Ms[:, 0, 2], Ms[:, 1, 2]], axis=1)


def _compose(params: np.ndarray) -> np.ndarray:
    """(T, 4) [log scale, angle, tx, ty] → (T, 2, 3) similarities."""
    s = np.exp(params[:, 0])
    c, si = s * np.cos(params[:, 1]), s * np.sin(params[:, 1])
    out = np.empty((len(params), 2, 3))
    out[:, 0, 0], out[:, 0, 1], out[:, 0, 2] = c, -si, params[:, 2]
    out[:, 1, 0], out[:, 1, 1], out[:, 1, 2] = si, c, params[:, 3]
    return out


def smooth_transforms(Ms: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Gaussian-smooth per-frame similarities over time (σ in frames; 0 returns a copy unchanged).

    Each matrix is decomposed into (log scale, angle, tx, ty), the angle unwrapped over time; each
    parameter is smoothed with ``gaussian_filter1d(mode='nearest')`` and the matrices recomposed.
    This damps the per-frame "zoom-in-and-out" jitter of the original's independent alignment.
    """
    Ms = np.asarray(Ms, dtype=np.float64)
    if sigma_frames < 0 or not np.isfinite(sigma_frames):
        raise ValueError(f"sigma_frames must be finite and >= 0, got {sigma_frames}")
    params = _decompose(Ms)  # validates the shape
    if sigma_frames == 0 or len(Ms) < 2:
        return Ms.copy()
    smoothed = gaussian_filter1d(params, sigma_frames, axis=0, mode="nearest")
    return _compose(smoothed)


def jitter_scores(Ms: np.ndarray) -> dict[str, float]:
    """Frame-to-frame instability of a sequence of alignment transforms.

    - ``jitter_scale``: mean over t of ``|s_t / s_{t−1} − 1|``, in percent (s = similarity scale).
    - ``jitter_shift_px``: mean over t of the RMS displacement, in 260-px output pixels, of the
      three template anchors: take the source points that ``M_t`` puts exactly on the template
      anchors (``M_t⁻¹ · TEMPLATE``), map them with ``M_{t−1}``, and measure in the output how far
      they land from the template anchors. It is the apparent motion of a static source point near
      the eyes and mouth between consecutive aligned frames (rotation and zoom included), so for a
      still face it is pure alignment jitter.

    Both are 0.0 for fewer than two frames.
    """
    Ms = np.asarray(Ms, dtype=np.float64)
    params = _decompose(Ms)
    if len(Ms) < 2:
        return {"jitter_scale": 0.0, "jitter_shift_px": 0.0}
    scale = np.exp(params[:, 0])
    jitter_scale = float(np.mean(np.abs(scale[1:] / scale[:-1] - 1.0)) * 100.0)
    target = canvas_to_output(TEMPLATE)
    shifts = []
    for prev, cur in zip(Ms[:-1], Ms[1:], strict=True):
        inv = cv2.invertAffineTransform(cur)
        src = apply_transform(inv, TEMPLATE)
        d = output_points(prev, src) - target
        shifts.append(np.sqrt(np.mean(np.sum(d**2, axis=1))))
    return {"jitter_scale": jitter_scale, "jitter_shift_px": float(np.mean(shifts))}


def interpolate_missing(Ms: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill frames where ``valid`` is False by linear interpolation of (log scale, angle, tx, ty).

    Frames before the first / after the last valid frame hold the nearest valid transform. Invalid
    frames' input matrices are ignored (they may be NaN).

    Raises:
        ValueError: if no frame is valid or the shapes disagree.
    """
    Ms = np.asarray(Ms, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    if Ms.ndim != 3 or Ms.shape[1:] != (2, 3) or valid.shape != (len(Ms),):
        raise ValueError(f"need Ms (T, 2, 3) and valid (T,), got {Ms.shape} and {valid.shape}")
    if not valid.any():
        raise ValueError("no valid frame to interpolate from")
    t = np.arange(len(Ms))
    known = _decompose(Ms[valid])
    params = np.stack([np.interp(t, t[valid], known[:, k]) for k in range(4)], axis=1)
    out = _compose(params)
    out[valid] = Ms[valid]  # keep the valid frames bit-exact
    return out

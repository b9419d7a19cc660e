"""Evaluation metrics as pure functions on numpy arrays; ``DEFINITIONS`` prints each one next to its number.

Images are float RGB in [0, 1], (H, W, 3) or a sequence (T, H, W, 3). Landmarks are dlib's 68 points, (T, 68, 2).
Nothing here loads a model or touches a file.
"""

from __future__ import annotations

import numpy as np
from skimage.feature import canny
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

__all__ = [
    "DEFINITIONS",
    "PSNR_CAP_DB",
    "accuracy",
    "cpbd",
    "jitter",
    "lmd",
    "psnr",
    "rank_of_matches",
    "retrieval",
    "retrieval_from_embeddings",
    "ssim",
]

PSNR_CAP_DB = 100.0  # identical images have infinite PSNR; capped so that JSON and means stay finite
RECALL_AT = (1, 5, 10, 50)
MOUTH = slice(48, 68)  # dlib 68-point mouth: outer lip 48-59, inner lip 60-67
LEFT_EYE, RIGHT_EYE = slice(36, 42), slice(42, 48)
# CPBD constants (Narvekar & Karam 2011, and their reference code CPBD_compute.m)
CPBD_BLOCK = 64  # block side in pixels
CPBD_EDGE_BLOCK_FRACTION = 0.002  # a block is an edge block when more than this fraction of its pixels are edges
CPBD_BETA = 3.6  # slope of the probability-of-blur-detection psychometric function
CPBD_P_JNB = 0.63  # blur is "just noticeable" at this probability; the metric is P(P_blur <= P_JNB)
CPBD_MAX_WIDTH_STEPS = 100  # the reference code follows an edge at most 100 pixels each way

DEFINITIONS = {
    "psnr": (
        "PSNR (dB): skimage.metrics.peak_signal_noise_ratio on float RGB images in [0, 1] (data_range=1), per "
        f"frame, averaged over frames; identical frames are capped at {PSNR_CAP_DB:g} dB. Higher is better."
    ),
    "ssim": (
        "SSIM: skimage.metrics.structural_similarity on float RGB images in [0, 1] (data_range=1, "
        "channel_axis=-1, default 7x7 uniform window, mean over channels), per frame, averaged over frames. "
        "Higher is better."
    ),
    "lmd": (
        "LMD: dlib 68-point landmarks, mouth points 48-67 of each frame mean-centred (so head position does not "
        "count), the mean L2 distance per point between generated and ground-truth frame divided by the "
        "ground-truth inter-ocular distance (eye centres 36-41, 42-47), averaged over frames. Lower is better."
    ),
    "cpbd": (
        "CPBD sharpness (Narvekar & Karam 2011), our implementation of their reference code: grey image "
        "(BT.601, 0-255), Sobel edges (MATLAB 'sobel' threshold and thinning) for Marziliano edge widths along "
        f"rows, Canny edges to pick {CPBD_BLOCK}x{CPBD_BLOCK} edge blocks (> {CPBD_EDGE_BLOCK_FRACTION:g} edge "
        f"pixels), just-noticeable width 5 (block contrast <= 50) or 3, P_blur = 1 - exp(-(w/w_JNB)^{CPBD_BETA}); "
        f"CPBD = fraction of edges with P_blur <= {CPBD_P_JNB}. Per frame, averaged. Higher is sharper."
    ),
    "jitter": (
        "Temporal jitter: mean absolute difference between consecutive frames outside the training mouth box "
        "(rows 170:234, cols 64:192 at 256 px, scaled), in 8-bit grey levels (0-255), averaged over frame pairs. "
        "The face, background and pose should not move: lower is steadier."
    ),
    "word_accuracy": (
        "Word accuracy (%): argmax of the shared word classifier C over 12 stride-2 steps of audio (C(E_a)), of "
        "video (lip reading, C(E_v)) and fused (sum of the two logit vectors), as the original's evaluation."
    ),
    "retrieval": (
        "Retrieval: every clip's 12 wid features (stride 2) concatenated and L2-normalised (3072-d at the paper's "
        "size), Euclidean distances between all audio and all video embeddings of the split; the match is the "
        "same clip. R@K = % of queries whose match ranks in the top K; median rank = floor(median rank) + 1 "
        "(rank 1 = best), as the original's L2retrieval."
    ),
}


def _frames(x: np.ndarray) -> np.ndarray:
    """(H, W, C) or (T, H, W, C) → (T, H, W, C) float64."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"images must be (H, W, 3) or (T, H, W, 3), got {np.shape(x)}")
    return a


def _pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, t = _frames(pred), _frames(target)
    if p.shape != t.shape:
        raise ValueError(f"generated and ground-truth frames differ in shape: {p.shape} vs {t.shape}")
    return p, t


def psnr(pred: np.ndarray, target: np.ndarray, cap_db: float = PSNR_CAP_DB) -> float:
    """Mean per-frame PSNR (dB) of float images in [0, 1], each frame capped at ``cap_db`` (see DEFINITIONS)."""
    p, t = _pair(pred, target)
    values = []
    for a, b in zip(p, t, strict=True):
        with np.errstate(divide="ignore"):
            values.append(min(float(peak_signal_noise_ratio(b, a, data_range=1.0)), cap_db))
    return float(np.mean(values))


def ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean per-frame SSIM of float RGB images in [0, 1] (skimage defaults, data_range=1, channel_axis=-1)."""
    p, t = _pair(pred, target)
    return float(
        np.mean([structural_similarity(b, a, data_range=1.0, channel_axis=-1) for a, b in zip(p, t, strict=True)])
    )


def lmd(pred_landmarks: np.ndarray, target_landmarks: np.ndarray) -> float:
    """Mouth landmark distance (see DEFINITIONS) between (T, 68, 2) landmark sequences; frames with NaN in either
    are left out; NaN when no frame is left."""
    p = np.asarray(pred_landmarks, dtype=np.float64).reshape(-1, 68, 2)
    t = np.asarray(target_landmarks, dtype=np.float64).reshape(-1, 68, 2)
    if p.shape != t.shape:
        raise ValueError(f"landmark sequences differ in shape: {p.shape} vs {t.shape}")
    ok = np.isfinite(p).all(axis=(1, 2)) & np.isfinite(t).all(axis=(1, 2))
    if not ok.any():
        return float("nan")
    p, t = p[ok], t[ok]
    pm = p[:, MOUTH] - p[:, MOUTH].mean(axis=1, keepdims=True)
    tm = t[:, MOUTH] - t[:, MOUTH].mean(axis=1, keepdims=True)
    iod = np.linalg.norm(t[:, LEFT_EYE].mean(axis=1) - t[:, RIGHT_EYE].mean(axis=1), axis=1)
    per_frame = np.linalg.norm(pm - tm, axis=2).mean(axis=1) / np.maximum(iod, 1e-9)
    return float(per_frame.mean())


def jitter(frames: np.ndarray, mouth_box: tuple[int, int, int, int] | None = None) -> float:
    """Mean |frame_t − frame_{t−1}| of the grey image outside ``mouth_box`` (top, bottom, left, right), in grey
    levels 0-255; 0.0 for fewer than two frames (see DEFINITIONS)."""
    f = _frames(frames)
    if len(f) < 2:
        return 0.0
    grey = _grey255(f)
    keep = np.ones(grey.shape[1:], dtype=bool)
    if mouth_box is not None:
        top, bottom, left, right = mouth_box
        keep[top:bottom, left:right] = False
    return float(np.abs(np.diff(grey, axis=0))[:, keep].mean())


def _grey255(rgb: np.ndarray) -> np.ndarray:
    """float RGB in [0, 1] (..., 3) → grey in [0, 255] with MATLAB rgb2gray's BT.601 weights."""
    return 255.0 * (rgb[..., 0] * 0.2989 + rgb[..., 1] * 0.5870 + rgb[..., 2] * 0.1140)


def _sobel_edges(image: np.ndarray) -> np.ndarray:
    """MATLAB ``edge(I, 'sobel')``: gradient² > 4·mean(gradient²), thinned to maxima across the edge direction."""
    p = np.pad(image, 1, mode="edge")  # imfilter(..., 'replicate')
    gx = ((p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])) / 8
    gy = ((p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])) / 8
    b = gx**2 + gy**2
    cutoff = 4 * b.mean()
    ax, ay, eps = np.abs(gx), np.abs(gy), np.finfo(float).eps
    bp = np.pad(b, 1, mode="constant")
    left, right, up, down = bp[1:-1, :-2], bp[1:-1, 2:], bp[:-2, 1:-1], bp[2:, 1:-1]
    x_max = (ax >= ay + eps) & (left <= b) & (right < b)
    y_max = (ay >= ax + eps) & (up <= b) & (down < b)
    return (b > cutoff) & (x_max | y_max)


def _runs(positive: np.ndarray, reverse: bool) -> np.ndarray:
    """Per row, the length of the run of True ending at each column (or starting there when ``reverse``)."""
    out = np.zeros(positive.shape, dtype=np.int64)
    cols = range(positive.shape[1] - 1, -1, -1) if reverse else range(positive.shape[1])
    prev = np.zeros(positive.shape[0], dtype=np.int64)
    for c in cols:
        prev = np.where(positive[:, c], prev + 1, 0)
        out[:, c] = prev
    return out


def _edge_widths(image: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Marziliano widths of vertical edges (gradient angle 0° or 180°), as CPBD's ``marziliano_method``: from
    each edge pixel, walk left and right while the intensity keeps rising (falling); 0 off the edges."""
    h, w = image.shape
    gy, gx = np.gradient(image)
    # the reference leaves the angle at 0 where gx == 0 (so such pixels count as rising edges)
    angle = np.where(gx != 0, np.degrees(np.arctan2(gy, np.where(gx != 0, gx, 1.0))), 0.0)
    q = 45 * np.round(angle / 45)
    d = np.diff(image, axis=1)  # d[:, j] = I[:, j + 1] − I[:, j]
    widths = np.zeros_like(image)
    cap = CPBD_MAX_WIDTH_STEPS
    for sign, mask in ((1, q == 0), (-1, np.abs(q) == 180)):
        mono = sign * d > 0
        left_run, right_run = _runs(mono, reverse=False), _runs(mono, reverse=True)
        rows, cols = np.nonzero(edges & mask)
        inside = (rows >= 1) & (rows <= h - 2) & (cols >= 1) & (cols <= w - 2)
        rows, cols = rows[inside], cols[inside]
        lw = np.where(cols >= 2, left_run[rows, np.maximum(cols - 2, 0)], 0)
        rw = np.where(cols + 1 <= w - 2, right_run[rows, np.minimum(cols + 1, w - 2)], 0)
        widths[rows, cols] = 2 + np.minimum(lw, cap) + np.minimum(rw, cap)
    return widths


def cpbd(image: np.ndarray, block: int = CPBD_BLOCK) -> float:
    """CPBD sharpness of one RGB image in [0, 1] or a sequence (mean over frames); see DEFINITIONS.

    NaN for an image without any edge block (e.g. a flat image or one smaller than ``block``).
    """
    f = _frames(image)
    values = np.array([_cpbd_grey(g, block) for g in _grey255(f)])
    return float(values[np.isfinite(values)].mean()) if np.isfinite(values).any() else float("nan")


def _cpbd_grey(image: np.ndarray, block: int) -> float:
    sobel = _sobel_edges(image)
    widths = _edge_widths(image, sobel)
    canny_edges = canny(
        image / 255.0, sigma=np.sqrt(2), low_threshold=0.28, high_threshold=0.7, use_quantiles=True
    )
    probabilities = []
    for top in range(0, image.shape[0] - block + 1, block):
        for left in range(0, image.shape[1] - block + 1, block):
            window = (slice(top, top + block), slice(left, left + block))
            if np.count_nonzero(canny_edges[window]) <= block * block * CPBD_EDGE_BLOCK_FRACTION:
                continue
            w = widths[window]
            w = w[w != 0]
            contrast = int(image[window].max() - image[window].min())
            w_jnb = 5.0 if contrast <= 50 else 3.0
            probabilities.append(1 - np.exp(-(np.abs(w / w_jnb) ** CPBD_BETA)))
    if not probabilities:
        return float("nan")
    p = np.concatenate(probabilities)
    if p.size == 0:
        return float("nan")
    # histogram buckets round(100·p) 0..63, i.e. P_blur <= P_JNB
    return float(np.mean(np.round(p * 100) <= round(CPBD_P_JNB * 100)))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent of (N, C) logits against (N,) integer labels; NaN for N = 0."""
    z, y = np.asarray(logits), np.asarray(labels)
    if z.ndim != 2 or y.shape != (len(z),):
        raise ValueError(f"need logits (N, C) and labels (N,), got {z.shape} and {y.shape}")
    return float(100.0 * np.mean(z.argmax(axis=1) == y)) if len(z) else float("nan")


def rank_of_matches(distances: np.ndarray) -> np.ndarray:
    """0-based rank of the true match (the diagonal) in each row of a (N, N) query × candidate distance matrix,
    by a stable sort (ties go to the earlier candidate, as numpy's argsort in the original)."""
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"distances must be a square (N, N) matrix, got {d.shape}")
    order = np.argsort(d, axis=1, kind="stable")
    return np.argmax(order == np.arange(len(d))[:, None], axis=1)


def retrieval(distances: np.ndarray, recall_at: tuple[int, ...] = RECALL_AT) -> dict[str, float]:
    """R@K (%), median rank and mean rank (1-based) of the diagonal matches of a (N, N) distance matrix (rows are
    queries); see DEFINITIONS."""
    ranks = rank_of_matches(distances)
    if len(ranks) == 0:
        return {
            **{f"R@{k}": float("nan") for k in recall_at},
            "median_rank": float("nan"),
            "mean_rank": float("nan"),
        }
    out = {f"R@{k}": float(100.0 * np.mean(ranks < k)) for k in recall_at}
    out["median_rank"] = float(np.floor(np.median(ranks)) + 1)
    out["mean_rank"] = float(ranks.mean() + 1)
    return out


def retrieval_from_embeddings(audio: np.ndarray, video: np.ndarray) -> dict[str, dict[str, float]]:
    """Both directions on (N, D) embeddings (L2-normalised here): ``audio_to_video`` (audio queries rank the
    videos) and ``video_to_audio``."""
    a = np.asarray(audio, dtype=np.float64)
    v = np.asarray(video, dtype=np.float64)
    if a.shape != v.shape or a.ndim != 2:
        raise ValueError(f"need two (N, D) embedding matrices of one shape, got {a.shape} and {v.shape}")
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    d = np.sqrt(np.maximum((a**2).sum(1)[:, None] + (v**2).sum(1)[None] - 2 * a @ v.T, 0.0))
    return {"audio_to_video": retrieval(d), "video_to_audio": retrieval(d.T)}

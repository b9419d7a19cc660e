"""The demo talking face: the scikit-image astronaut photo with an audio-driven mouth.

One photo, honestly: every "speaker" of the demo dataset is this face, varied only by zoom,
mirroring and colour (``variant``) and by a small smooth head motion (``seed``).

Rendering, per frame, is a single ``cv2.remap`` from the photo:
final frame pixel q → canonical frame p = M⁻¹q (head motion, a small similarity)
→ p − D(p) (mouth deformation: a smooth vertical displacement field around the mouth that pulls
the lower lip and jaw down and the upper lip slightly up) → photo pixel B⁻¹(…) (the base crop,
a similarity placing the face like an LRW frame). The gap that opens between the lips is then
darkened with a soft ellipse whose height follows the opening, so that the opening is visible
and a landmark detector puts the inner lips apart.

Canonical frame (256×256, variant zoom 1.0): face ≈ 120 px wide (jaw landmarks 0–16), mouth
centre at (128, 158), eyes near y ≈ 103; LRW-like framing.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from davs_model.demo.mouth import MAX_JAW_DROP, MAX_LIP_RAISE, MouthModel

__all__ = [
    "FRAME_SIZE",
    "MAX_JAW_DROP",
    "mouth_opening",
    "render_talking_face",
    "photo_landmarks",
    "canonical_landmarks",
    "mouth_box",
]

FRAME_SIZE = 256
_FACE_WIDTH = 120.0  # px, jaw landmark 0 → 16 at zoom 1
_MOUTH_AT = (128.0, 158.0)  # where the mouth centre (mean of landmarks 48..67) lands
_MAX_SHIFT = 3.0  # px, head-motion translation bound
_MAX_ROT_DEG = 2.0  # head-motion rotation bound
# Mouth interior, BGR: shadow under the upper teeth → tongue-red towards the lower lip.
_MOUTH_TOP = np.array([22.0, 16.0, 38.0], dtype=np.float32)
_MOUTH_BOTTOM = np.array([52.0, 48.0, 112.0], dtype=np.float32)


# ----------------------------------------------------------------------------- the photo


@functools.lru_cache(maxsize=1)
def _photo_bgr() -> np.ndarray:
    import skimage.data

    rgb = skimage.data.astronaut()
    img = np.ascontiguousarray(rgb[:, :, ::-1])
    img.setflags(write=False)
    return img


def _predictor_path() -> Path:
    # Located without importing face_recognition_models (its import has side effects).
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face-recognition-models is not installed (needs the 68-point model)")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise RuntimeError(f"68-point landmark model not found at {path}")
    return path


@functools.lru_cache(maxsize=1)
def photo_landmarks() -> np.ndarray:
    """The 68 dlib landmarks of the astronaut's face in the photo, (68, 2) float (x, y)."""
    import dlib

    rgb = np.ascontiguousarray(_photo_bgr()[:, :, ::-1])
    detector = dlib.get_frontal_face_detector()
    # No upsampling: at 1× the detector finds only the face (upsampled it also "finds" a patch).
    rects, scores, _ = detector.run(rgb, 0, 0)
    if len(rects) == 0:
        raise RuntimeError("dlib found no face in the astronaut photo")
    rect = rects[int(np.argmax(scores))]
    shape = dlib.shape_predictor(str(_predictor_path()))(rgb, rect)
    pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
    pts.setflags(write=False)
    return pts


# ----------------------------------------------------------------------------- audio → opening


def mouth_opening(samples: np.ndarray, sample_rate: int, n_frames: int, fps: int = 25) -> np.ndarray:
    """Mouth opening a(t) ∈ [0, 1] for ``n_frames`` video frames from the speech envelope.

    For frame t the RMS of the samples in an 80 ms Hann window centred on the frame's centre
    time (t + 0.5) / fps is taken (audio sample 0 = video time 0; samples outside the signal
    count as zeros), smoothed over time (Gaussian, σ = 0.6 frame), then normalised per clip
    between its 10th percentile (the noise floor) and its maximum, and compressed a little
    (power 0.8) so that moderately loud phones open the mouth visibly. A silent or constant
    clip gives zeros.
    """
    from scipy.ndimage import gaussian_filter1d

    x = np.asarray(samples, dtype=np.float64).ravel()
    if n_frames <= 0:
        return np.zeros(0)
    hop = sample_rate / fps
    half = int(round(hop))  # window = 2 frames = 80 ms at 25 fps
    win = np.hanning(2 * half + 1)
    win /= win.sum()
    padded = np.concatenate([np.zeros(half), x, np.zeros(2 * half + int(np.ceil(hop)) * n_frames)])
    env = np.empty(n_frames)
    for t in range(n_frames):
        c = int(round((t + 0.5) * hop)) + half  # index into padded
        seg = padded[c - half : c + half + 1]
        env[t] = np.sqrt(np.dot(win, seg * seg))
    if n_frames > 1:
        env = gaussian_filter1d(env, sigma=0.6, mode="nearest")
    lo = float(np.percentile(env, 10))
    hi = float(env.max())
    if hi - lo <= 1e-6 * max(hi, 1.0):
        return np.zeros(n_frames)
    a = np.clip((env - lo) / (hi - lo), 0.0, 1.0)
    return a**0.8


# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Variant:
    zoom: float
    flip: bool
    gain: tuple[float, float, float]  # BGR multipliers
    offset: float  # brightness, grey levels


def _variant(variant: int) -> _Variant:
    """Appearance of demo "speaker" ``variant``: 0 is the photo as is; others are deterministic."""
    if variant < 0:
        raise ValueError(f"variant must be ≥ 0, got {variant}")
    if variant == 0:
        return _Variant(1.0, False, (1.0, 1.0, 1.0), 0.0)
    rng = np.random.default_rng([0xDA5, variant])
    zoom = float(rng.uniform(0.92, 1.06))  # face ≈ 110–127 px wide
    warm = float(rng.uniform(-0.08, 0.08))  # + warmer (more red, less blue), − cooler
    gain = (1.0 - warm, 1.0 + float(rng.uniform(-0.03, 0.03)), 1.0 + warm)
    offset = float(rng.uniform(-14.0, 10.0))
    return _Variant(zoom, variant % 2 == 1, gain, offset)


def _base_transform(zoom: float) -> np.ndarray:
    """2×3 similarity photo → canonical frame (no rotation: the photo's face is upright)."""
    pts = photo_landmarks()
    width = np.linalg.norm(pts[16] - pts[0])
    s = _FACE_WIDTH * zoom / width
    mouth = pts[48:68].mean(axis=0)
    # Zoom about the mouth anchor so that the mouth keeps its place in the frame.
    tx = _MOUTH_AT[0] - s * mouth[0]
    ty = _MOUTH_AT[1] - s * mouth[1]
    return np.array([[s, 0.0, tx], [0.0, s, ty]])


def canonical_landmarks(variant: int = 0) -> np.ndarray:
    """The 68 landmarks in the canonical (unmoved, closed-mouth, unflipped) frame of ``variant``."""
    b = _base_transform(_variant(variant).zoom)
    pts = photo_landmarks()
    return pts @ b[:, :2].T + b[:, 2]


def mouth_box(variant: int = 0, margin: float = 6.0) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) box around the mouth and its full opening in the output frame.

    Includes the head-motion bounds and the mirror of the variant, for tests and QA.
    """
    v = _variant(variant)
    pts = canonical_landmarks(variant)[48:68]
    m = margin + _MAX_SHIFT + 4.0  # rotation of ≤2° moves the mouth ≤ ~1 px more than that
    x0, x1 = pts[:, 0].min() - m, pts[:, 0].max() + m
    y0 = pts[:, 1].min() - m - MAX_LIP_RAISE * v.zoom
    y1 = pts[:, 1].max() + m + MAX_JAW_DROP * v.zoom
    if v.flip:
        x0, x1 = FRAME_SIZE - 1 - x1, FRAME_SIZE - 1 - x0
    clip = lambda z: int(np.clip(round(z), 0, FRAME_SIZE))  # noqa: E731
    return clip(x0), clip(y0), clip(x1), clip(y1)


def _head_motion(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth per-frame (angle_deg, tx, ty), each a sum of two slow sinusoids, within bounds."""
    rng = np.random.default_rng([0x4EAD, seed])
    t = np.arange(n, dtype=np.float64) / 25.0
    out = []
    for bound in (_MAX_ROT_DEG, _MAX_SHIFT, _MAX_SHIFT):
        f = rng.uniform(0.15, 0.6, size=2)  # Hz: slow drifts
        ph = rng.uniform(0.0, 2 * np.pi, size=2)
        w = rng.uniform(0.3, 1.0, size=2)
        sig = w[0] * np.sin(2 * np.pi * f[0] * t + ph[0]) + w[1] * np.sin(2 * np.pi * f[1] * t + ph[1])
        amp = rng.uniform(0.5, 0.95) * bound
        out.append(sig / (w.sum()) * amp)  # |sig| ≤ w.sum() → |out| ≤ amp < bound
    return out[0], out[1], out[2]


# ----------------------------------------------------------------------------- rendering


def render_talking_face(opening: np.ndarray, seed: int, variant: int = 0) -> list[np.ndarray]:
    """Frames (256×256×3 BGR uint8) of the demo face with the mouth open by ``opening`` (T,).

    ``seed`` fixes the head motion (≤ 3 px, ≤ 2°, smooth); ``variant`` the speaker appearance
    (0 = the photo as is; odd variants are mirrored). Deterministic for given arguments.
    """
    import cv2

    opening = np.clip(np.asarray(opening, dtype=np.float64).ravel(), 0.0, 1.0)
    n = len(opening)
    v = _variant(variant)
    photo = _photo_bgr()
    base = _base_transform(v.zoom)
    binv = cv2.invertAffineTransform(base)
    mouth = MouthModel(canonical_landmarks(variant), _variant(variant).zoom)
    angle, tx, ty = _head_motion(seed, n)

    ys, xs = np.mgrid[0:FRAME_SIZE, 0:FRAME_SIZE].astype(np.float64)
    centre = (FRAME_SIZE / 2.0, FRAME_SIZE / 2.0)
    gain = np.array(v.gain, dtype=np.float32)
    frames = []
    for t in range(n):
        # Canonical position of each output pixel: inverse of the head motion.
        motion = cv2.getRotationMatrix2D(centre, float(angle[t]), 1.0)
        motion[:, 2] += (tx[t], ty[t])
        minv = cv2.invertAffineTransform(motion)
        px = minv[0, 0] * xs + minv[0, 1] * ys + minv[0, 2]
        py = minv[1, 0] * xs + minv[1, 1] * ys + minv[1, 2]
        a = float(opening[t])
        qy = py - mouth.displacement(px, py, a) if a > 0 else py
        map_x = (binv[0, 0] * px + binv[0, 1] * qy + binv[0, 2]).astype(np.float32)
        map_y = (binv[1, 0] * px + binv[1, 1] * qy + binv[1, 2]).astype(np.float32)
        img = cv2.remap(
            photo, map_x, map_y, interpolation=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101
        ).astype(np.float32)
        if a > 0:
            alpha = mouth.gap_alpha(px, py, a).astype(np.float32)[..., None]
            depth = mouth.gap_depth(py, a).astype(np.float32)[..., None] ** 1.5
            colour = _MOUTH_TOP + (_MOUTH_BOTTOM - _MOUTH_TOP) * depth
            img = img * (1.0 - alpha) + colour * alpha
        img = img * gain + v.offset
        out = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        if v.flip:
            out = np.ascontiguousarray(out[:, ::-1])
        frames.append(out)
    return frames

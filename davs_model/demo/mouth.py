"""The demo face's mouth (``face.py``): how the lips, jaw and the gap between them move with the opening a ∈ [0, 1]
in the canonical frame. All of it is a smooth backward displacement field plus a soft dark ellipse over the gap,
so that the opening is visible and a landmark detector puts the inner lips apart."""

from __future__ import annotations

import numpy as np

MAX_JAW_DROP = 10.0  # px: lower lip / jaw displacement at full opening (zoom 1)
MAX_LIP_RAISE = 2.5  # px: upper lip displacement at full opening


class MouthModel:
    """The canonical-frame mouth geometry of a variant (constant over frames), from its 68 canonical landmarks
    ``pts`` and its ``zoom``."""

    def __init__(self, pts: np.ndarray, zoom: float) -> None:
        self.zoom = zoom
        self.cx = float(pts[48:68, 0].mean())
        upper_inner = pts[61:64, 1].mean()
        lower_inner = pts[65:68, 1].mean()
        # The photo smiles with the upper teeth showing: split just above the lower inner lip, so
        # the upper teeth stay with the upper lip and the gap opens between them and the lower lip.
        self.split = float(upper_inner + 0.75 * (lower_inner - upper_inner))
        self.half_width = float(np.linalg.norm(pts[54] - pts[48]) / 2)
        self.inner_half_width = float(np.linalg.norm(pts[64] - pts[60]) / 2)
        self.chin = float(pts[8, 1])
        self.nose = float(pts[33, 1])

    def displacement(self, x: np.ndarray, y: np.ndarray, a: float) -> np.ndarray:
        """Backward vertical displacement D(p): the pixel at p shows the photo at p − (0, D)."""
        z = self.zoom
        drop = MAX_JAW_DROP * z * a
        raise_ = MAX_LIP_RAISE * z * a
        dx = x - self.cx
        # Jaw and lower lip: a broad horizontal window; full below the split down to the chin,
        # then fading into the neck.
        w_low = np.exp(-0.5 * (dx / (0.95 * self.half_width)) ** 2)
        below_chin = np.maximum(y - self.chin, 0.0)
        f_low = np.exp(-0.5 * (below_chin / (12.0 * z)) ** 2)
        # Upper lip: narrower window, fading out before the nose.
        w_up = np.exp(-0.5 * (dx / (0.75 * self.half_width)) ** 2)
        above = np.maximum(self.split - y, 0.0)
        f_up = np.exp(-0.5 * (above / (0.45 * (self.split - self.nose))) ** 2)
        # Smooth step at the split, wide enough that the backward map stays monotone
        # (max slope (drop + raise) / (4 τ) < 1).
        tau = max(3.0 * z, (drop + raise_) / 3.2)
        centre = self.split + 0.5 * (drop - raise_) * w_low
        s = 0.5 * (1.0 + np.tanh((y - centre) / (2.0 * tau)))
        return s * drop * w_low * f_low - (1.0 - s) * raise_ * w_up * f_up

    def gap_alpha(self, x: np.ndarray, y: np.ndarray, a: float) -> np.ndarray:
        """Soft ellipse (0..1) over the opened gap between the lips."""
        z = self.zoom
        drop = MAX_JAW_DROP * z * a
        raise_ = MAX_LIP_RAISE * z * a
        half_h = 0.5 * (drop + raise_) * 0.85
        if half_h < 0.3:
            return np.zeros_like(x)
        cy = self.split + 0.5 * (drop - raise_)
        rx = self.inner_half_width * (0.82 + 0.12 * a)
        u = (x - self.cx) / rx
        v = (y - cy) / half_h
        r2 = u * u + v * v
        # Soft edge ~1.5 px wide at the top/bottom.
        edge = 1.5 / max(half_h, 1.0)
        alpha = np.clip((1.0 - r2) / (2.0 * edge), 0.0, 1.0)
        alpha = alpha * alpha * (3.0 - 2.0 * alpha)  # smoothstep
        # Fade towards the mouth corners, where the lips meet.
        alpha = alpha * (1.0 - 0.45 * np.clip(u * u, 0.0, 1.0) ** 2)
        return alpha * min(1.0, 0.6 + 0.4 * a / 0.5)

    def gap_depth(self, y: np.ndarray, a: float) -> np.ndarray:
        """0 at the top of the gap (shadow under the teeth) → 1 at its bottom (tongue)."""
        z = self.zoom
        drop = MAX_JAW_DROP * z * a
        raise_ = MAX_LIP_RAISE * z * a
        top = self.split - raise_
        return np.clip((y - top) / max(drop + raise_, 1e-6), 0.0, 1.0)

"""Full-frame paste-back: each generated face is warped back into the identity's own photo (or video frame) and
blended in with a feathered mask, so the output is the whole picture, not only the aligned crop.

Alignment maps a photo pixel x to the model's S×S crop by three steps (:mod:`davs_model.align` and
:func:`davs_model.rendering.inputs.to_model_size`): the similarity ``M`` onto the 356×436 canvas, the crop
[44:312, 104:372] resized 268 → 260 (cv2, pixel centres), the centre crop [2:258] and the resize 256 → S (pixel
centres). :func:`photo_to_crop` composes them into one 2×3 affine; ``cv2.warpAffine`` with ``WARP_INVERSE_MAP``
then samples the generated frame at that point for every photo pixel, i.e. applies the inverse warp.

The mask is a Gaussian-feathered ellipse over the lower face (nose to chin) in the 256-px crop, so the eyes and
hair keep the photo's sharpness. It is computed once in photo coordinates; only the pixels of its support's
bounding box are touched per frame, blended in float32 and rounded once: every pixel where the mask is 0 is the
photo's, byte for byte.
"""

from __future__ import annotations

import cv2
import numpy as np

from davs_model.align import CROP_LEFT, CROP_SIZE, CROP_TOP, OUTPUT_SIZE

MAX_SIDE = 1280  # photos with a longer side are scaled down to this before alignment (and are the output size)
CROP_OFFSET = 2  # the 256-px centre crop starts at pixel 2 of the 260-px aligned face ([2:258])
CROP_SIDE = 256
# Mask in 256-px crop pixels: the aligned mouth centre is at about (130, 188), the eyes at y ≈ 114.
MASK_CENTRE = (128.0, 180.0)
MASK_AXES = (64.0, 46.0)  # semi-axes of the solid ellipse (x, y)
MASK_SIGMA = 6.0  # Gaussian feather; the kernel stops at 3σ, so the support ends 18 px outside the ellipse


def _scale_shift(scale: float, shift: float) -> np.ndarray:
    """3×3 affine x → scale·x + shift (both axes)."""
    return np.array([[scale, 0, shift], [0, scale, shift], [0, 0, 1]], dtype=np.float64)


def _pixel_centre_resize(src: int, dst: int) -> np.ndarray:
    """3×3 affine of a resize src → dst px with pixel-centre alignment (cv2.resize, torch align_corners=False):
    x_dst = (x_src + 0.5)·dst/src − 0.5."""
    s = dst / src
    return _scale_shift(s, 0.5 * s - 0.5)


def photo_to_crop(M: np.ndarray, size: int = CROP_SIDE) -> np.ndarray:
    """The 2×3 affine taking photo pixels to pixels of the ``size``-px model crop, for the canvas matrix ``M``
    (:func:`davs_model.align.anchor_transform`)."""
    canvas = np.vstack([np.asarray(M, dtype=np.float64), [0, 0, 1]])
    to_crop = np.array([[1, 0, -CROP_LEFT], [0, 1, -CROP_TOP], [0, 0, 1]], dtype=np.float64)
    chain = (
        _pixel_centre_resize(CROP_SIDE, size)
        @ _scale_shift(1.0, -CROP_OFFSET)
        @ _pixel_centre_resize(CROP_SIZE, OUTPUT_SIZE)
        @ to_crop
        @ canvas
    )
    return chain[:2]


def crop_to_photo(M: np.ndarray, size: int = CROP_SIDE) -> np.ndarray:
    """The inverse of :func:`photo_to_crop`: crop pixels back to photo pixels."""
    return cv2.invertAffineTransform(photo_to_crop(M, size))


def face_mask(size: int = CROP_SIDE) -> np.ndarray:
    """(size, size) float32 in [0, 1]: the feathered lower-face ellipse, exactly 0 outside its support."""
    solid = np.zeros((CROP_SIDE, CROP_SIDE), np.float32)
    centre = tuple(int(round(c)) for c in MASK_CENTRE)
    axes = tuple(int(round(a)) for a in MASK_AXES)
    cv2.ellipse(solid, centre, axes, 0, 0, 360, 1.0, thickness=-1)
    k = 2 * int(3 * MASK_SIGMA) + 1
    mask = cv2.GaussianBlur(solid, (k, k), MASK_SIGMA, borderType=cv2.BORDER_CONSTANT)
    if size != CROP_SIDE:
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_LINEAR)
    return np.clip(mask, 0, 1)


def cap_size(image: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """``image`` scaled down (area filter) to a longer side of at most ``max_side``; unchanged if smaller."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    s = max_side / max(h, w)
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


class PasteBack:
    """Blends generated S×S RGB faces into ``photo_bgr`` (H×W×3 uint8) aligned with canvas matrix ``M``.

    ``__call__`` returns the full BGR frame; the photo is never modified.
    """

    def __init__(self, photo_bgr: np.ndarray, M: np.ndarray, size: int) -> None:
        self.photo = np.ascontiguousarray(photo_bgr)
        h, w = self.photo.shape[:2]
        self.size = size
        to_256 = photo_to_crop(M, CROP_SIDE)
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        full = cv2.warpAffine(face_mask(), to_256, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT)
        ys, xs = np.nonzero(full > 0)
        if len(ys) == 0:
            raise ValueError("the face mask falls outside the photo")
        self.y0, self.y1, self.x0, self.x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        self.mask = full[self.y0 : self.y1, self.x0 : self.x1, None]  # (h', w', 1) float32
        self.support = self.mask[..., 0] > 0
        # the photo→crop warp for the box's local pixels: x_local + (x0, y0) = x
        self.to_crop = photo_to_crop(M, size)
        self.to_crop[:, 2] += self.to_crop[:, :2] @ np.array([self.x0, self.y0], np.float64)
        self._flags = flags
        self._box = self.photo[self.y0 : self.y1, self.x0 : self.x1].astype(np.float32)

    @property
    def shape(self) -> tuple[int, int]:
        return self.photo.shape[:2]

    def __call__(self, generated_rgb: np.ndarray) -> np.ndarray:
        """(S, S, 3) uint8 RGB generated face → (H, W, 3) uint8 BGR whole frame."""
        if generated_rgb.shape[:2] != (self.size, self.size):
            raise ValueError(f"expected a {self.size}×{self.size} frame, got {generated_rgb.shape}")
        face = cv2.cvtColor(np.ascontiguousarray(generated_rgb), cv2.COLOR_RGB2BGR)
        bw, bh = self.x1 - self.x0, self.y1 - self.y0
        warped = cv2.warpAffine(face, self.to_crop, (bw, bh), flags=self._flags, borderMode=cv2.BORDER_REPLICATE)
        blend = self._box + self.mask * (warped.astype(np.float32) - self._box)
        out = self.photo.copy()
        region = out[self.y0 : self.y1, self.x0 : self.x1]
        region[self.support] = np.rint(blend[self.support]).astype(np.uint8)
        return out

"""The training items' image operations: the original's flip + 256 crop of the stored 260-px frames (DAVS_SPEC
§1.2), resizing to reduced model sizes, and the uint8 → float conversion that runs on the training device."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from davs_model.io.shards import FRAME_SIZE
from davs_model.networks.common import PAPER_IMAGE_SIZE

MAX_CROP_OFFSET = FRAME_SIZE - PAPER_IMAGE_SIZE  # 260 − 256 = 4: offsets 0..4 (train), 2 (eval)
EVAL_CROP_OFFSET = MAX_CROP_OFFSET // 2


def image_tensor(x: torch.Tensor, device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A batch's images on ``device`` as ``dtype`` in [0, 1], (..., 3, S, S): uint8 ones (``uint8=True`` datasets,
    (..., S, S, 3)) are moved as bytes and converted there; float ones are moved and cast."""
    if x.dtype == torch.uint8:
        x = x.to(device, non_blocking=True).movedim(-1, -3)
        return x.to(dtype, memory_format=torch.contiguous_format).div_(255.0)
    return x.to(device, dtype)


def crop_view(raw: np.ndarray, crop: tuple[int, int], flip: bool) -> np.ndarray:
    """(k,260,260,3) uint8 RGB → a (k,256,256,3) view, flipped then cropped at ``crop`` = (top, left); no copy."""
    top, left = crop
    raw = raw[:, :, ::-1] if flip else raw
    return raw[:, top : top + PAPER_IMAGE_SIZE, left : left + PAPER_IMAGE_SIZE]


def to_float(u8: np.ndarray, image_size: int) -> torch.Tensor:
    """(k,256,256,3) uint8 (any strides) → (k,3,S,S) contiguous float32 in [0,1], resized to S = ``image_size``
    (bilinear with antialiasing: area-like downsampling)."""
    x = torch.from_numpy(np.ascontiguousarray(u8)).permute(0, 3, 1, 2)
    x = x.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)
    if image_size != PAPER_IMAGE_SIZE:
        size = (image_size, image_size)
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)
    return x


def crop_uint8(raw: np.ndarray, crop: tuple[int, int], flip: bool, image_size: int) -> np.ndarray:
    """(k,260,260,3) uint8 → (k,S,S,3) contiguous uint8, channels last as stored: the same pixels as
    :func:`crop_view` (flip, then crop), copied by OpenCV (numpy copies a mirrored view ~10× slower); other sizes
    are resized in float and rounded back. A quarter of the bytes to collate, pass between processes and copy to
    the GPU, and no transposition in the loader: :func:`image_tensor` does both on the device."""
    if image_size != PAPER_IMAGE_SIZE:
        x = to_float(crop_view(raw, crop, flip), image_size)
        return x.mul_(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    top, left = crop
    if flip:  # flipped column j is column 259 − j: the flipped crop at left is the mirrored crop at 4 − left
        left = MAX_CROP_OFFSET - left
    window = raw[:, top : top + PAPER_IMAGE_SIZE, left : left + PAPER_IMAGE_SIZE]
    if not flip:
        return np.ascontiguousarray(window)
    out = np.empty(window.shape, np.uint8)
    for k, frame in enumerate(window):
        cv2.flip(frame, 1, dst=out[k])
    return out

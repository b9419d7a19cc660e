"""Helpers shared by the networks: channel scaling and the image-size rules for reduced (test) sizes.

At the paper's size (``width=1.0``, ``image_size=256``) every network is exactly the original, with the original's
module names. Smaller sizes exist so that tests and CPU experiments run in seconds.
"""

from __future__ import annotations

IMAGE_SIZES = (64, 128, 256)
PAPER_IMAGE_SIZE = 256
# The training mouth box of the original (rows 170:234, cols 64:192 of the 256×256 crop).
MOUTH_BOX_256 = (170, 234, 64, 192)


def scaled(channels: int, width: float) -> int:
    """Channel count at a width multiplier: a multiple of 4 (≥ 4), so the FAN ConvBlock's ½/¼/¼ split and the
    max-feature-map pairs stay valid. ``width=1.0`` returns the paper's count unchanged."""
    if width == 1.0:
        return channels
    return max(4, 4 * int(round(channels * width / 4)))


def check_image_size(image_size: int) -> int:
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {IMAGE_SIZES} (the paper's is 256), got {image_size}")
    return image_size


def mouth_box(image_size: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the mouth box, scaled from the original's 256-px box."""
    s = check_image_size(image_size) / PAPER_IMAGE_SIZE
    top, bottom, left, right = MOUTH_BOX_256
    return round(top * s), round(bottom * s), round(left * s), round(right * s)

"""Render inputs: the aligned identity, the speech as streamed MFCC windows, the aligned driving video.

Identity photos (and the first face of an identity video), scaled down to a longer side of at most 1280 px, are
aligned by the preprocessing code (:func:`davs_model.align.align_face` on dlib's 68 landmarks, eyes entered twice
as in the LRW training data that both our model and the authors' saw; the authors' demo script used the 3-point
fit, a slight difference), then centre-cropped 260 → 256 ([2:258], spec §1.2) and resized to the model's size as
the training loader does.
MFCC windows are computed chunk by chunk, bit-identical to :func:`davs_model.audio.mfcc_bins` on the whole signal,
so ten minutes of speech never hold more than a chunk of features.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from davs_model import audio as mfcc
from davs_model.align import align_face, warp_aligned
from davs_model.face import FaceLandmarker, anchors_from_68
from davs_model.io.media import MediaError, iter_video_frames, read_audio
from davs_model.motion import clip_transforms
from davs_model.rendering.config import DEMO
from davs_model.rendering.pasteback import cap_size
from davs_model.tracking import track_landmarks

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640: one MFCC bin hop (4 × 160 samples) = one 40 ms frame
FIRST_BIN = 2  # output frame i is paired with bin (or driving frame) i + 2
AUDIO_OFFSET = FIRST_BIN * SAMPLES_PER_FRAME  # 1280 samples = 80 ms: the soundtrack starts this far in
DEMO_TEXT = "Hello, this is a talking face demo."
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv"}
CROP = slice(2, 258)  # the original's test-time centre crop of the 260-px aligned face


class NoFaceError(ValueError):
    """No usable face in an identity photo or a driving video."""


def to_model_size(rgb: np.ndarray, image_size: int) -> torch.Tensor:
    """(k, 256, 256, 3) or (256, 256, 3) uint8 RGB → (k, 3, S, S) or (3, S, S) float in [0, 1], resized exactly as
    the training loader (bilinear with antialias)."""
    single = rgb.ndim == 3
    x = torch.from_numpy(np.ascontiguousarray(rgb[None] if single else rgb)).permute(0, 3, 1, 2).float() / 255
    if x.shape[-1] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
        x = x.clamp_(0, 1)
    return x[0] if single else x


def _read_image(path: Path) -> np.ndarray:
    data = np.fromfile(str(path), dtype=np.uint8)  # any file name, unlike cv2.imread
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ValueError(f"{path}: not an image OpenCV can read (PNG, JPEG, …) nor a video (by its suffix)")
    return image


def _demo_photo() -> np.ndarray:
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1])


@dataclass(frozen=True)
class IdentityFrame:
    """The identity: its aligned crop A, the photo (or video frame) it came from and the photo → canvas
    similarity ``transform`` (for :mod:`davs_model.rendering.pasteback`)."""

    aligned: np.ndarray  # (256, 256, 3) uint8 RGB
    photo_bgr: np.ndarray  # (H, W, 3) uint8 BGR, longer side ≤ pasteback.MAX_SIDE
    transform: np.ndarray  # (2, 3)


def align_identity(image_bgr: np.ndarray, landmarker: FaceLandmarker) -> IdentityFrame | None:
    """The 256×256 RGB aligned centre crop of the largest face in ``image_bgr`` (first scaled down to a longer
    side of at most ``pasteback.MAX_SIDE``), with that photo and its transform; None when there is no face."""
    image_bgr = cap_size(image_bgr)
    faces = landmarker.detect(image_bgr)
    if not faces:
        return None
    points = landmarker.landmarks(image_bgr, faces[0])
    aligned, M = align_face(image_bgr, anchors_from_68(points), duplicate_eyes=True)
    return IdentityFrame(np.ascontiguousarray(aligned[CROP, CROP, ::-1]), image_bgr, M)


def load_identity_frame(
    source: str | Path, landmarker: FaceLandmarker | None = None, max_video_frames: int = 250
) -> IdentityFrame:
    """The identity from a photo, a video (its first frame with a face, within ``max_video_frames``) or
    ``"demo"`` (skimage's astronaut photo). Raises NoFaceError naming the fix."""
    landmarker = landmarker or FaceLandmarker(upsample=1)
    if str(source) == DEMO:
        out = align_identity(_demo_photo(), landmarker)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: identity file not found")
        if path.suffix.lower() in VIDEO_SUFFIXES:
            out = None
            for k, frame in enumerate(iter_video_frames(path)):
                if k >= max_video_frames or (out := align_identity(frame, landmarker)) is not None:
                    break
        else:
            out = align_identity(_read_image(path), landmarker)
    if out is None:
        raise NoFaceError(
            f"{source}: no face found. Use a photo with one frontal face of at least ~40 px between the chin and "
            "the eyebrows (dlib's HOG detector, upsampled once); crop a large photo closer to the face if needed."
        )
    return out


def load_identity(source: str | Path, landmarker: FaceLandmarker | None = None, max_video_frames: int = 250):
    """Aligned identity A as (256, 256, 3) uint8 RGB (see :func:`load_identity_frame`)."""
    return load_identity_frame(source, landmarker, max_video_frames).aligned


def load_speech(source: str | Path) -> np.ndarray:
    """Mono int16 speech at 16 kHz from any audio or video file FFmpeg reads, or ``"demo"`` (a sentence
    synthesised offline by espeak-ng)."""
    if str(source) == DEMO:
        from davs_model.demo.speech import synthesize

        samples, _ = synthesize(DEMO_TEXT, voice="en-us", rate_wpm=150)
    else:
        samples = read_audio(source, sample_rate=SAMPLE_RATE)
    samples, changed = mfcc.dither_silence(samples)
    if changed:
        log.info("dithered %d samples of digital silence (±1 LSB) so every MFCC window is finite", changed)
    return samples


def count_bins(samples: np.ndarray) -> int:
    """Number of MFCC windows (= output frames in audio mode) of 16 kHz ``samples``."""
    return mfcc.count_bins(len(samples), SAMPLE_RATE)


iter_mfcc_bins = mfcc.iter_mfcc_bins


def soundtrack(samples: np.ndarray | None, n_frames: int) -> np.ndarray | None:
    """The mp4's audio: the input from 80 ms on (output frame i shows bin i + 2, i.e. time (i + 2)/25 s), cut or
    zero-padded to the video's n_frames/25 s."""
    if samples is None:
        return None
    out = np.zeros(n_frames * SAMPLES_PER_FRAME, dtype=np.int16)
    part = np.asarray(samples, dtype=np.int16)[AUDIO_OFFSET : AUDIO_OFFSET + len(out)]
    out[: len(part)] = part
    return out


def video_has_audio(path: str | Path) -> bool:
    try:
        read_audio(path, sample_rate=SAMPLE_RATE, max_duration_s=0.04)
    except MediaError:
        return False
    return True


def driving_transforms(path: str | Path, landmarker: FaceLandmarker) -> np.ndarray:
    """(T, 2, 3) per-frame alignment of a driving video (first pass: landmarks only; the LRW training protocol,
    eyes entered twice; frames without a face get interpolated transforms)."""
    track = track_landmarks(iter_video_frames(path), landmarker)
    if not track.detected.any():
        raise NoFaceError(f"{path}: no face found in any frame of the driving video")
    return clip_transforms(track.landmarks, track.detected, duplicate_eyes=True)


def iter_driving_frames(path: str | Path, transforms: np.ndarray) -> Iterator[np.ndarray]:
    """Second pass: aligned 256×256 RGB crops of the driving frames 2, 3, … (output frame i ↔ driving frame
    i + 2), one at a time."""
    for t, frame in enumerate(iter_video_frames(path)):
        if t >= len(transforms):
            break
        if t >= FIRST_BIN:
            yield np.ascontiguousarray(warp_aligned(frame, transforms[t])[CROP, CROP, ::-1])

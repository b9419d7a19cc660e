"""A clip's checks: what cannot work is rejected with a reason and a fix (``ClipRejected``); what the pipeline
adapts is noted for the clip's QC row."""

from __future__ import annotations

import numpy as np

from davs_model.config import PreprocessConfig
from davs_model.preprocess.passes import ClipRejected
from davs_model.preprocess.sources import Clip

# Frames stream and the MFCC is computed in blocks, but the decoded audio and the per-frame landmarks, transforms
# and MFCC windows of a clip are held: ~0.4 MB per second of video (bench/preprocess_memory.py). A clip is one
# spoken utterance; 30 min is far beyond any dataset's clips and keeps a shard job well inside its mem_mb=4000.
MAX_CLIP_SECONDS = 1800.0


def _select_bins(bins: np.ndarray, n_frames: int, lrw_protocol: bool) -> tuple[np.ndarray, np.ndarray]:
    """Keep bins l = 2 … n_frames − 3: bin l pairs with frame l and covers frames l−2 … l+2."""
    numbers = np.arange(2, 2 + len(bins))
    keep = numbers <= n_frames - 3
    bins, numbers = bins[keep], numbers[keep]
    needed = n_frames - 4 if lrw_protocol else 1
    if len(bins) < needed:
        raise ClipRejected(
            "audio_too_short",
            f"{len(bins)} MFCC bins, the LRW protocol needs bins 2..{n_frames - 3}"
            if lrw_protocol
            else "the audio is too short for one MFCC window (215 ms)",
        )
    return bins, numbers


def _check_input(clip: Clip, info, cfg: PreprocessConfig) -> list[str]:
    """Reject what cannot work before decoding; return notes on what the pipeline adapts (the QC row says it)."""
    if not info.has_audio:
        raise ClipRejected(
            "no_audio_stream", f"{clip.path}: no audio track; DAVS needs speech. Fix: use a video with its sound."
        )
    seconds = _duration_s(info)
    if seconds > MAX_CLIP_SECONDS:
        raise ClipRejected(
            "too_long",
            f"{clip.path}: {seconds / 60:.0f} min; a clip may last {MAX_CLIP_SECONDS / 60:g} min (its audio and "
            "per-frame data are held in memory). Fix: split it, e.g. "
            "`ffmpeg -i IN -c copy -f segment -segment_time 600 -reset_timestamps 1 OUT_%03d.mp4`",
        )
    notes = []
    if abs(info.fps - cfg.fps) > 1e-3:
        notes.append(f"resampled {info.fps:.3f} -> {cfg.fps:g} fps (nearest frame in time)")
    if info.rotation_deg:
        notes.append(f"rotated {info.rotation_deg} deg clockwise (display rotation metadata)")
    if info.audio_channels > 1:
        notes.append(f"{info.audio_channels} audio channels: used the first")
    if info.audio_sample_rate != cfg.sample_rate_hz:
        notes.append(f"audio resampled {info.audio_sample_rate} -> {cfg.sample_rate_hz} Hz")
    if clip.path.encode("utf-8", "surrogateescape") != clip.path.encode("utf-8", "backslashreplace"):
        notes.append("file name is not UTF-8: the clip id writes those bytes as \\xNN")
    return notes


def _duration_s(info) -> float:
    """The probed duration, or frames / fps when the container gives none (0 when neither is known)."""
    return info.duration_s or (info.n_frames / info.fps if info.fps else 0.0)

"""One clip → aligned frames + MFCC windows + a QC row; one shard → an HDF5 file + a QC table.

A bad clip never stops a shard: it gets a QC row with its reason and the shard goes on. Nothing is deleted.
Memory does not grow with the video's length (frames are never all held): pass 1 decodes the clip frame by frame
and tracks the landmarks; the transforms, the audio and its MFCC follow (every check that can reject the clip);
pass 2, inside ``ShardWriter.add``, decodes the clip again and warps and JPEG-encodes it frame by frame.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import logging
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import numpy as np

from davs_model.audio import mfcc_bins
from davs_model.config import PreprocessConfig, SourceConfig
from davs_model.io.media import MediaError, iter_video_frames, probe, read_audio
from davs_model.preprocess.qc import QC_COLUMNS, QCRow, write_qc  # noqa: F401  (QC_COLUMNS, write_qc: re-exported)
from davs_model.preprocess.sources import Clip

log = logging.getLogger(__name__)

# Frames stream and the MFCC is computed in blocks, but the decoded audio and the per-frame landmarks, transforms
# and MFCC windows of a clip are held: ~0.4 MB per second of video (bench/preprocess_memory.py). A clip is one
# spoken utterance; 30 min is far beyond any dataset's clips and keeps a shard job well inside its mem_mb=4000.
MAX_CLIP_SECONDS = 1800.0


class ClipRejected(Exception):
    """A clip that cannot be used; ``reason`` is a short code, the message says why and what to do."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


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


class AlignedFrames:
    """Pass 2: the clip decoded again and warped frame by frame (a sized iterable: ``ShardWriter.add`` streams it).

    Decoding is deterministic, so pass 2 yields the frames pass 1 tracked; a different count means the file changed
    in between (``ClipRejected`` "changed_file").
    """

    def __init__(self, path: Path, fps: float, transforms: np.ndarray):
        self.path, self.fps, self.transforms = path, fps, transforms

    def __len__(self) -> int:
        return len(self.transforms)

    def __iter__(self) -> Iterator[np.ndarray]:
        from davs_model.align import warp_aligned_fast

        n = 0
        for n, frame in enumerate(iter_video_frames(self.path, fps=self.fps), 1):
            if n > len(self):
                break
            yield warp_aligned_fast(frame, self.transforms[n - 1])
        if n != len(self):
            raise ClipRejected(
                "changed_file",
                f"{self.path}: {f'more than {len(self)}' if n > len(self) else n} frames on the second decode, "
                f"{len(self)} on the first: the file changed while it was processed. Fix: re-run",
            )


def _frames_off_the_heap() -> None:
    """glibc: allocations of >= 128 KiB (each decoded frame) get their own mmap, returned to the OS when freed.

    glibc raises that threshold to the largest block freed so far, and then frames come from the heap, which
    fragments: pass 1's peak RSS grew by 0 to 120 MB per minute of video, at random (bench/preprocess_memory.py).
    A fixed threshold keeps it flat. Without glibc's ``mallopt`` this does nothing.
    """
    with suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(-3, 128 * 1024)  # -3: M_MMAP_THRESHOLD


def _rejected(qc: QCRow, err: Exception) -> None:
    """Fill ``qc`` for a clip that failed: ClipRejected/MediaError are rejections, anything else an error (logged
    with its traceback; call from the ``except`` block)."""
    if isinstance(err, ClipRejected | MediaError):
        qc.status, qc.reason, qc.message = "rejected", err.reason, str(err)
    else:
        log.exception("clip %s failed", qc.clip.clip_id)
        qc.status, qc.reason, qc.message = "error", type(err).__name__, str(err)


def _duration_s(info) -> float:
    """The probed duration, or frames / fps when the container gives none (0 when neither is known)."""
    return info.duration_s or (info.n_frames / info.fps if info.fps else 0.0)


def _voxceleb_boxes(clip: Clip, frames: Iterator[np.ndarray], seconds: float, fps: float):
    """(boxes, frames): the clip's metadata boxes sized from its first frame, and the frames, that one included.

    The frame count is not known before pass 1: rows are read for twice the probed duration + 10 s (NaN-padded,
    like ``read_voxceleb_boxes``' own padding); the tracker refuses a clip with more frames than that.
    """
    from davs_model.preprocess.sources import read_voxceleb_boxes

    first = next(frames)  # iter_video_frames yields >= 1 frame or raises MediaError
    h, w = first.shape[:2]
    n_max = int(2 * seconds * fps) + int(10 * fps)
    boxes = read_voxceleb_boxes(clip.boxes_path, clip.boxes_kind, w, h, n_max)
    return boxes, itertools.chain([first], frames)


def process_clip(clip: Clip, src: SourceConfig, cfg: PreprocessConfig, landmarker) -> tuple[object | None, QCRow]:
    """Preprocess one clip up to pass 2. Returns (ClipRecord or None, QC row); never raises for a bad clip.

    The record's ``frames_bgr`` is an :class:`AlignedFrames` stream: the frames are decoded and warped when the
    shard writer consumes it (``build_shard`` turns a failure there into the clip's QC row too).
    """
    from davs_model.align import anchor_transform, interpolate_missing, jitter_scores, smooth_transforms
    from davs_model.face import anchors_from_68, track_landmarks
    from davs_model.io.shards import ClipRecord

    _frames_off_the_heap()
    qc = QCRow(clip=clip)
    start = time.perf_counter()
    try:
        path = Path(clip.path)
        if not path.exists():
            raise ClipRejected("missing_file", f"{path} does not exist. Fix: correct the path")
        info = probe(path)
        qc.input_fps = info.fps
        qc.notes = _check_input(clip, info, cfg)
        frames, boxes = iter_video_frames(path, fps=cfg.fps), None
        if clip.boxes_path:
            boxes, frames = _voxceleb_boxes(clip, frames, _duration_s(info), cfg.fps)
        # pass 1: frames are decoded, tracked and dropped one at a time
        track = track_landmarks(
            frames,
            landmarker,
            keyframe_interval=cfg.keyframe_interval,
            iou_threshold=cfg.tracking_iou,
            boxes=boxes,
        )
        qc.frames = n_frames = track.n_frames
        if n_frames < cfg.min_frames:
            msg = f"{n_frames} frames at {cfg.fps:g} fps, need ≥ {cfg.min_frames} (preprocess.min_frames)"
            raise ClipRejected("too_few_frames", f"{msg}. Fix: use a longer clip or remove it from the source")
        qc.detector_calls, qc.faces = track.detector_calls, track.max_faces
        if track.max_faces > 1:
            qc.notes.append(f"{track.max_faces} faces in a frame: tracked the largest")
        valid = np.asarray(track.detected, bool)
        qc.detection_rate = float(valid.mean())
        if not valid.any():
            need = "an upright, roughly frontal face of ≥ ~80 px (≥ ~40 px with preprocess.detector_upsample: 1)"
            raise ClipRejected("no_face", f"no face in any of {len(valid)} frames; dlib's detector needs {need}")
        if qc.detection_rate < cfg.min_detection_rate:
            raise ClipRejected(
                "low_detection_rate",
                f"a face in {qc.detection_rate:.0%} of frames, below "
                f"preprocess.min_detection_rate={cfg.min_detection_rate}",
            )
        transforms = np.full((n_frames, 2, 3), np.nan)
        for t in np.flatnonzero(valid):
            anchors = anchors_from_68(track.landmarks[t])
            transforms[t] = anchor_transform(anchors, duplicate_eyes=cfg.duplicate_eyes)
        del track
        transforms = interpolate_missing(transforms, valid)
        transforms = smooth_transforms(transforms, cfg.smoothing_sigma_frames)
        jitter = jitter_scores(transforms)
        qc.jitter_scale, qc.jitter_shift_px = jitter["jitter_scale"], jitter["jitter_shift_px"]

        # the audio checks come before pass 2: a clip rejected here never reaches the shard writer
        max_duration = n_frames / cfg.fps if src.effective_trim_to_video else None
        audio = read_audio(path, sample_rate=cfg.sample_rate_hz, max_duration_s=max_duration)
        gap = n_frames / cfg.fps - len(audio) / cfg.sample_rate_hz
        if gap > 1 / cfg.fps:
            qc.notes.append(f"audio ends {gap:.2f} s before the video: the last frames have no MFCC window")
        bins = mfcc_bins(audio, cfg.sample_rate_hz, trim_end=src.effective_trim_end)
        if not np.isfinite(bins).all():
            raise ClipRejected("silent_audio", "MFCC is not finite (digital silence: log of a zero filter energy)")
        bins, numbers = _select_bins(bins, n_frames, src.kind in ("lrw", "demo"))
        qc.n_bins = len(bins)
        record = ClipRecord(
            clip_id=clip.clip_id,
            source=clip.source,
            split=clip.split,
            label=clip.label,
            word=clip.word,
            speaker=clip.speaker,
            frames_bgr=AlignedFrames(path, cfg.fps, transforms),  # pass 2, run by the shard writer
            mfcc=bins,
            bin_numbers=numbers,
            frame_index=numbers.copy(),
            transforms=transforms,
            detected=valid,
            input_fps=float(info.fps),
            extra={
                "detection_rate": qc.detection_rate,
                "jitter_scale": qc.jitter_scale,
                "jitter_shift_px": qc.jitter_shift_px,
                "smoothing_sigma_frames": float(cfg.smoothing_sigma_frames),
            },
        )
        return record, qc
    except Exception as err:  # one bad video never stops the run: record it and go on
        _rejected(qc, err)
    finally:
        qc.seconds = time.perf_counter() - start
    return None, qc


def build_shard(
    clips: list[Clip],
    sources: dict[str, SourceConfig],
    cfg: PreprocessConfig,
    split: str,
    shard: int,
    out_h5: str | Path,
    out_qc: str | Path,
    progress: bool = True,
) -> list[QCRow]:
    """Preprocess ``clips`` into one HDF5 shard and its QC table."""
    from tqdm import tqdm

    from davs_model.face import FaceLandmarker
    from davs_model.io.shards import ShardWriter

    landmarker = FaceLandmarker(upsample=cfg.detector_upsample)
    rows: list[QCRow] = []
    Path(out_h5).parent.mkdir(parents=True, exist_ok=True)
    clips = sorted(clips, key=lambda c: c.clip_id)
    with ShardWriter(
        out_h5,
        split=split,
        shard=shard,
        image_format=cfg.image_format,
        jpeg_quality=cfg.jpeg_quality,
    ) as writer:
        bar = tqdm(clips, desc=f"{split}/{shard:03d}", unit="clip", disable=not progress)
        for clip in bar:
            record, qc = process_clip(clip, sources[clip.source], cfg, landmarker)
            if record is not None:
                start = time.perf_counter()
                try:
                    writer.add(record)  # pass 2; on failure the writer drops the partial clip
                except Exception as err:  # noqa: BLE001  (recorded in the QC row, like process_clip's)
                    _rejected(qc, err)
                finally:
                    qc.seconds += time.perf_counter() - start
            if qc.status != "ok":
                log.warning("%s: %s %s", clip.clip_id, qc.reason, qc.message)
            rows.append(qc)
            bar.set_postfix(ok=sum(r.status == "ok" for r in rows), bad=sum(r.status != "ok" for r in rows))
    write_qc(rows, out_qc)
    return rows

"""One clip → aligned frames + MFCC windows + a QC row; one shard → an HDF5 file + a QC table.

A bad clip never stops a shard: it gets a QC row with its reason and the shard goes on. Nothing is deleted.
Memory does not grow with the video's length: pass 1 decodes the clip frame by frame and tracks the landmarks;
the transforms, the audio and its MFCC follow (every check that can reject the clip); pass 2, inside
``ShardWriter.add``, warps and JPEG-encodes the frames one by one (those pass 1 kept of a short clip, else the
clip decoded again; ``passes.py``). ``preprocess.landmark_batch`` clips run pass 1 side by side, so that the
68-point model gets their faces in one batch (``tracking.track_many``).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from davs_model.audio import mfcc_bins
from davs_model.config import PreprocessConfig, SourceConfig
from davs_model.io.clip_reader import MediaError, open_clip
from davs_model.preprocess.checks import _check_input, _duration_s, _select_bins
from davs_model.preprocess.passes import (
    TRIM_EVERY,
    AlignedFrames,
    ClipRejected,
    Recorded,
    fixed_mmap_threshold,
    one_core_process,
    release_free_memory,
)
from davs_model.preprocess.qc import QC_COLUMNS, QCRow, write_qc  # noqa: F401  (QC_COLUMNS, write_qc: re-exported)
from davs_model.preprocess.sources import Clip

log = logging.getLogger(__name__)


def _rejected(qc: QCRow, err: Exception) -> None:
    """Fill ``qc`` for a clip that failed: ClipRejected/MediaError are rejections, anything else an error (logged
    with its traceback; call from the ``except`` block)."""
    if isinstance(err, ClipRejected | MediaError):
        qc.status, qc.reason, qc.message = "rejected", err.reason, str(err)
    else:
        log.exception("clip %s failed", qc.clip.clip_id)
        qc.status, qc.reason, qc.message = "error", type(err).__name__, str(err)


def _voxceleb_boxes(clip: Clip, frames: Iterator[np.ndarray], seconds: float, fps: float):
    """(boxes, frames): the clip's metadata boxes sized from its first frame, and the frames, that one included.

    The frame count is not known before pass 1: rows are read for twice the probed duration + 10 s (NaN-padded,
    like ``read_voxceleb_boxes``' own padding); the tracker refuses a clip with more frames than that.
    """
    from davs_model.preprocess.boxes import read_voxceleb_boxes

    first = next(frames)  # iter_video_frames yields >= 1 frame or raises MediaError
    h, w = first.shape[:2]
    n_max = int(2 * seconds * fps) + int(10 * fps)
    boxes = read_voxceleb_boxes(clip.boxes_path, clip.boxes_kind, w, h, n_max)
    return boxes, itertools.chain([first], frames)


def _pass1(clip: Clip, cfg: PreprocessConfig, landmarker, qc: QCRow):
    """Open and check a clip: (path, its reader, kept frames, its tracking generator). Raises for a bad clip."""
    from davs_model.tracking import tracking

    path = Path(clip.path)
    if not path.exists():
        raise ClipRejected("missing_file", f"{path} does not exist. Fix: correct the path")
    reader = open_clip(path, cfg.fps, cfg.sample_rate_hz, threads=1)  # a shard job has one core
    try:  # the reader: the clip's one open file, for pass 1 and the audio; closed here for a bad clip
        qc.input_fps = reader.info.fps
        qc.notes = _check_input(clip, reader.info, cfg)
        frames, boxes = reader.frames(), None
        if clip.boxes_path:
            boxes, frames = _voxceleb_boxes(clip, frames, _duration_s(reader.info), cfg.fps)
        kept = Recorded(frames)
        steps = tracking(kept, landmarker, cfg.keyframe_interval, boxes=boxes, iou_threshold=cfg.tracking_iou)
    except BaseException:
        reader.close()
        raise
    return path, reader, kept, steps


def _finish(clip: Clip, src: SourceConfig, cfg: PreprocessConfig, qc: QCRow, path: Path, reader, kept, track):
    """Everything after pass 1: the checks on the landmarks, the transforms, the audio and MFCC → a ClipRecord."""
    from davs_model.io.shards import ClipRecord
    from davs_model.motion import clip_transforms, jitter_scores, smooth_transforms

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
    transforms = clip_transforms(track.landmarks, valid, duplicate_eyes=cfg.duplicate_eyes)
    transforms = smooth_transforms(transforms, cfg.smoothing_sigma_frames)
    jitter = jitter_scores(transforms)
    qc.jitter_scale, qc.jitter_shift_px = jitter["jitter_scale"], jitter["jitter_shift_px"]

    # the audio checks come before pass 2: a clip rejected here never reaches the shard writer
    max_duration = n_frames / cfg.fps if src.effective_trim_to_video else None
    audio = reader.audio(max_duration)
    gap = n_frames / cfg.fps - len(audio) / cfg.sample_rate_hz
    if gap > 1 / cfg.fps:
        qc.notes.append(f"audio ends {gap:.2f} s before the video: the last frames have no MFCC window")
    bins = mfcc_bins(audio, cfg.sample_rate_hz, trim_end=src.effective_trim_end)
    if not np.isfinite(bins).all():
        raise ClipRejected("silent_audio", "MFCC is not finite (digital silence: log of a zero filter energy)")
    bins, numbers = _select_bins(bins, n_frames, src.kind in ("lrw", "demo"))
    qc.n_bins = len(bins)
    return ClipRecord(
        clip_id=clip.clip_id,
        source=clip.source,
        split=clip.split,
        label=clip.label,
        word=clip.word,
        speaker=clip.speaker,
        # pass 2, run by the shard writer, which encodes each frame before it draws the next
        frames_bgr=AlignedFrames(path, cfg.fps, transforms, kept.frames, reuse_output=True),
        mfcc=bins,
        bin_numbers=numbers,
        frame_index=numbers.copy(),
        transforms=transforms,
        detected=valid,
        input_fps=float(reader.info.fps),
        extra={
            "detection_rate": qc.detection_rate,
            "jitter_scale": qc.jitter_scale,
            "jitter_shift_px": qc.jitter_shift_px,
            "smoothing_sigma_frames": float(cfg.smoothing_sigma_frames),
        },
    )


def process_clips(
    clips: list[Clip], sources: dict[str, SourceConfig], cfg: PreprocessConfig, landmarker
) -> Iterator[tuple[object | None, QCRow]]:
    """(ClipRecord or None, QC row) per clip, in order; never raises for a bad clip.

    Groups of ``cfg.landmark_batch`` clips run pass 1 side by side (``tracking.track_many``); the landmarks are the
    same for any group size. A record's ``frames_bgr`` is an :class:`AlignedFrames`: pass 2 runs when the shard
    writer consumes it (``build_shard`` turns a failure there into the clip's QC row too). A clip's ``seconds`` is
    its own work plus an equal share of its group's side-by-side tracking.
    """
    from davs_model.tracking import track_many

    fixed_mmap_threshold()
    for at in range(0, len(clips), cfg.landmark_batch):
        group = clips[at : at + cfg.landmark_batch]
        rows = [QCRow(clip=clip) for clip in group]
        opened: dict[int, tuple] = {}
        try:
            for i, (clip, qc) in enumerate(zip(group, rows, strict=True)):
                start = time.perf_counter()
                try:
                    opened[i] = _pass1(clip, cfg, landmarker, qc)
                except Exception as err:  # one bad video never stops the run: record it and go on
                    _rejected(qc, err)
                qc.seconds = time.perf_counter() - start
            start = time.perf_counter()
            tracks = dict(zip(opened, track_many([o[3] for o in opened.values()], landmarker), strict=True))
            share = (time.perf_counter() - start) / max(len(opened), 1)
            for i, (clip, qc) in enumerate(zip(group, rows, strict=True)):
                record, start = None, time.perf_counter()
                if i in opened:
                    path, reader, kept, _ = opened.pop(i)
                    try:
                        if isinstance(tracks[i], Exception):
                            raise tracks[i]
                        record = _finish(clip, sources[clip.source], cfg, qc, path, reader, kept, tracks.pop(i))
                    except Exception as err:  # noqa: BLE001  (one bad video never stops the run)
                        _rejected(qc, err)
                    finally:
                        reader.close()  # read to its end (closed already) or not (a rejected clip)
                    qc.seconds += share
                qc.seconds += time.perf_counter() - start
                yield record, qc
        finally:  # a group cut short (an error, or the caller stopped early): no container left open
            for _, reader, _, _ in opened.values():
                reader.close()


def process_clip(clip: Clip, src: SourceConfig, cfg: PreprocessConfig, landmarker) -> tuple[object | None, QCRow]:
    """Preprocess one clip up to pass 2 (:func:`process_clips` of one clip)."""
    return next(process_clips([clip], {clip.source: src}, cfg, landmarker))


def build_shard(
    clips: list[Clip],
    sources: dict[str, SourceConfig],
    cfg: PreprocessConfig,
    split: str,
    shard: int,
    out_h5: str | Path,
    out_qc: str | Path,
    progress: bool = True,
    one_core: bool = False,
) -> list[QCRow]:
    """Preprocess ``clips`` into one HDF5 shard and its QC table.

    ``one_core``: set up the whole process as a one-core job (``passes.one_core_process``) once the modules and the
    model are loaded, so that they are frozen out of the collector's scans and their BLAS pools limited; for the
    job's own process (``workflow/scripts/build_shard.py``), not for a library caller's.
    """
    from tqdm import tqdm

    from davs_model.face import FaceLandmarker
    from davs_model.io.shards import ShardWriter

    landmarker = FaceLandmarker(upsample=cfg.detector_upsample)
    if one_core:
        one_core_process()
    rows: list[QCRow] = []
    n_ok = 0
    Path(out_h5).parent.mkdir(parents=True, exist_ok=True)
    clips = sorted(clips, key=lambda c: c.clip_id)
    with ShardWriter(
        out_h5,
        split=split,
        shard=shard,
        image_format=cfg.image_format,
        jpeg_quality=cfg.jpeg_quality,
    ) as writer:
        bar = tqdm(process_clips(clips, sources, cfg, landmarker), desc=f"{split}/{shard:03d}", unit="clip",
                   total=len(clips), disable=not progress)  # fmt: skip
        for record, qc in bar:
            if record is not None:
                start = time.perf_counter()
                try:
                    writer.add(record)  # pass 2; on failure the writer drops the partial clip
                except Exception as err:  # noqa: BLE001  (recorded in the QC row, like process_clip's)
                    _rejected(qc, err)
                finally:
                    qc.seconds += time.perf_counter() - start
            if qc.status != "ok":
                log.warning("%s: %s %s", qc.clip.clip_id, qc.reason, qc.message)
            rows.append(qc)
            n_ok += qc.status == "ok"
            bar.set_postfix(ok=n_ok, bad=len(rows) - n_ok)
            if one_core and len(rows) % TRIM_EVERY == 0:
                release_free_memory()  # else the job's heap grows with its clips
    write_qc(rows, out_qc)
    return rows

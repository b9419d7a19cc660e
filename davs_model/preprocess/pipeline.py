"""One clip → aligned frames + MFCC windows + a QC row; one shard → an HDF5 file + a QC table.

A bad clip never stops a shard: it gets a QC row with its reason and the shard goes on. Nothing is deleted.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from davs_model.audio import mfcc_bins
from davs_model.config import PreprocessConfig, SourceConfig
from davs_model.io.media import MediaError, iter_video_frames, probe, read_audio
from davs_model.preprocess.sources import Clip

log = logging.getLogger(__name__)

QC_COLUMNS = (
    "clip_id",
    "source",
    "split",
    "label",
    "speaker",
    "frames",
    "input_fps",
    "n_bins",
    "status",
    "reason",
    "detection_rate",
    "detector_calls",
    "jitter_scale",
    "jitter_shift_px",
    "seconds",
    "path",
)


class ClipRejected(Exception):
    """A clip that cannot be used; ``reason`` is a short code, the message says why and what to do."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class QCRow:
    clip: Clip
    status: str = "ok"
    reason: str = ""
    message: str = ""
    frames: int = 0
    input_fps: float = float("nan")
    n_bins: int = 0
    detection_rate: float = float("nan")
    detector_calls: int = 0
    jitter_scale: float = float("nan")
    jitter_shift_px: float = float("nan")
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def as_row(self) -> dict[str, str]:
        c = self.clip
        reason = f"{self.reason}: {self.message}" if self.message else self.reason
        values = {
            "clip_id": c.clip_id,
            "source": c.source,
            "split": c.split,
            "label": c.label,
            "speaker": c.speaker,
            "frames": self.frames,
            "input_fps": f"{self.input_fps:.3f}",
            "n_bins": self.n_bins,
            "status": self.status,
            "reason": reason.replace("\t", " ").replace("\n", " "),
            "detection_rate": f"{self.detection_rate:.4f}",
            "detector_calls": self.detector_calls,
            "jitter_scale": f"{self.jitter_scale:.4f}",
            "jitter_shift_px": f"{self.jitter_shift_px:.4f}",
            "seconds": f"{self.seconds:.3f}",
            "path": c.path,
        }
        return {k: str(v) for k, v in values.items()}


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


def process_clip(clip: Clip, src: SourceConfig, cfg: PreprocessConfig, landmarker) -> tuple[object | None, QCRow]:
    """Preprocess one clip. Returns (ClipRecord or None, QC row); never raises for a bad clip."""
    from davs_model.align import (
        anchor_transform,
        interpolate_missing,
        jitter_scores,
        smooth_transforms,
        warp_aligned,
    )
    from davs_model.face import anchors_from_68, track_landmarks
    from davs_model.io.shards import ClipRecord

    qc = QCRow(clip=clip)
    start = time.perf_counter()
    try:
        path = Path(clip.path)
        if not path.exists():
            raise ClipRejected("missing_file", f"{path} does not exist")
        info = probe(path)
        qc.input_fps = info.fps
        if not info.has_audio:
            raise ClipRejected("no_audio_stream", "the video has no audio track; DAVS needs speech")
        boxes = None
        frames = list(iter_video_frames(path, fps=cfg.fps))
        qc.frames = len(frames)
        if len(frames) < cfg.min_frames:
            raise ClipRejected("too_few_frames", f"{len(frames)} frames at {cfg.fps} fps, need ≥ {cfg.min_frames}")
        if clip.boxes_path:
            from davs_model.preprocess.sources import read_voxceleb_boxes

            h, w = frames[0].shape[:2]
            boxes = read_voxceleb_boxes(clip.boxes_path, clip.boxes_kind, w, h, len(frames))
        track = track_landmarks(
            frames,
            landmarker,
            keyframe_interval=cfg.keyframe_interval,
            iou_threshold=cfg.tracking_iou,
            boxes=boxes,
        )
        qc.detector_calls = track.detector_calls
        valid = np.asarray(track.detected, bool)
        qc.detection_rate = float(valid.mean())
        if not valid.any():
            raise ClipRejected("no_face", "no face found in any frame")
        if qc.detection_rate < cfg.min_detection_rate:
            raise ClipRejected(
                "low_detection_rate",
                f"a face in {qc.detection_rate:.0%} of frames, below "
                f"preprocess.min_detection_rate={cfg.min_detection_rate}",
            )
        transforms = np.full((len(frames), 2, 3), np.nan)
        for t in np.flatnonzero(valid):
            anchors = anchors_from_68(track.landmarks[t])
            transforms[t] = anchor_transform(anchors, duplicate_eyes=cfg.duplicate_eyes)
        transforms = interpolate_missing(transforms, valid)
        transforms = smooth_transforms(transforms, cfg.smoothing_sigma_frames)
        jitter = jitter_scores(transforms)
        qc.jitter_scale, qc.jitter_shift_px = jitter["jitter_scale"], jitter["jitter_shift_px"]
        aligned = np.stack([warp_aligned(f, m) for f, m in zip(frames, transforms, strict=True)])
        del frames

        max_duration = len(aligned) / cfg.fps if src.effective_trim_to_video else None
        audio = read_audio(path, sample_rate=cfg.sample_rate_hz, max_duration_s=max_duration)
        bins = mfcc_bins(audio, cfg.sample_rate_hz, trim_end=src.effective_trim_end)
        if not np.isfinite(bins).all():
            raise ClipRejected("silent_audio", "MFCC is not finite (digital silence: log of a zero filter energy)")
        bins, numbers = _select_bins(bins, len(aligned), src.kind in ("lrw", "demo"))
        qc.n_bins = len(bins)
        record = ClipRecord(
            clip_id=clip.clip_id,
            source=clip.source,
            split=clip.split,
            label=clip.label,
            word=clip.word,
            speaker=clip.speaker,
            frames_bgr=aligned,
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
    except ClipRejected as err:
        qc.status, qc.reason, qc.message = "rejected", err.reason, str(err)
    except MediaError as err:
        qc.status, qc.reason, qc.message = "rejected", err.reason, str(err)
    except Exception as err:  # one bad video never stops the run: record it and go on
        log.exception("clip %s failed", clip.clip_id)
        qc.status, qc.reason, qc.message = "error", type(err).__name__, str(err)
    finally:
        qc.seconds = time.perf_counter() - start
    return None, qc


def write_qc(rows: list[QCRow], path: str | Path) -> None:
    """QC rows as a TSV (atomic: temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        writer = csv.DictWriter(fh, QC_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row.as_row())
    tmp.replace(path)


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
                writer.add(record)
            else:
                log.warning("%s: %s %s", clip.clip_id, qc.reason, qc.message)
            rows.append(qc)
            bar.set_postfix(ok=sum(r.status == "ok" for r in rows), bad=sum(r.status != "ok" for r in rows))
    write_qc(rows, out_qc)
    return rows

"""Preprocessing speed: our pipeline vs a naive per-frame pipeline, on the same clips, in one process.

- naive: per frame, HOG detection (same upsample) + 68 landmarks (dlib's own predictor) + ``align_face`` (the
  parity warp) +
  ``cv2.imwrite`` of one JPEG file (q 95) into a temporary folder; per clip, the audio, the MFCC and one ``.bin``
  file per window (the original folder layout; the same work as ours, so the ratio compares like with like);
- ours: ``process_clips`` + ``ShardWriter``, as ``build_shard`` does (``--landmark-batch`` clips side by side);
- floor: decode + the pipeline's warp + JPEG encoding only (ours' transforms, nothing else, done as ours does it).

The process is set up as a shard job's (``one_core_process``: BLAS pools at 1 thread, ``gc.freeze``, large blocks
mapped) for all three paths; OpenCV and torch are pinned to 1 thread. The naive path decodes with FFmpeg's default
threads, ours and the floor in the calling thread; CPU time counts every thread. The figure is
frames per CPU-second of the process (frames/s per core); wall-clock figures are printed beside it. The paths run
interleaved, ``--repeats`` times, and the ratio is that of the medians. Also printed: the ratio of each round (the
spread this host's load gives), that of each path's fastest run, and the mean landmark difference of ours
(key-frame tracking) against the per-frame path, in pixels of the input frames.

    python bench/preprocess_speed.py [--root resources/demo/lipread_mp4] [--clips 12] [--repeats 5] [--profile]

Make the demo clips first (`make demo`, or `snakemake --cores 2 preprocess`).
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import dataclasses
import pstats
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from davs_model.align import BAND_SHAPE, OUTPUT_SHAPE, align_face, warp_aligned_fast
from davs_model.audio import mfcc_bins
from davs_model.config import PreprocessConfig, SourceConfig
from davs_model.face import FaceLandmarker, anchors_from_68
from davs_model.io.media import iter_video_frames, read_audio
from davs_model.io.shards import ShardWriter
from davs_model.preprocess.passes import one_core_process
from davs_model.preprocess.pipeline import process_clips
from davs_model.preprocess.sources import Clip, discover_lrw
from davs_model.tracking import track_landmarks


def naive_clip(path: str, landmarker: FaceLandmarker, out: Path, cfg: PreprocessConfig, trim_end: int) -> list:
    """The per-frame pipeline for one clip; returns its per-frame landmarks (None where no face)."""
    (out / "align_face256").mkdir(parents=True, exist_ok=True)
    (out / "mfcc20").mkdir(exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality]
    found = []
    for t, frame in enumerate(iter_video_frames(path, fps=cfg.fps)):
        rects = landmarker.detect(frame)
        pts = landmarker.landmarks(frame, rects[0]) if rects else None
        found.append(pts)
        if pts is not None:
            aligned, _ = align_face(frame, anchors_from_68(pts), duplicate_eyes=cfg.duplicate_eyes)
            cv2.imwrite(str(out / "align_face256" / f"{t}.jpg"), aligned, params)
    bins = mfcc_bins(read_audio(path, sample_rate=cfg.sample_rate_hz), cfg.sample_rate_hz, trim_end=trim_end)
    for number, window in enumerate(bins[: max(len(found) - 4, 0)], start=2):
        window.tofile(out / "mfcc20" / f"{number}.bin")
    return found


def ours(clips: list[Clip], src: SourceConfig, cfg: PreprocessConfig, landmarker, out_h5: Path) -> list:
    """``build_shard`` without the QC table and the progress bar; returns the records' transforms."""
    transforms = []
    fmt, q = cfg.image_format, cfg.jpeg_quality
    with ShardWriter(out_h5, split="train", shard=0, image_format=fmt, jpeg_quality=q) as w:
        for record, qc in process_clips(clips, {c.source: src for c in clips}, cfg, landmarker):
            if record is None:
                raise SystemExit(f"{qc.clip.path}: rejected ({qc.reason} {qc.message})")
            w.add(record)
            transforms.append(record.transforms)
    return transforms


def floor(clips: list[Clip], transforms: list, cfg: PreprocessConfig) -> None:
    """Decode + warp + JPEG encode, with the transforms ours computed, done as ours does them."""
    params = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality]
    band, out = np.empty(BAND_SHAPE, np.uint8), np.empty(OUTPUT_SHAPE, np.uint8)
    for clip, ms in zip(clips, transforms, strict=True):
        for frame, m in zip(iter_video_frames(clip.path, fps=cfg.fps, threads=1), ms, strict=True):
            cv2.imencode(".jpg", warp_aligned_fast(frame, m, out=out, band=band), params)


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds of the process, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def landmark_difference(clips: list[Clip], per_frame: list, cfg: PreprocessConfig, landmarker) -> list[float]:
    """Per clip: mean distance (px) of ours' landmarks (as process_clip computes them) from the per-frame ones."""
    diffs = []
    for clip, ref in zip(clips, per_frame, strict=True):
        frames = list(iter_video_frames(clip.path, fps=cfg.fps))
        key = track_landmarks(
            frames, landmarker, keyframe_interval=cfg.keyframe_interval, iou_threshold=cfg.tracking_iou
        )
        both = [t for t, p in enumerate(ref) if p is not None and key.detected[t]]
        d = np.linalg.norm(key.landmarks[both] - np.stack([ref[t] for t in both]), axis=-1)
        diffs.append(float(d.mean()))
    return diffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="resources/demo/lipread_mp4")
    parser.add_argument("--clips", type=int, default=12, help="clips per run (spread over all words)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keyframe-interval", type=int, default=None, help="default: the config's (30)")
    parser.add_argument("--landmark-batch", type=int, default=None, help="default: the config's (16)")
    parser.add_argument("--profile", action="store_true", help="cProfile one run of ours, print the top 25")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    cfg = PreprocessConfig()
    if args.keyframe_interval:
        cfg = dataclasses.replace(cfg, keyframe_interval=args.keyframe_interval)
    if args.landmark_batch:
        cfg = dataclasses.replace(cfg, landmark_batch=args.landmark_batch)
    src = SourceConfig(kind="demo")
    found = discover_lrw("demo", args.root)
    if not found:
        raise SystemExit(f"no clips under {args.root}: run `make demo` first")
    step = max(len(found) // args.clips, 1)
    clips = found[::step][: args.clips]
    landmarker = FaceLandmarker(upsample=cfg.detector_upsample)
    dlib_landmarker = FaceLandmarker(upsample=cfg.detector_upsample, engine="dlib")  # what a naive script calls
    one_core_process()  # as build_shard(one_core=True) does once loaded; naive and floor run under it too
    tmp = Path(tempfile.mkdtemp(prefix="davs-bench-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    per_frame: list[list] = []
    transforms: list = []
    runs: dict[str, list[tuple[float, float]]] = {"naive": [], "ours": [], "floor": []}

    def run_naive() -> None:
        per_frame[:] = [
            naive_clip(c.path, dlib_landmarker, tmp / "naive" / str(i), cfg, src.effective_trim_end)
            for i, c in enumerate(clips)
        ]

    def run_ours() -> None:
        transforms[:] = ours(clips, src, cfg, landmarker, tmp / "ours.h5")

    run_ours()  # warm-up (file cache, imports) and the transforms for the floor
    for _ in range(args.repeats):  # interleaved: every path sees the same machine load
        runs["naive"].append(timed(run_naive))
        runs["ours"].append(timed(run_ours))
        runs["floor"].append(timed(lambda: floor(clips, transforms, cfg)))
    n_frames = sum(len(p) for p in per_frame)
    med = {k: (statistics.median(c for c, _ in v), statistics.median(w for _, w in v)) for k, v in runs.items()}
    diffs = landmark_difference(clips, per_frame, cfg, landmarker)
    print(f"clips {len(clips)}, frames {n_frames}, key-frame interval {cfg.keyframe_interval}, "
          f"landmark batch {cfg.landmark_batch}, "
          f"median of {args.repeats} interleaved runs")  # fmt: skip
    for k, (cpu, wall) in med.items():
        print(f"{k:6s} {n_frames / cpu:7.1f} frames per CPU-second ({1e3 * cpu / n_frames:.2f} ms/frame), "
              f"wall {n_frames / wall:7.1f} frames/s")  # fmt: skip
    print(f"ratio ours/naive: {med['naive'][0] / med['ours'][0]:.2f}x per CPU-second "
          f"(wall {med['naive'][1] / med['ours'][1]:.2f}x); ours takes {med['ours'][0] / med['floor'][0]:.2f}x "
          f"the floor's CPU time")  # fmt: skip
    rounds = [n[0] / o[0] for n, o in zip(runs["naive"], runs["ours"], strict=True)]
    best = {k: min(c for c, _ in v) for k, v in runs.items()}
    print(f"ratio of each interleaved round: {' '.join(f'{r:.2f}x' for r in rounds)}; of the fastest runs "
          f"(naive {1e3 * best['naive'] / n_frames:.2f}, ours {1e3 * best['ours'] / n_frames:.2f} ms/frame): "
          f"{best['naive'] / best['ours']:.2f}x")  # fmt: skip
    print(f"mean landmark difference ours vs per-frame: {np.mean(diffs):.3f} px (worst clip {max(diffs):.3f})")
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(run_ours)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()

"""Key-frame detection vs detecting on every frame, on the demo clips.

Prints, over all clips: the mean landmark difference (px), the detector calls of each path and their ratio, and the
landmark time of each path (median of --repeats runs) with the speed ratio measured side by side.

    python bench/keyframe_tracking.py [--root resources/demo/lipread_mp4] [--repeats 5] [--interval K]

Make the demo clips first (`make demo`, or `snakemake --cores all preprocess`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from davs_model.config import PreprocessConfig
from davs_model.face import FaceLandmarker
from davs_model.io.media import iter_video_frames
from davs_model.tracking import detect_every_frame, track_landmarks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="resources/demo/lipread_mp4")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--interval", type=int, default=None, help="default: the config's (30)")
    args = parser.parse_args()
    args.interval = args.interval or PreprocessConfig().keyframe_interval
    paths = sorted(Path(args.root).rglob("*.mp4"))
    if not paths:
        raise SystemExit(f"no clips under {args.root}: run `make demo` first")
    clips = [list(iter_video_frames(p)) for p in paths]
    landmarker = FaceLandmarker()
    diffs, calls_key, calls_all, frames = [], 0, 0, 0
    for clip in clips:
        key = track_landmarks(clip, landmarker, keyframe_interval=args.interval)
        every = detect_every_frame(clip, landmarker)
        both = key.detected & every.detected
        diffs.append(np.linalg.norm(key.landmarks[both] - every.landmarks[both], axis=-1).mean())
        calls_key += key.detector_calls
        calls_all += every.detector_calls
        frames += len(clip)

    def timed(fn) -> float:
        start = time.perf_counter()
        for clip in clips:
            fn(clip)
        return time.perf_counter() - start

    t_key, t_all = [], []
    for _ in range(args.repeats):  # interleaved, so both paths see the same machine load
        t_all.append(timed(lambda c: detect_every_frame(c, landmarker)))
        t_key.append(timed(lambda c: track_landmarks(c, landmarker, keyframe_interval=args.interval)))
    mk, ma = statistics.median(t_key), statistics.median(t_all)
    print(f"clips {len(clips)}, frames {frames}, key-frame interval {args.interval}")
    print(f"mean landmark difference vs every-frame detection: {np.mean(diffs):.3f} px (worst {max(diffs):.3f})")
    ratio = calls_all / calls_key
    print(f"detector calls: key-frame {calls_key}, every frame {calls_all}, {ratio:.2f}x fewer")
    print(
        f"landmark time (median of {args.repeats}): key-frame {1e3 * mk / frames:.2f} ms/frame, "
        f"every frame {1e3 * ma / frames:.2f} ms/frame, speed-up {ma / mk:.2f}x"
    )


if __name__ == "__main__":
    main()

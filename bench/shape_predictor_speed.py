"""The 68-point model alone: dlib's own evaluation vs ours (davs_model/shape_predictor.py), one face at a time
and in batches, on the same frames and boxes; checks that every landmark is equal.

Frames: the first frame of each demo clip, with the detector box moved by up to ±8 px per frame (as tracked boxes
are). Figures are milliseconds of process CPU time per face, medians of ``--repeats`` interleaved runs, 1 thread.

    python bench/shape_predictor_speed.py [--root resources/demo/lipread_mp4] [--faces 60] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np

from davs_model.face import FaceLandmarker
from davs_model.io.media import iter_video_frames
from davs_model.preprocess.sources import discover_lrw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="resources/demo/lipread_mp4")
    parser.add_argument("--faces", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    cv2.setNumThreads(1)
    clips = discover_lrw("demo", args.root)[: args.faces]
    if not clips:
        raise SystemExit(f"no clips under {args.root}: run `make demo` first")
    frames = [next(iter(iter_video_frames(c.path))) for c in clips]
    ours, theirs = FaceLandmarker(), FaceLandmarker(engine="dlib")
    rng = np.random.default_rng(0)
    boxes = []
    for f in frames:
        r = ours.detect(f)[0]
        boxes.append(np.array([r.left(), r.top(), r.right(), r.bottom()]) + rng.integers(-8, 9, 4))
    boxes = np.stack(boxes)
    ref = theirs.landmarks_many(frames, boxes)
    for b in args.batches:
        got = np.concatenate(
            [ours.landmarks_many(frames[i : i + b], boxes[i : i + b]) for i in range(0, len(frames), b)]
        )
        if not np.array_equal(got, ref):
            raise SystemExit(
                f"batch {b}: landmarks differ from dlib's on {int((got != ref).any(-1).sum())} points"
            )
    runs: dict[str, list[float]] = {"dlib": [], **{f"ours, batch {b}": [] for b in args.batches}}

    def per_face(landmarker: FaceLandmarker, b: int) -> float:
        start = time.process_time()
        for i in range(0, len(frames), b):
            landmarker.landmarks_many(frames[i : i + b], boxes[i : i + b])
        return 1e3 * (time.process_time() - start) / len(frames)

    for _ in range(args.repeats):
        runs["dlib"].append(per_face(theirs, 1))
        for b in args.batches:
            runs[f"ours, batch {b}"].append(per_face(ours, b))
    base = statistics.median(runs["dlib"])
    print(f"{len(frames)} faces, landmarks equal to dlib's at every batch size; median of {args.repeats} runs")
    for name, values in runs.items():
        med = statistics.median(values)
        print(f"{name:16s} {med:6.3f} ms per face   {base / med:5.2f}x dlib")


if __name__ == "__main__":
    main()

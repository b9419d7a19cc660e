"""Landmark difference of the key-frame tracker against detecting on every frame, by key-frame interval.

Two sets of clips: the demo clips (``make demo``), and real face photos of ``../shared/fixtures/faces`` moved over
48 frames (drift, sway, a ±2° rotation, ±3 % zoom; twice, the second time faster), where those fixtures exist. For
each interval it prints the mean landmark difference (px, over frames with a face in both paths; mean over clips
and the worst clip) of two trackers, in the same run on the same frames:

- grid: the tracker as it is (between key frames the detector box moves in whole steps of the detector's grid);
- continuous: the same tracker with the box moved by the exact landmark motion (the tracker before issue 7.1's
  third session), for comparison.

    python bench/tracking_accuracy.py [--root resources/demo/lipread_mp4] [--intervals 12 25 30]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from unittest import mock

import cv2
import numpy as np

from davs_model.face import FaceLandmarker
from davs_model.io.media import iter_video_frames
from davs_model.tracking import _moved, _Track, detect_every_frame, track_landmarks

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "faces"


def moved(image: np.ndarray, seed: int, n: int = 48, amp: float = 6.0, drift: float = 0.4) -> list[np.ndarray]:
    """``image`` moved smoothly: sway of ``amp`` px, ``drift`` px per frame, ±2° rotation, ±3 % zoom."""
    h, w = image.shape[:2]
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, 4)
    frames = []
    for t in range(n):
        dx = amp * np.sin(2 * np.pi * t / n + phase[0]) + drift * t
        dy = 0.7 * amp * np.sin(3 * np.pi * t / n + phase[1]) + 0.75 * drift * t
        angle, zoom = 2.0 * np.sin(2 * np.pi * t / n + phase[3]), 1 + 0.03 * np.sin(2 * np.pi * t / n + phase[2])
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, zoom)
        m[:, 2] += (dx, dy)
        frames.append(cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE))
    return frames


def fixture_clips() -> list[list[np.ndarray]]:
    """The fixture faces at a few sizes (face boxes ~55-190 px), each moved twice (slow, fast)."""
    images = []
    for name, scales in (("astronaut.png", (0.6, 0.8, 1.0, 1.3)), ("takeo.ppm", (1.0, 1.5))):
        im = cv2.imread(str(FIXTURES / name))
        if im is not None:
            images += [cv2.resize(im, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) for s in scales]
    im = cv2.imread(str(FIXTURES / "Tom_Hanks_54745.png"))
    if im is not None:  # a tight 112 px crop: room to move
        im = cv2.copyMakeBorder(im, 60, 60, 60, 60, cv2.BORDER_REPLICATE)
        images += [cv2.resize(im, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) for s in (1.0, 1.5)]
    slow = [moved(im, seed=k) for k, im in enumerate(images)]
    return slow + [moved(im, seed=k + 50, amp=12.0, drift=1.0) for k, im in enumerate(images)]


def difference(clips, every, landmarker, interval: int) -> tuple[float, float]:
    """(mean over clips, worst clip) of the mean landmark distance to the per-frame path."""
    d = []
    for frames, ref in zip(clips, every, strict=True):
        key = track_landmarks(frames, landmarker, keyframe_interval=interval)
        both = key.detected & ref.detected
        if both.any():
            d.append(float(np.linalg.norm(key.landmarks[both] - ref.landmarks[both], axis=-1).mean()))
    return float(np.mean(d)), float(np.max(d))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="resources/demo/lipread_mp4")
    parser.add_argument("--intervals", type=int, nargs="+", default=[12, 25, 30])
    args = parser.parse_args()
    sets = {}
    paths = sorted(Path(args.root).rglob("*.mp4"))
    if paths:
        sets[f"demo clips ({len(paths)})"] = [list(iter_video_frames(p)) for p in paths]
    else:
        print(f"no clips under {args.root}: run `make demo` for the demo set")
    if FIXTURES.is_dir():
        clips = fixture_clips()
        sets[f"fixture faces moved ({len(clips)} clips)"] = clips
    else:
        print(f"{FIXTURES} is absent: the fixture set is skipped")
    if not sets:
        raise SystemExit("nothing to measure")
    landmarker = FaceLandmarker()
    continuous = mock.patch.object(_Track, "box", lambda track, shift: _moved(track.det_box, *shift))
    for name, clips in sets.items():
        every = [detect_every_frame(c, landmarker) for c in clips]
        for interval in args.intervals:
            grid = difference(clips, every, landmarker, interval)
            with continuous:
                cont = difference(clips, every, landmarker, interval)
            print(f"{name:32s} interval {interval:3d}: grid {grid[0]:.3f} px (worst clip {grid[1]:.3f}), "
                  f"continuous {cont[0]:.3f} px (worst {cont[1]:.3f})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

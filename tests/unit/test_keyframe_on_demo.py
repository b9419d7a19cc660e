"""Acceptance: key-frame detection on demo clips matches per-frame detection with far fewer detector calls."""

from __future__ import annotations

import numpy as np
import pytest

from davs_model.config import PreprocessConfig
from davs_model.demo.dataset import DemoConfig, make_demo_clip
from davs_model.face import FaceLandmarker
from davs_model.io.media import iter_video_frames
from davs_model.tracking import detect_every_frame, track_landmarks


@pytest.fixture(scope="module")
def demo_clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    cfg = DemoConfig(words=("MONEY", "PEOPLE"), voices=("en-us", "en+f3"), clips_per_word={"train": 2}, seed=7)
    clips = []
    for word in cfg.words:
        for index in (1, 2):
            path = make_demo_clip(cfg, word, "train", index, root / f"{word}_{index}.mp4")
            clips.append(list(iter_video_frames(path)))
    return clips


@pytest.mark.parametrize("interval", [12, PreprocessConfig().keyframe_interval])
def test_keyframe_tracking_matches_every_frame_detection(demo_clips, interval: int):
    landmarker = FaceLandmarker()
    diffs, calls_key, calls_all = [], 0, 0
    for frames in demo_clips:
        key = track_landmarks(frames, landmarker, keyframe_interval=interval)
        every = detect_every_frame(frames, landmarker)
        assert key.detected.all() and every.detected.all()
        diffs.append(np.linalg.norm(key.landmarks - every.landmarks, axis=-1).mean())
        calls_key += key.detector_calls
        calls_all += every.detector_calls
    print(f"interval {interval}: mean landmark difference {np.mean(diffs):.3f} px, calls {calls_key}/{calls_all}")
    # issue 7.1 asks <= 0.5 px. Since the tracked boxes move on the detector's grid: 0.16 px at interval 12 (0.27
    # before), 0.22 px at the default 30 here; the bounds are guards against a regression
    assert np.mean(diffs) <= (0.25 if interval == 12 else 0.35), diffs
    assert calls_all >= 4 * calls_key, (calls_all, calls_key)

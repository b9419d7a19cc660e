"""The embedded demo dataset: LRW-shaped clips made offline from espeak-ng and one photo.

Layout (as LRW): ``root/<WORD>/<split>/<WORD>_<NNNNN>.mp4`` plus ``<WORD>_<NNNNN>.txt``, with
NNNNN the 1-based running number per word and split. Each clip, like LRW:

- video: 29 frames at 25 fps (1.16 s), 256×256, H.264;
- audio: AAC, 16 kHz mono, 20,480 samples (1.28 s) starting with the video, so the DAVS LRW
  preprocessing (trim 600 samples from the end, bins 2..26 need ≥ 18,800) works unchanged;
- the spoken word centred on the middle of the video (0.58 s), over low background noise
  (never digital silence: the DAVS MFCC takes log without a floor);
- the mouth of the astronaut photo opens with the speech envelope (``face.py``).

"Speaker" k = voice ``voices[k]`` + face appearance variant k, chosen by the clip's number;
rate, pitch, loudness, noise and head motion are drawn from a generator seeded by
(seed, word, split, number), so a clip does not depend on which other clips are made.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "DemoConfig",
    "ClipSpec",
    "SPLITS",
    "AUDIO_SAMPLES",
    "demo_clip_paths",
    "clip_spec",
    "make_demo_clip",
    "make_demo_dataset",
    "synthesize_clip_audio",
]

SPLITS = ("train", "val", "test")
SAMPLE_RATE = 16000
AUDIO_SAMPLES = 20480  # 1.28 s, like LRW's audio tracks
NOISE_STD = 24.0  # int16 units, ≈ −63 dBFS: low room noise
_RATE_JITTER = 20  # ± words per minute around 150
_PITCH_JITTER = 10  # ± around 50
_ACTIVE_THRESHOLD = 0.02  # of the peak: where the word starts/ends (for centring and Duration)


def _default_clips() -> dict[str, int]:
    return {"train": 6, "val": 2, "test": 2}


@dataclass(frozen=True)
class DemoConfig:
    """What the demo dataset contains. Equal configs make identical clips (decoded content)."""

    words: tuple[str, ...] = ("ABOUT", "AFTER", "BECAUSE", "HOUSE", "MONEY", "PEOPLE")
    voices: tuple[str, ...] = ("en-us", "en+f3", "en-gb-x-rp+m3")
    clips_per_word: dict[str, int] = field(default_factory=_default_clips)
    seed: int = 0
    frames: int = 29
    fps: int = 25

    def __post_init__(self) -> None:
        words = tuple(str(w) for w in self.words)
        if not words:
            raise ValueError("DemoConfig.words is empty")
        for w in words:
            if not w.isalpha() or w != w.upper():
                raise ValueError(f"demo words must be uppercase letters (LRW style), got {w!r}")
        if len(set(words)) != len(words):
            raise ValueError(f"duplicate demo words: {words}")
        voices = tuple(str(v) for v in self.voices)
        if not voices:
            raise ValueError("DemoConfig.voices is empty")
        clips = {str(k): int(v) for k, v in dict(self.clips_per_word).items()}
        unknown = set(clips) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown splits in clips_per_word: {sorted(unknown)}")
        if any(v < 0 for v in clips.values()):
            raise ValueError(f"clips_per_word must be ≥ 0: {clips}")
        if any(v > 99999 for v in clips.values()):
            raise ValueError("at most 99999 clips per word and split (5-digit numbers)")
        if self.frames < 1 or self.fps < 1:
            raise ValueError("frames and fps must be ≥ 1")
        if self.frames / self.fps > AUDIO_SAMPLES / SAMPLE_RATE:
            raise ValueError(f"{self.frames} frames at {self.fps} fps exceed the 1.28 s audio")
        # Frozen: set the normalised values through object.__setattr__; the dict is a private copy
        # in split order.
        object.__setattr__(self, "words", words)
        object.__setattr__(self, "voices", voices)
        object.__setattr__(self, "clips_per_word", {s: clips[s] for s in SPLITS if s in clips})

    def __hash__(self) -> int:  # the dict field would make the generated hash fail
        return hash(
            (
                self.words,
                self.voices,
                tuple(self.clips_per_word.items()),
                self.seed,
                self.frames,
                self.fps,
            )
        )


def demo_clip_paths(cfg: DemoConfig, root: str | Path) -> list[Path]:
    """Every mp4 the dataset will hold, from the config alone (never touches the disk).

    Order: word (config order), split (train, val, test), number.
    """
    root = Path(root)
    out = []
    for word in cfg.words:
        for split, count in cfg.clips_per_word.items():
            for index in range(1, count + 1):
                out.append(_clip_path(root, word, split, index))
    return out


def _clip_path(root: Path, word: str, split: str, index: int) -> Path:
    return root / word / split / f"{word}_{index:05d}.mp4"


@dataclass(frozen=True)
class ClipSpec:
    """The random choices of one clip (all derived from the config and the clip's identity)."""

    word: str
    split: str
    index: int
    speaker: int
    voice: str
    rate_wpm: int
    pitch: int
    gain: float
    seed: int  # head motion and noise


def clip_spec(cfg: DemoConfig, word: str, split: str, index: int) -> ClipSpec:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")
    if index < 1:
        raise ValueError(f"clip numbers start at 1, got {index}")
    # A stable seed (not Python's salted hash()): the same on every machine and run.
    ss = np.random.SeedSequence([cfg.seed & 0xFFFFFFFF, zlib.crc32(word.encode()), SPLITS.index(split), index])
    rng = np.random.default_rng(ss)
    speaker = (index - 1) % len(cfg.voices)
    return ClipSpec(
        word=word,
        split=split,
        index=index,
        speaker=speaker,
        voice=cfg.voices[speaker],
        rate_wpm=150 + int(rng.integers(-_RATE_JITTER, _RATE_JITTER + 1)),
        pitch=50 + int(rng.integers(-_PITCH_JITTER, _PITCH_JITTER + 1)),
        gain=float(rng.uniform(0.75, 1.0)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def synthesize_clip_audio(cfg: DemoConfig, spec: ClipSpec) -> tuple[np.ndarray, float]:
    """The clip's 20,480-sample int16 track and the spoken word's duration in seconds.

    The active part of the word (above 2 % of its peak) is centred on the video's middle
    (frames / fps / 2); whatever would fall outside the track is cut with a short fade.
    """
    from .speech import synthesize

    speech, sr = synthesize(spec.word.lower(), spec.voice, spec.rate_wpm, spec.pitch)
    assert sr == SAMPLE_RATE
    x = speech.astype(np.float64) * spec.gain
    if x.size:
        active = np.nonzero(np.abs(x) > _ACTIVE_THRESHOLD * np.abs(x).max())[0]
        start, stop = int(active[0]), int(active[-1]) + 1
    else:
        start = stop = 0
    duration = (stop - start) / SAMPLE_RATE

    rng = np.random.default_rng([spec.seed, 0xA0D10])
    track = rng.normal(0.0, NOISE_STD, AUDIO_SAMPLES)
    centre = int(round(cfg.frames / cfg.fps / 2 * SAMPLE_RATE))
    offset = centre - (start + stop) // 2  # track index of speech sample 0
    lo, hi = max(0, -offset), min(x.size, AUDIO_SAMPLES - offset)
    if hi > lo:
        seg = x[lo:hi].copy()
        fade = min(80, seg.size // 2)  # 5 ms, only where the word is cut
        ramp = np.linspace(0.0, 1.0, fade, endpoint=False)
        if lo > 0 and fade:
            seg[:fade] *= ramp
        if hi < x.size and fade:
            seg[-fade:] *= ramp[::-1]
        track[offset + lo : offset + hi] += seg
    audio = np.clip(np.rint(track), -32768, 32767).astype(np.int16)
    return audio, duration


def make_demo_clip(cfg: DemoConfig, word: str, split: str, index: int, path: str | Path) -> Path:
    """Make one clip: ``path`` (mp4) and its LRW-style ``.txt`` beside it. Returns the mp4 path."""
    from ..io.writer import write_mp4
    from .face import mouth_opening, render_talking_face

    path = Path(path)
    spec = clip_spec(cfg, word, split, index)
    audio, duration = synthesize_clip_audio(cfg, spec)
    opening = mouth_opening(audio, SAMPLE_RATE, cfg.frames, cfg.fps)
    frames = render_talking_face(opening, seed=spec.seed, variant=spec.speaker)
    write_mp4(path, frames, fps=cfg.fps, audio=audio, sample_rate=SAMPLE_RATE)
    txt = path.with_suffix(".txt")
    tmp = txt.with_name(f".{txt.name}.{os.getpid()}.tmp")
    tmp.write_text(
        f"Text: {word}\n"
        f"Speaker: demo{spec.speaker} (espeak-ng {spec.voice}, astronaut photo)\n"
        f"Duration: {duration:.2f} seconds\n"
    )
    tmp.replace(txt)
    return path


def make_demo_dataset(cfg: DemoConfig, root: str | Path, progress: bool = True) -> list[Path]:
    """Make every clip of ``cfg`` under ``root`` (LRW layout); returns ``demo_clip_paths``."""
    from tqdm import tqdm

    root = Path(root)
    paths = demo_clip_paths(cfg, root)
    jobs = [
        (word, split, index)
        for word in cfg.words
        for split, count in cfg.clips_per_word.items()
        for index in range(1, count + 1)
    ]
    assert len(jobs) == len(paths)
    for (word, split, index), path in tqdm(
        list(zip(jobs, paths, strict=True)), desc="demo clips", unit="clip", disable=not progress
    ):
        make_demo_clip(cfg, word, split, index, path)
    return paths

"""The bad-input corpus (issue 6): every kind of bad or unusual input, generated (no committed binaries).

``make_corpus(root)`` writes ``root/videos`` (one ``folder`` source: the per-clip kinds mixed with good clips),
``root/shards`` (a corrupted shard) and ``root/configs`` (bad config files); it returns one :class:`Case` a kind.
Videos are the demo's talking astronaut face (``skimage.data.astronaut``) encoded with PyAV: 1.2 s at 25 fps unless
the kind says otherwise. Used by tests/workflow/test_bad_inputs.py and bench/reliability_table.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

SECONDS = 1.2  # every short clip: 30 frames at 25 fps
SIZE = 256  # demo frame side; the face is ~120 px wide in it
LONG_SECONDS = 60.0  # the long clips: 1500 frames at 176x176, and at 1280x720
NON_UTF8_NAME = b"caf\xe9 \xff.mp4"  # Latin-1 'é' and a byte that is never UTF-8


@dataclass(frozen=True)
class Case:
    """One kind of input. ``level``: clip (a file of the folder source), shard or config.

    ``status``/``reason``: the expected QC row (reason = the code before ':'); ``frames``: expected frame count of
    an ok clip (25 fps); for shard/config cases ``status`` is "error" and ``reason`` the expected exception type.
    """

    kind: str
    path: Path
    level: str
    status: str
    reason: str = ""
    frames: int | None = None

    @property
    def good(self) -> bool:
        return self.status == "ok"


# ----------------------------------------------------------------------------- media


def talking_frames(n: int, seed: int = 0, variant: int = 0) -> list[np.ndarray]:
    """``n`` demo frames (256x256 BGR) with a mouth that opens and closes (4 Hz)."""
    from davs_model.demo.face import render_talking_face

    opening = 0.5 - 0.5 * np.cos(2 * np.pi * 4 * np.arange(n) / 25)
    return render_talking_face(opening, seed=seed, variant=variant)


def speech_like(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """(channels, n) int16: an amplitude-modulated 180 Hz voice-like tone over noise (never digital silence)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    voice = 6000 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    chans = [voice * (1.0 - 0.3 * c) + rng.normal(0, 200, t.size) for c in range(channels)]
    return np.clip(np.rint(np.stack(chans)), -32768, 32767).astype(np.int16)


def write_video(
    path: Path | bytes,
    frames: list[np.ndarray] | None,
    fps: Fraction | int = 25,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    rotation: int | None = None,
) -> None:
    """H.264 (+ AAC) mp4 with PyAV. ``frames`` None: audio only; ``audio`` (channels, n) int16 or None: no sound;
    ``rotation``: display rotation (degrees counter-clockwise, as phones store it). Written under a plain name,
    then renamed (``path`` may be bytes that are not UTF-8)."""
    final = os.fsencode(path)
    tmp = os.path.join(os.path.dirname(final), b".writing.mp4")
    with av.open(os.fsdecode(tmp), "w", format="mp4") as out:
        v = a = None
        if frames is not None:
            v = out.add_stream("libx264", rate=Fraction(fps))
            v.height, v.width = frames[0].shape[:2]
            v.pix_fmt, v.options = "yuv420p", {"crf": "20", "preset": "veryfast", "threads": "1"}
            if rotation is not None:
                v.set_display_rotation(rotation)
        if audio is not None:
            layout = "stereo" if audio.shape[0] == 2 else "mono"
            a = out.add_stream("aac", rate=sample_rate, layout=layout)
        for i, img in enumerate(frames or []):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="bgr24")
            frame.pts = i
            out.mux(v.encode(frame))
        if v is not None:
            out.mux(v.encode(None))
        if a is not None:
            for s in range(0, audio.shape[1], 1024):
                chunk = np.ascontiguousarray(audio[:, s : s + 1024].reshape(1, -1))
                frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout=layout)
                frame.sample_rate, frame.pts = sample_rate, s
                out.mux(a.encode(frame))
            out.mux(a.encode(None))
    os.replace(tmp, final)


def _clip(path, frames, fps=25, seconds=None, rate=16000, channels=1, **kw) -> None:
    seconds = len(frames) / float(fps) if seconds is None else seconds
    write_video(path, frames, fps, speech_like(seconds, rate, channels), rate, **kw)


def _canvas(h: int, w: int) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (70, 90, 110)  # a plain wall
    return img


def _paste(dst: np.ndarray, src: np.ndarray, y: int, x: int) -> np.ndarray:
    dst[y : y + src.shape[0], x : x + src.shape[1]] = src
    return dst


def _n(seconds: float, fps: float) -> int:
    return int(round(seconds * fps))


# ----------------------------------------------------------------------------- the corpus


def _clip_cases(d: Path, long_seconds: float) -> list[Case]:
    """The per-clip kinds in folder ``d`` (a ``folder`` source), with the outcome each must get."""
    n = _n(SECONDS, 25)
    face = talking_frames(n)
    cases: list[Case] = []

    def add(kind: str, name: str | bytes, status: str, reason: str = "", frames: int | None = None) -> None:
        path = Path(os.fsdecode(os.path.join(bytes(d), os.fsencode(name))))
        cases.append(Case(kind, path, "clip", status, reason, frames))

    for i in range(3):  # good clips: appearance variants 0..2 (odd = mirrored)
        _clip(d / f"good_{i}.mp4", talking_frames(n, seed=i, variant=i))
        add("good clip", f"good_{i}.mp4", "ok", frames=n)
    data = (d / "good_0.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])  # moov at the end: the index is lost
    add("truncated mp4", "truncated.mp4", "rejected", "truncated")
    (d / "empty.mp4").write_bytes(b"")
    add("0-byte file", "empty.mp4", "rejected", "empty_file")
    (d / "not_a_video.mp4").write_text("This is a text file that someone named .mp4\n" * 20)
    add("non-video named .mp4", "not_a_video.mp4", "rejected", "unreadable")
    write_video(d / "no_audio.mp4", face)
    add("video with no audio", "no_audio.mp4", "rejected", "no_audio_stream")
    write_video(d / "audio_only.mp4", None, audio=speech_like(SECONDS, 16000))
    add("audio-only file", "audio_only.mp4", "rejected", "no_video_stream")
    _clip(d / "no_face.mp4", [_canvas(SIZE, SIZE)] * n)
    add("no face", "no_face.mp4", "rejected", "no_face")
    small = [cv2.resize(f, (160, 160), interpolation=cv2.INTER_AREA) for f in talking_frames(n, seed=5)]
    pairs = zip(face, small, strict=True)  # the larger face on the left, the smaller one 48 px lower on the right
    _clip(d / "two_faces.mp4", [_paste(_paste(_canvas(SIZE, 448), f, 0, 0), s, 48, 272) for f, s in pairs])
    add("two faces", "two_faces.mp4", "ok", frames=n)
    tiny = [cv2.resize(f, (44, 44), interpolation=cv2.INTER_AREA) for f in face]  # face ~20 px wide
    _clip(d / "tiny_face.mp4", [_paste(_canvas(SIZE, SIZE), t, 106, 106) for t in tiny])
    add("face below the detector's minimum size (~20 px)", "tiny_face.mp4", "rejected", "no_face")
    turned = [cv2.resize(f[:, 40:216], (64, SIZE), interpolation=cv2.INTER_AREA) for f in face]  # 120 -> 44 px
    _clip(d / "turned_head.mp4", [_paste(_canvas(SIZE, SIZE), t, 0, 96) for t in turned])
    add("turned head (face squeezed to 37 % width)", "turned_head.mp4", "rejected", "no_face")
    for fps, name in ((Fraction(30), "fps_30.mp4"), (Fraction(30000, 1001), "fps_29.97.mp4")):
        m = _n(SECONDS, fps)  # 36 frames either way: 1.2 s and 1.2012 s -> 30 frames at 25 fps
        _clip(d / name, talking_frames(m, seed=3), fps=fps)
        add(f"{float(fps):.5g} fps input", name, "ok", frames=_n(m / fps, 25))
    for rate in (44100, 48000):
        _clip(d / f"stereo_{rate}.mp4", face, rate=rate, channels=2)
        add(f"{rate / 1000:g} kHz stereo audio", f"stereo_{rate}.mp4", "ok", frames=n)
    _clip(d / "audio_shorter.mp4", face, seconds=0.6)
    add("audio shorter than video (0.6 of 1.2 s)", "audio_shorter.mp4", "ok", frames=n)
    # a phone: the sensor stores landscape frames, the display matrix turns them upright (portrait)
    portrait = [_paste(_canvas(320, SIZE), f, 32, 0) for f in face]
    _clip(d / "phone_rotated.mp4", [np.ascontiguousarray(np.rot90(p, k=1)) for p in portrait], rotation=-90)
    add("phone video with rotation metadata (90°)", "phone_rotated.mp4", "ok", frames=n)
    _clip(d / "four_frames.mp4", face[:4])
    add("clip under 5 frames (4)", "four_frames.mp4", "rejected", "too_few_frames")
    m = _n(long_seconds, 25)
    loop = [f[40:216, 40:216] for f in talking_frames(50, seed=7)]  # 176x176, face ~120 px
    _clip(d / "long.mp4", [loop[i % 50] for i in range(m)], seconds=long_seconds)
    add(f"long clip ({long_seconds:g} s, 176x176)", "long.mp4", "ok", frames=m)
    hd = _paste(_canvas(720, 1280), face[0], 232, 512)
    # 720p at 1 fps: cheap to write; decoded at 25 fps, 60 s are 4.4 GiB of frames (they stream)
    _clip(d / "long_hd.mp4", [hd] * int(long_seconds), fps=1)
    add(f"long HD clip ({long_seconds:g} s, 1280x720)", "long_hd.mp4", "ok", frames=m)
    quoted = 'it\'s a "quoted" name with spaces.mp4'
    _clip(d / quoted, talking_frames(n, seed=11, variant=1))
    add("file name with spaces and quotes", quoted, "ok", frames=n)
    _clip(os.path.join(bytes(d), NON_UTF8_NAME), talking_frames(n, seed=12))
    add("file name with non-UTF-8 bytes", NON_UTF8_NAME, "ok", frames=n)
    return cases


def corrupt_shard(path: Path, at: float = 0.5) -> Path:
    """A small valid shard (one synthetic clip) at ``path``, then 4 KiB at fraction ``at`` of it overwritten."""
    from davs_model.io.shards import ClipRecord, ShardWriter

    t, n = 12, 8
    rec = ClipRecord(
        clip_id="x/clip", source="x", split="train", label=-1, word="", speaker="",
        frames_bgr=np.random.default_rng(0).integers(0, 256, (t, 260, 260, 3), dtype=np.uint8),
        mfcc=np.zeros((n, 20, 12)), bin_numbers=np.arange(2, 2 + n), frame_index=np.arange(2, 2 + n),
        transforms=np.zeros((t, 2, 3)), detected=np.ones(t, bool), input_fps=25.0,
    )  # fmt: skip
    with ShardWriter(path, split="train", shard=0) as w:
        w.add(rec)
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(max(0, min(int(at * size) - 2048, size - 4096)))
        fh.write(b"\xff" * 4096)
    return path


def bad_configs(d: Path) -> list[Case]:
    """Work folders, each with a config.yaml that must fail validation with a message naming the key."""
    configs = {
        "config with an unknown key": ("unknown_key", "preprocess:\n  min_frame: 5\n"),
        "config with a wrong type": ("wrong_type", "preprocess:\n  keyframe_interval: every twelve\n"),
    }
    cases = []
    for kind, (name, text) in configs.items():
        (d / name).mkdir(parents=True, exist_ok=True)
        (d / name / "config.yaml").write_text(text)
        cases.append(Case(kind, d / name / "config.yaml", "config", "error", "WorkflowError"))
    return cases


def make_corpus(root: Path, long_seconds: float = LONG_SECONDS) -> list[Case]:
    """Write the whole corpus under ``root`` (see the module docstring); returns one Case per kind."""
    root = Path(root)
    for sub in ("videos", "shards", "configs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    cases = _clip_cases(root / "videos", long_seconds)
    shard = corrupt_shard(root / "shards" / "000.h5")
    cases.append(Case("corrupted shard", shard, "shard", "error", "ShardError"))
    return cases + bad_configs(root / "configs")

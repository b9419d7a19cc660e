"""Peak RSS of preprocessing one clip against the clip's length: is it flat in video length?

Makes long clips by looping a demo clip (its frames and its audio; ``--seconds``, default 1, 10 and 60), then
preprocesses each as ``build_shard`` does (``process_clip``, then ``ShardWriter.add`` into a JPEG shard: with the
streaming pipeline the warp and the JPEG encoding happen in ``add``) in a fresh subprocess under
``/usr/bin/time -v``, and prints the peak RSS and the growth per second of video. The 1 s clip is the baseline
(interpreter, imports, dlib model). The child imports ``davs_model`` from the working directory: run it from
another checkout (``--clip`` an absolute path) to measure that version.

    python bench/preprocess_memory.py [--clip resources/demo/lipread_mp4/ABOUT/train/ABOUT_00001.mp4]
                                      [--seconds 1 10 60] [--repeats 1]
"""

from __future__ import annotations

import argparse
import atexit
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = """
import sys
from davs_model.config import PreprocessConfig, SourceConfig
from davs_model.face import FaceLandmarker
from davs_model.io.shards import ShardReader, ShardWriter
from davs_model.preprocess.pipeline import process_clip
from davs_model.preprocess.sources import Clip
clip = Clip("bench/long", sys.argv[1], "bench", "folder", "train")
record, qc = process_clip(clip, SourceConfig(kind="folder", root="."), PreprocessConfig(), FaceLandmarker())
assert record is not None, (qc.reason, qc.message)
with ShardWriter(sys.argv[2], split="train", shard=0) as writer:
    writer.add(record)
print("frames", ShardReader(sys.argv[2]).meta(0)["n_frames"])
"""


def make_long_clip(src: Path, seconds: float, out: Path) -> Path:
    """``src`` looped to ``seconds`` (frames and audio), 25 fps, 16 kHz."""
    from davs_model.io.media import iter_video_frames, read_audio
    from davs_model.io.writer import write_mp4

    frames = list(iter_video_frames(src))
    audio = read_audio(src)[: int(round(len(frames) / 25 * 16000))]
    n = int(round(seconds * 25))
    looped = (frames[k % len(frames)] for k in range(n))
    reps = int(np.ceil(n / 25 * 16000 / len(audio))) + 1
    return write_mp4(out, looped, fps=25, audio=np.tile(audio, reps)[: int(round(n / 25 * 16000))])


def peak_rss_mb(path: Path) -> float:
    cmd = ["/usr/bin/time", "-v", sys.executable, "-c", CHILD, str(path), str(path.with_suffix(".h5"))]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr).group(1))
    return kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default="resources/demo/lipread_mp4/ABOUT/train/ABOUT_00001.mp4")
    parser.add_argument("--seconds", type=float, nargs="+", default=[1, 10, 60])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="davs-mem-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    peaks = {}
    for s in args.seconds:
        path = make_long_clip(Path(args.clip), s, tmp / f"{s:g}s.mp4")
        peaks[s] = statistics.median(peak_rss_mb(path) for _ in range(args.repeats))
        print(f"{s:6g} s clip: peak RSS {peaks[s]:7.1f} MB")
    lo, hi = min(peaks), max(peaks)
    print(f"growth: {(peaks[hi] - peaks[lo]) / (hi - lo):.1f} MB per second of video ({lo:g} s → {hi:g} s)")


if __name__ == "__main__":
    main()

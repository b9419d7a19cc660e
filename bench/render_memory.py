"""Peak memory of ``render()`` against the length of the driving audio (issue 7.5a: 10 min ≤ 1.2× 10 s).

Each length renders in a fresh subprocess (random weights, seed 0; the demo photo, full-frame paste-back, no
fine-tuning; white noise as speech) and reports its peak RSS (``ru_maxrss``) and wall time:

    python bench/render_memory.py [--seconds 10 600] [--size demo|paper] [--bf16]

The baseline is the shortest length, measured in the same run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import resource, sys, wave
import numpy as np, torch
from davs_model.model import DAVS
from davs_model.rendering.render import render
from davs_model.training.config import ModelConfig
seconds, out, size, width = float(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
bf16 = sys.argv[5] == "1"
x = (np.random.default_rng(0).standard_normal(int(seconds * 16000)) * 3000).astype(np.int16)
with wave.open(out + ".wav", "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000); w.writeframes(x.tobytes())
torch.manual_seed(0)
m = DAVS(ModelConfig(image_size=size, width=width), with_discriminators=False).eval()
r = render(m, "demo", out, audio=out + ".wav", finetune_steps=0, bf16=bf16)
print(r.n_frames, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

SIZES = {"demo": (64, 0.125), "paper": (256, 1.0)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, nargs="+", default=[10.0, 600.0])
    p.add_argument("--size", choices=sorted(SIZES), default="demo")
    p.add_argument("--bf16", action="store_true")
    args = p.parse_args()
    size, width = SIZES[args.size]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in sorted(args.seconds):
            out = str(Path(tmp) / f"r{seconds:g}.mp4")
            start = time.perf_counter()
            argv = [sys.executable, "-c", CHILD, str(seconds), out, str(size), str(width), str(int(args.bf16))]
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise SystemExit(f"render of {seconds:g} s failed:\n{proc.stderr[-3000:]}")
            frames, kib = (int(v) for v in proc.stdout.split()[-2:])
            rows.append((seconds, frames, kib / 1024, time.perf_counter() - start))
    base = rows[0][2]
    print(f"size {args.size} ({size} px, width {width}), bf16 {args.bf16}, full frame (demo photo)")
    print("| audio | frames | peak RSS | vs shortest | wall |\n|---:|---:|---:|---:|---:|")
    for seconds, frames, mib, wall in rows:
        print(f"| {seconds:g} s | {frames} | {mib:.0f} MiB | {mib / base:.2f}× | {wall:.0f} s |")


if __name__ == "__main__":
    main()

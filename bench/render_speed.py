"""Audio-driven render speed on the CPU: ours vs the original's per-item loop, same weights, same inputs, same run.

- original: ``test_all.py`` audio mode (spec §5; ``Test_Audio_Model.test`` + ``save_images_test``), batch 1,
  fp32, one item at a time: E_p(A) recomputed (its ``test()`` forward does), E_a on the item's 20×12 MFCC window,
  G(pid, 1.5·w), ``tensor2im`` and one PNG each for ``real_A`` and ``fake_audio_B_0`` (PIL, as its
  ``util.save_image``). Kind to the original: gradients off (its 0.2-era Variables recorded the graph), and the
  per-item data loading (JPEG decode, .bin reads, a new Adam in ``set_test_input``) is left out: it gets the
  aligned A and the MFCC windows ready in memory.
- ours: :func:`davs_model.rendering.render.render` end to end (dlib alignment of the photo, MFCC from the wav,
  E_p(A) once, batches over time, H.264 + AAC mp4), crop-only (``paste_back=False``, like for like with the
  original's crops) and full frame (the default); with ``--bf16`` also both in bfloat16 (``davs render --bf16``).

No fine-tuning on either side (``finetune_steps=0``; it is the same 5 steps in both). Runs are interleaved so that
both paths see the same machine load; the figure is the median of ``--repeats`` runs.

    python bench/render_speed.py [--size paper|demo|both] [--frames-paper 24] [--frames-demo 250] [--repeats 5]
                                 [--threads N] [--bf16]

Weights are random (seed 0): the speed does not depend on them. Identity: scikit-image's astronaut photo (512²).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from davs_model.audio import mfcc_bins
from davs_model.face import FaceLandmarker
from davs_model.model import AUDIO_WID_SCALE, DAVS
from davs_model.rendering import inputs
from davs_model.rendering.render import render
from davs_model.training.config import ModelConfig

SIZES = {"paper": (256, 1.0), "demo": (64, 0.125)}


def speech_for(n_frames: int) -> np.ndarray:
    """The demo sentence, repeated and cut so that it gives exactly ``n_frames`` MFCC windows."""
    one = inputs.load_speech("demo")
    need = (n_frames + 8) * inputs.SAMPLES_PER_FRAME
    x = np.tile(one, need // len(one) + 1)
    length = need
    while inputs.count_bins(x[:length]) > n_frames:
        length -= 16
    while inputs.count_bins(x[:length]) < n_frames:
        length += 1
    return x[:length]


def original_loop(model: DAVS, a: torch.Tensor, bins: np.ndarray, out: Path) -> None:
    """The original's test loop (see the module docstring), one PNG pair per item."""
    with torch.no_grad():
        for i, window in enumerate(bins):
            real_a = a[None]
            pid = model.encode_identity(real_a)  # test(): self.ID_encoder.forward(self.real_A), every item
            w = model.encode_audio(torch.from_numpy(window)[None, None])  # (1, 1, 20, 12) → (1, 1, wid)
            fake = model.decode(pid, w[:, 0] * AUDIO_WID_SCALE)
            for label, img in (("real_A", real_a), ("fake_audio_B_0", fake)):
                arr = (np.transpose(img[0].cpu().float().numpy(), (1, 2, 0)) * 255.0).astype(np.uint8)
                Image.fromarray(arr).save(out / f"test_sample1_{label}_{i}.png")


def bench_size(
    name: str, n_frames: int, repeats: int, landmarker: FaceLandmarker, tmp: Path, bf16: bool = False
) -> dict:
    size, width = SIZES[name]
    torch.manual_seed(0)
    model = DAVS(ModelConfig(image_size=size, width=width), with_discriminators=False).eval()
    speech = speech_for(n_frames)
    wav = tmp / f"speech_{name}.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(inputs.SAMPLE_RATE)
        w.writeframes(speech.tobytes())
    photo = tmp / "astronaut.png"
    if not photo.exists():
        import skimage.data

        Image.fromarray(skimage.data.astronaut()).save(photo)
    a = inputs.to_model_size(inputs.load_identity(photo, landmarker), size)
    bins = mfcc_bins(speech, inputs.SAMPLE_RATE).astype(np.float32)
    assert len(bins) == n_frames
    pngs = tmp / f"png_{name}"
    pngs.mkdir(exist_ok=True)

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def ours(paste_back: bool, bf16: bool = False) -> float:
        kw = dict(audio=wav, finetune_steps=0, landmarker=landmarker, paste_back=paste_back, bf16=bf16)
        return timed(lambda: render(model, photo, tmp / f"ours_{name}_{paste_back}.mp4", **kw))

    paths = {
        "original": lambda: timed(lambda: original_loop(model, a, bins, pngs)),
        "ours crop-only": lambda: ours(False),
        "ours full frame": lambda: ours(True),
    }
    if bf16:
        paths["ours crop-only bf16"] = lambda: ours(False, bf16=True)
        paths["ours full frame bf16"] = lambda: ours(True, bf16=True)
    ours(False)  # warm-up (first-call allocations, dlib model load)
    times: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(repeats):
        for k, run in paths.items():
            times[k].append(run())
    fps = {k: n_frames / statistics.median(v) for k, v in times.items()}
    print(f"{name} ({size} px, width {width}), {n_frames} frames, median of {repeats}:")
    for k, v in fps.items():
        print(f"  {k:20s} {v:8.2f} frames/s  {v / fps['original']:5.2f}x")
    return fps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["paper", "demo", "both"], default="both")
    parser.add_argument("--frames-paper", type=int, default=24)
    parser.add_argument("--frames-demo", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads for both paths (default: torch's choice)")
    parser.add_argument("--bf16", action="store_true", help="also time ours with bfloat16 generation")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = platform.processor() or platform.machine()
    print(f"{cpu}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    landmarker = FaceLandmarker(upsample=1)
    with tempfile.TemporaryDirectory() as d:
        for name in ("paper", "demo") if args.size == "both" else (args.size,):
            n = args.frames_paper if name == "paper" else args.frames_demo
            bench_size(name, n, args.repeats, landmarker, Path(d), bf16=args.bf16)


if __name__ == "__main__":
    main()

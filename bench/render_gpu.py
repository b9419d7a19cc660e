"""Audio-driven render speed on a GPU (issue 7.3 / issue 5): frames/s, model only and end to end.

- original (the baseline): fp32 eager, batch 1, the trained G unfolded, E_p(A) recomputed for every frame as the
  original's ``test()`` does: per frame E_p(A), E_a(20×12 MFCC window), G(pid, 1.5·w), frame to uint8.
- model only (ours): what ``davs render --bf16`` runs per batch of output frames, from the renderer's own pieces:
  E_p(A) once, then per batch of B consecutive MFCC windows E_a, and G's folded channels-last inference copy
  (``rendering.inference.inference_decoder`` / ``decode_with``) on 1.5·w, frames to uint8, for each B of
  ``--batch-sizes`` and each ``--precision`` (bf16: autocast and bf16 weights, as ``--bf16``). Frames stay on the
  device in both (no host copy): this is the model's rate. Once per precision, its frames are compared with the
  unfolded G's plain fp32 forward (grey-level differences in the JSON; random weights: a sanity check only).
- end to end: ``rendering.render.render`` (astronaut photo, ``--seconds`` of the demo sentence tiled, fine-tuning
  as ``davs render``, MFCC, paste-back into the photo, H.264 + AAC mp4) with ``device``, per
  ``--e2e-precision`` and ``--chunk-frames`` (0: render's default).

Timing: device synchronised around each timed batch (model only: median of ``--repeats`` batches after
``--warmup``; baseline: ``--baseline-frames`` frames a run, median of 3 runs; end to end: median of
``--e2e-repeats`` renders after a short warm-up render). TFLOP/s from ``FlopCounterMode`` counts (convolutions and
matrix products); MFU against the dense datasheet peak (``train_speed.PEAKS``). Weights are random (seed 0).

    python bench/render_gpu.py [--size paper|tiny] [--batch-sizes 32 64 128 256] [--precision bf16 fp32]
                               [--seconds 60] [--chunk-frames 0 128] [--json PATH] [--md PATH]
    python bench/render_gpu.py --prepare DIR   # here: DIR/astronaut_landmarks.npy and DIR/demo_speech.wav

Where dlib's 100 MB landmark model or espeak-ng cannot be carried (the GPU machine), ``--landmarks`` gives the
photo's 68 landmarks, computed here by dlib (``--prepare``), and ``--speech`` the demo sentence as a wav.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_speed as ts  # noqa: E402  (its device helpers, sizes and peaks)

from davs_model.model import AUDIO_WID_SCALE, DAVS  # noqa: E402
from davs_model.rendering.inference import decode_with, inference_decoder  # noqa: E402
from davs_model.training.loop import resolve_device  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
SAMPLE_RATE = 16000


class FixedLandmarker:
    """Stands in for ``face.FaceLandmarker`` where its model file is missing: one face with the given landmarks."""

    def __init__(self, points: np.ndarray) -> None:
        self.points = np.asarray(points, dtype=np.float64)

    def detect(self, image_bgr: np.ndarray, expect_width: float | None = None) -> list[None]:
        return [None]

    def landmarks(self, image_bgr: np.ndarray, rect: None) -> np.ndarray:
        return self.points


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    return (frames.clamp(0, 1) * 255).round().byte()


def timed(fn, device: torch.device) -> float:
    ts.synchronize(device)
    start = time.perf_counter()
    fn()
    ts.synchronize(device)
    return time.perf_counter() - start


def make_model(size: str, device: torch.device) -> DAVS:
    torch.manual_seed(0)
    return DAVS(ts.SIZES[size], with_discriminators=False).to(device).eval()


@torch.inference_mode()
def original_fps(model: DAVS, device: torch.device, n_frames: int) -> dict:
    """The original's loop: fp32, batch 1, unfolded G, E_p(A) for every frame."""
    g = torch.Generator(device).manual_seed(1)
    s = model.config.image_size
    a = torch.rand(1, 3, s, s, generator=g, device=device)
    windows = 5 * torch.randn(n_frames, 1, 1, 20, 12, generator=g, device=device)

    def loop() -> None:
        for w in windows:
            to_uint8(model.decode(model.encode_identity(a), model.encode_audio(w)[:, 0] * AUDIO_WID_SCALE))

    loop()  # warm-up
    seconds = statistics.median(timed(loop, device) for _ in range(3))
    with FlopCounterMode(display=False) as counter:
        to_uint8(model.decode(model.encode_identity(a), model.encode_audio(windows[0])[:, 0] * AUDIO_WID_SCALE))
    return {"frames": n_frames, "fps": n_frames / seconds, "flops_per_frame": counter.get_total_flops()}


@torch.inference_mode()
def model_only(model: DAVS, device: torch.device, precision: str, batch_sizes, repeats: int, warmup: int):
    """Rows of frames/s per batch size: the renderer's E_p once, E_a + G's inference copy per batch."""
    dtype, bf16 = DTYPES[precision], precision == "bf16"
    model.ID_encoder.to(memory_format=torch.channels_last)  # as render() does in audio mode; G: in its copy
    g = inference_decoder(model.Decoder, dtype)
    gen = torch.Generator(device).manual_seed(2)
    s = model.config.image_size
    a = torch.rand(1, 3, s, s, generator=gen, device=device).contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        pid = [p.to(dtype) for p in model.encode_identity(a)]
    rows = []
    for b in batch_sizes:
        windows = 5 * torch.randn(1, b, 20, 12, generator=gen, device=device)

        def step(windows=windows, b=b) -> torch.Tensor:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                wid = model.encode_audio(windows)[0]
                return to_uint8(decode_with(g, [p.expand(b, *p.shape[1:]) for p in pid], wid * AUDIO_WID_SCALE))

        try:
            ts.reset_peak_memory(device)
            for _ in range(warmup):
                step()
            seconds = statistics.median(timed(step, device) for _ in range(repeats))
        except torch.OutOfMemoryError as exc:
            rows.append({"precision": precision, "batch": b, "error": ts.error_text(exc)})
            continue
        with FlopCounterMode(display=False) as counter:
            step()
        rows.append({
            "precision": precision, "batch": b, "median_s": seconds, "fps": b / seconds,
            "flops_per_frame": counter.get_total_flops() / b, "peak_memory_gib": ts.peak_memory_gib(device),
        })  # fmt: skip
        if len(rows) == 1:  # once: the fast path against the unfolded G's plain fp32 forward, in grey levels
            pid32 = [p.expand(b, *p.shape[1:]) for p in model.encode_identity(a)]
            ref = to_uint8(model.decode(pid32, model.encode_audio(windows)[0] * AUDIO_WID_SCALE))
            diff = (step().int() - ref.int()).abs().float()
            rows[0] |= {"max_grey_diff_vs_fp32": diff.max().item(), "mean_grey_diff_vs_fp32": diff.mean().item()}
    return rows


def tiled_speech(source: str, seconds: float) -> np.ndarray:
    from davs_model.rendering import inputs

    one = inputs.load_speech(source)
    n = int(seconds * SAMPLE_RATE)
    return np.tile(one, n // len(one) + 1)[:n]


def write_wav(path: Path, samples: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(np.asarray(samples, np.int16).tobytes())
    return path


def make_landmarker(landmarks: str | None):
    """dlib's FaceLandmarker where its model file is installed, else the fixed landmarks of ``landmarks``."""
    from davs_model.face import FaceLandmarker, predictor_path

    try:
        predictor_path()
    except (FileNotFoundError, ImportError):
        if not landmarks:
            raise
        return FixedLandmarker(np.load(landmarks)), f"fixed ({landmarks})"
    return FaceLandmarker(upsample=1), "dlib"


def end_to_end(model: DAVS, device: torch.device, args: argparse.Namespace, tmp: Path) -> list[dict]:
    """Rows of ``render()`` frames/s on ``args.seconds`` of speech, per precision and chunk size."""
    from davs_model.rendering.render import render

    landmarker, kind = make_landmarker(args.landmarks)
    speech = tiled_speech(args.speech, args.seconds)
    wav, short = write_wav(tmp / "speech.wav", speech), write_wav(tmp / "short.wav", speech[: 2 * SAMPLE_RATE])
    rows = []
    for precision in args.e2e_precision:
        for chunk in args.chunk_frames:
            kw = dict(device=device, bf16=precision == "bf16", chunk_frames=chunk or None, landmarker=landmarker)
            try:
                render(model, "demo", tmp / "warm.mp4", audio=short, **kw)  # warm-up
                results = [
                    render(model, "demo", tmp / "out.mp4", audio=wav, **kw) for _ in range(args.e2e_repeats)
                ]
            except Exception as exc:  # keep the other rows
                rows.append({"precision": precision, "chunk_frames": chunk, "error": ts.error_text(exc)})
                continue
            seconds = statistics.median(r.seconds for r in results)
            rows.append({
                "precision": precision, "chunk_frames": chunk or "default", "frames": results[0].n_frames,
                "median_s": seconds, "fps": results[0].n_frames / seconds, "landmarker": kind,
                "finetune_steps": len(results[0].finetune_losses),
            })  # fmt: skip
    return rows


def markdown(report: dict) -> str:
    base = report["original"]
    peak = report["peak"]
    lines = [
        f"{report['device']}, torch {report['torch']}, {report['size']} size; weights random (seed 0)",
        "",
        "| path | precision | batch | frames/s | × original | TFLOP/s | MFU | peak GiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        f"| original (E_p per frame, unfolded G) | fp32 | 1 | {base['fps']:.1f} | 1.00 | "
        f"{base['fps'] * base['flops_per_frame'] / 1e12:.3g} | | |",
    ]
    for r in report["model_only"]:
        if "error" in r:
            lines.append(f"| model only | {r['precision']} | {r['batch']} | {r['error']} | | | | |")
            continue
        tflops = r["fps"] * r["flops_per_frame"] / 1e12
        key = "bf16_tflops" if r["precision"] == "bf16" else "tf32_tflops"
        mfu = f"{100 * tflops / peak[key]:.1f} %" if peak else "n/a"
        lines.append(
            f"| model only | {r['precision']} | {r['batch']} | {r['fps']:.1f} | {r['fps'] / base['fps']:.2f} | "
            f"{tflops:.3g} | {mfu} | {ts.fmt(r['peak_memory_gib'], '.2f')} |"
        )
    for r in report["end_to_end"]:
        text = r["error"] if "error" in r else f"{r['fps']:.1f} | {r['fps'] / base['fps']:.2f} | | |"
        lines.append(
            f"| end to end, {report['seconds']:g} s of speech | {r['precision']} | {r['chunk_frames']} | {text} |"
        )
    if peak:
        lines.append(f"\nMFU: of the {peak['name']} dense peak (bf16 rows: BF16, fp32 rows: TF32).")
    return "\n".join(lines) + "\n"


def prepare(folder: Path) -> None:
    """What the GPU machine cannot make: the astronaut's 68 dlib landmarks and the demo sentence (espeak-ng)."""
    import skimage.data

    from davs_model.face import FaceLandmarker
    from davs_model.rendering import inputs
    from davs_model.rendering.pasteback import cap_size

    folder.mkdir(parents=True, exist_ok=True)
    photo = cap_size(np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1]))  # inputs.load_identity_frame's
    lm = FaceLandmarker(upsample=1)
    np.save(folder / "astronaut_landmarks.npy", lm.landmarks(photo, lm.detect(photo)[0]))
    write_wav(folder / "demo_speech.wav", inputs.load_speech("demo"))
    print(f"wrote {folder}/astronaut_landmarks.npy and {folder}/demo_speech.wav")


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(ts.SIZES), default="paper")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--precision", nargs="+", choices=sorted(DTYPES), default=["bf16"])
    parser.add_argument("--repeats", type=int, default=20, help="timed batches per batch size")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--baseline-frames", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0, help="speech for the end-to-end render (0: skip)")
    parser.add_argument(
        "--chunk-frames", type=int, nargs="+", default=[0], help="render's chunk_frames (0: default)"
    )
    parser.add_argument("--e2e-repeats", type=int, default=2)
    parser.add_argument("--e2e-precision", nargs="+", choices=sorted(DTYPES), default=["bf16"])
    parser.add_argument("--speech", default="demo", help="'demo' (espeak-ng) or an audio file")
    parser.add_argument("--landmarks", help="the astronaut's (68, 2) landmarks (.npy), if dlib's model is missing")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json")
    parser.add_argument("--md")
    parser.add_argument(
        "--prepare", metavar="DIR", help="write the landmarks and the demo speech to DIR, then stop"
    )
    args = parser.parse_args(argv)
    if args.prepare:
        prepare(Path(args.prepare))
        return None
    device = resolve_device(args.device)
    name = ts.device_name(device)
    report = {
        "device": name, "torch": torch.__version__, "size": args.size, "model": ts.SIZES[args.size].to_dict(),
        "peak": ts.device_peak(name), "seconds": args.seconds,
    }  # fmt: skip
    report["original"] = original_fps(make_model(args.size, device), device, args.baseline_frames)
    report["model_only"], report["end_to_end"] = [], []
    ts.save(report, args, markdown)  # after every phase: a run stopped by a time limit keeps what it measured
    for precision in args.precision:
        model = make_model(args.size, device)
        report["model_only"] += model_only(model, device, precision, args.batch_sizes, args.repeats, args.warmup)
        ts.save(report, args, markdown)
    if args.seconds > 0:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                report["end_to_end"] = end_to_end(make_model(args.size, device), device, args, Path(tmp))
            except (ImportError, FileNotFoundError) as exc:  # av / dlib / landmark model missing: say which
                report["end_to_end"] = [{"precision": "-", "chunk_frames": "-", "error": ts.error_text(exc)}]
    print(ts.save(report, args, markdown))
    return report


if __name__ == "__main__":
    main()

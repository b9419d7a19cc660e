"""The ``davs`` command line: ``davs mfcc``, ``davs align`` and ``davs render`` (more stages add their own)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_mfcc(args: argparse.Namespace) -> int:
    import numpy as np

    from davs_model.audio import mfcc_bins, write_bins
    from davs_model.io.media import MediaError, probe, read_audio

    try:
        max_duration = None
        if not args.keep_full_audio:
            try:
                info = probe(args.input)
                if info.n_frames and info.fps:
                    max_duration = info.n_frames / info.fps  # AAC decodes longer than the video: cut the tail
            except MediaError as err:
                if err.reason != "no_video_stream":  # an audio file: nothing to cut to
                    raise
        samples = read_audio(args.input, sample_rate=16000, max_duration_s=max_duration)
    except MediaError as err:
        print(f"davs mfcc: {err}", file=sys.stderr)
        return 2
    bins = mfcc_bins(samples, 16000, trim_end=args.trim_end)
    if len(bins) == 0:
        print(
            f"davs mfcc: {args.input}: {len(samples) / 16000:.3f} s of audio is too short for one "
            "MFCC window (the first bin needs ≥ 0.2 s)",
            file=sys.stderr,
        )
        return 2
    if not np.isfinite(bins).all():
        print(
            "davs mfcc: warning: some values are -inf (digital silence); the original's loader rejects such clips",
            file=sys.stderr,
        )
    paths = write_bins(bins, args.outdir)
    print(f"wrote {len(paths)} windows: {paths[0].name} … {paths[-1].name} in {args.outdir}")
    return 0


def _read_image(path: str):
    import cv2
    import numpy as np

    data = np.fromfile(path, dtype=np.uint8)  # works with any file name, unlike cv2.imread
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ValueError(f"{path} is not an image OpenCV can read (PNG, JPEG, PPM, …)")
    return image


def _cmd_align(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from davs_model.align import align_face
    from davs_model.face import FaceLandmarker, anchors_from_68

    try:
        image = _read_image(args.image)
    except (OSError, ValueError) as err:
        print(f"davs align: {err}", file=sys.stderr)
        return 2
    landmarker = FaceLandmarker(upsample=args.upsample)
    faces = landmarker.detect(image)
    if not faces:
        print(
            f"davs align: no face found in {args.image}; try --upsample 1 for small faces "
            "(the detector finds frontal faces of about 80 px and larger at --upsample 0)",
            file=sys.stderr,
        )
        return 1
    points = landmarker.landmarks(image, faces[0])
    aligned, matrix = align_face(image, anchors_from_68(points), duplicate_eyes=args.duplicate_eyes)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(out.suffix or ".png", aligned)
    if not ok:
        print(f"davs align: cannot encode {out.suffix!r}; use .png or .jpg", file=sys.stderr)
        return 2
    buf.tofile(str(out))
    if args.matrix:
        np.savetxt(args.matrix, matrix)
    extra = f" ({len(faces)} faces; the largest was used)" if len(faces) > 1 else ""
    print(f"wrote {out} (260x260){extra}")
    return 0


DEFAULT_CHECKPOINT = "results/train/main/model.safetensors"


def _cmd_render(args: argparse.Namespace) -> int:
    import logging

    from davs_model.io.media import MediaError
    from davs_model.rendering.inputs import NoFaceError
    from davs_model.rendering.render import ModelNotFoundError, has_fast_bf16, pick_device, render

    if args.audio is None and args.video is None:
        print("davs render: give --audio (speech) and/or --driving-video (a driving video)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = render(
            args.checkpoint,
            args.face,
            args.out,
            audio=args.audio,
            video=args.video,
            side_by_side=args.side_by_side,
            grid=args.grid,
            gif=args.gif,
            finetune_steps=0 if args.no_finetune else args.finetune_steps,
            wid_scale=args.wid_scale,
            device=args.device,
            paste_back=not args.crop_only,
            bf16=args.bf16,
        )
    except (ModelNotFoundError, NoFaceError, MediaError, FileNotFoundError, ValueError) as err:
        print(f"davs render: {err}", file=sys.stderr)
        return 1 if isinstance(err, NoFaceError) else 2
    extras = [p for p in (args.side_by_side, args.grid, args.gif) if p]
    print(
        f"wrote {args.out} ({result.n_frames} frames, {result.mode}-driven, {result.fps:.1f} frames/s)"
        + (f" and {', '.join(extras)}" if extras else "")
    )
    if not args.bf16 and has_fast_bf16(pick_device(args.device)):
        print("tip: this machine computes bfloat16 natively: --bf16 renders ~2x faster (within ~1 grey level)")
    return 0


def _cmd_convert_original(args: argparse.Namespace) -> int:
    import json

    from davs_model.compat import CheckpointError, load_original_checkpoint, read_original_checkpoint
    from davs_model.training.checkpoint import save_model

    try:
        model = load_original_checkpoint(args.input)
        step = read_original_checkpoint(args.input).get("step", 0)
    except CheckpointError as err:
        print(f"davs convert-original: {err}", file=sys.stderr)
        return 2
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    weights = save_model(model, out / "model.safetensors", step=int(step) if isinstance(step, int) else 0)
    config = {"model_config": model.config.to_dict(), "source": str(args.input), "weights": weights.name}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"wrote {weights} and {out / 'config.json'} (load with davs_model.training.checkpoint.load_model)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="davs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "mfcc",
        help="audio or video file → DAVS MFCC windows 2.bin … K.bin (replaces the original MATLAB step)",
    )
    p.add_argument("input", help="any audio or video file FFmpeg can read")
    p.add_argument("outdir", help="folder for the .bin files (240 little-endian float64 each)")
    p.add_argument(
        "--trim-end",
        type=int,
        default=0,
        help="samples cut from the end first (600 = LRW's save_mfccs.m; default 0 = savemfcc.m)",
    )
    p.add_argument(
        "--keep-full-audio",
        action="store_true",
        help="do not cut the audio to the video's duration (by default a video's AAC tail is cut)",
    )
    p.set_defaults(func=_cmd_mfcc)

    p = sub.add_parser("align", help="photo → 260×260 face aligned as DAVS (dlib 68 landmarks)")
    p.add_argument("image")
    p.add_argument("out", help="output image (.png or .jpg)")
    p.add_argument("--upsample", type=int, default=1, help="detector upsampling (1 finds faces ≥ ~40 px)")
    p.add_argument(
        "--duplicate-eyes",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="fit with the eyes entered twice (the original's LRW preprocessing); "
        "default: 3 points as the original's test-time alignment",
    )
    p.add_argument("--matrix", help="also save the 2×3 similarity matrix as text")
    p.set_defaults(func=_cmd_align)

    p = sub.add_parser(
        "render",
        help="photo + speech (or a driving video) → talking-face mp4 (H.264 + AAC, 25 fps)",
        description="Render a talking face: the identity photo's mouth follows the speech (or the driving video's "
        "lips), pasted back into the whole photo. Frame i shows time (i + 2)/25 s of the input, so the soundtrack "
        "starts 80 ms into it.",
    )
    p.add_argument("--face", required=True, help="identity: any photo with a frontal face, a video, or 'demo'")
    p.add_argument("--audio", help="driving speech: any audio/video file FFmpeg reads, or 'demo'")
    p.add_argument(
        "--driving-video",
        dest="video",
        metavar="VIDEO",
        help="driving video: its lips drive the mouth (its sound is used unless --audio)",
    )
    p.add_argument("--video", dest="video", help=argparse.SUPPRESS)  # the former name, kept as an alias
    p.add_argument(
        "-o",
        "--out",
        required=True,
        help="output mp4: the whole photo (longer side ≤ 1280 px) with the generated face blended in",
    )
    p.add_argument(
        "--crop-only",
        action="store_true",
        help="write the aligned face crop (model size) instead of the whole photo",
    )
    p.add_argument(
        "--checkpoint",
        default=DEFAULT_CHECKPOINT,
        help=f"model file: ours (.safetensors) or the authors' .pth.tar (default {DEFAULT_CHECKPOINT})",
    )
    p.add_argument("--no-finetune", action="store_true", help="skip the 5-step test-time fine-tuning on the photo")
    p.add_argument("--finetune-steps", type=int, default=5, help="test-time fine-tuning steps (default 5)")
    p.add_argument(
        "--wid-scale", type=float, help="scale of the wid feature (default: 1.5 audio-driven, 0.8 video-driven)"
    )
    p.add_argument("--side-by-side", help="also write identity | driving | generated as this mp4")
    p.add_argument("--grid", help="also write a PNG grid of stills")
    p.add_argument("--gif", help="also write a GIF (no sound)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, …")
    p.add_argument(
        "--bf16",
        action="store_true",
        help="generate in bfloat16: ~2x faster on CPUs with AVX512-BF16/AMX and on recent GPUs (slower on "
        "others); output within about one grey level",
    )
    p.set_defaults(func=_cmd_render)
    p = sub.add_parser(
        "convert-original",
        help="the authors' .pth.tar → model.safetensors + config.json (read safely, keys matched strictly)",
    )
    p.add_argument("input", help="e.g. 101_DAVS_checkpoint.pth.tar")
    p.add_argument("outdir")
    p.set_defaults(func=_cmd_convert_original)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

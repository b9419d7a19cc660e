"""Render one identity photo driven by speech (audio mode) or by a video's lips (video mode), as the original's
``test_all.py`` does, but streamed into an mp4 with its sound in place.

Per output frame i: x̂_i = G(E_p(A), s·w_i) with w_i = E_a(MFCC bin i + 2) (audio mode, s = 1.5) or
w_i = E_v(aligned driving frame i + 2) (video mode, s = 0.8), after the 5-step fine-tuning of E_p and G on A
(:mod:`davs_model.rendering.finetune`). Frame i shows time (i + 2)/25 s of the driving media, so the soundtrack
starts 80 ms into the input. E_p(A) is encoded once (the original recomputed it for every frame); frames are
generated ``chunk_frames`` at a time, pasted back into the whole photo (:mod:`.pasteback`) and encoded at once:
memory stays flat in the audio length.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from davs_model.model import AUDIO_WID_SCALE, DAVS, VIDEO_WID_SCALE
from davs_model.networks.decoder import Decoder
from davs_model.rendering import inputs
from davs_model.rendering.config import DEFAULT_FINETUNE_STEPS
from davs_model.rendering.finetune import finetune_identity
from davs_model.rendering.inference import decode_with, inference_decoder
from davs_model.rendering.outputs import RenderOutputs, waveform_panel
from davs_model.rendering.pasteback import PasteBack

log = logging.getLogger(__name__)

ORIGINAL_SUFFIXES = (".pth.tar", ".pth", ".tar", ".pt")
FINETUNE_ITEMS = 5  # the original fine-tunes on its first 5 items


class ModelNotFoundError(FileNotFoundError):
    """The model file to render or evaluate with does not exist."""


@dataclass(frozen=True)
class RenderResult:
    """What a render produced: frames, mode, fine-tuning losses and speed."""

    n_frames: int
    mode: str
    finetune_losses: tuple[float, ...]
    seconds: float

    @property
    def fps(self) -> float:
        return self.n_frames / self.seconds if self.seconds > 0 else float("inf")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/"auto": CUDA when available, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def has_fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (CUDA with bf16; CPUs with AVX512-BF16 or AMX), where
    ``bf16=True`` is about 2× faster; elsewhere it is emulated and slower."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's (private) capability probes
    return device.type == "cpu" and any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def load_model_file(path: str | Path, device: str | torch.device | None = None) -> DAVS:
    """Our model file (``results/train/main/model.safetensors``, via ``training.checkpoint.load_model``) or the
    authors' ``.pth.tar`` (via ``compat.load_original_checkpoint``), in eval mode on ``device``."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(
            f"{path}: model file not found. Train one first (`snakemake train`, which writes "
            "results/train/main/model.safetensors) or pass another with --checkpoint PATH (ours, or the authors' "
            "101_DAVS_checkpoint.pth.tar)."
        )
    if path.name.endswith(ORIGINAL_SUFFIXES):
        from davs_model.compat import load_original_checkpoint

        model = load_original_checkpoint(path)
    else:
        from davs_model.training.checkpoint import load_model

        model = load_model(path)
    return model.to(pick_device(device)).eval()


def default_chunk_frames(device: torch.device, image_size: int) -> int:
    """Frames generated per batch: 32, but 8 on the CPU at 256 px, where a batch of 32 frames' 64×256×256 maps
    (268 MB each in bf16) falls out of the caches: 15–20 % slower per frame, measured at batch 32 against 4–16."""
    return 8 if device.type == "cpu" and image_size >= 256 else 32


def _generate(g: Decoder, pid: list[torch.Tensor], wid: torch.Tensor) -> np.ndarray:
    """(k, wid_dim) scaled wids → (k, S, S, 3) uint8 RGB frames, by the inference copy ``g`` of G."""
    frames = decode_with(g, [p.expand(len(wid), *p.shape[1:]) for p in pid], wid)
    return (frames.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def _chunks(frames: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


@torch.no_grad()
def render(
    model: DAVS | str | Path,
    identity: str | Path,
    out_mp4: str | Path,
    *,
    audio: str | Path | None = None,
    video: str | Path | None = None,
    side_by_side: str | Path | None = None,
    grid: str | Path | None = None,
    gif: str | Path | None = None,
    finetune_steps: int = DEFAULT_FINETUNE_STEPS,
    wid_scale: float | None = None,
    device: str | torch.device | None = None,
    chunk_frames: int | None = None,
    grid_frames: int = 8,
    landmarker=None,
    paste_back: bool = True,
    bf16: bool = False,
) -> RenderResult:
    """Render ``identity`` (photo, video or "demo") driven by ``video`` (lips) or else ``audio`` (speech; file
    or "demo"). The soundtrack is ``audio``, or the driving video's own sound. Writes ``out_mp4`` (H.264 + AAC,
    25 fps) and, when given, the side-by-side mp4 (identity | driving | generated), the PNG still grid and the GIF.

    With ``paste_back`` (the default) the mp4 and the GIF show the whole photo (or identity video frame, longer
    side ≤ 1280 px, padded to even size) with the generated face blended in (:mod:`.pasteback`); without, the
    aligned S×S crop. ``bf16`` generates in bfloat16 (G's weights cast once, the encoders under autocast): about
    2× faster where the hardware has bf16 (AVX512-BF16/AMX CPUs, recent GPUs; much slower elsewhere), output
    within about one grey level.

    ``model`` is a DAVS (left unchanged: fine-tuning works on a copy) or a model file (:func:`load_model_file`).
    """
    if audio is None and video is None:
        raise ValueError("give audio= (speech file or 'demo') and/or video= (a driving video)")
    start = time.perf_counter()
    dev = pick_device(device)
    # a given DAVS is copied: fine-tuning and the memory format below change the copy only
    model = copy.deepcopy(model).to(dev).eval() if isinstance(model, DAVS) else load_model_file(model, dev)
    if landmarker is None:
        from davs_model.face import FaceLandmarker

        landmarker = FaceLandmarker(upsample=1)
    size = model.config.image_size
    chunk_frames = chunk_frames or default_chunk_frames(dev, size)
    ident = inputs.load_identity_frame(identity, landmarker)
    a = inputs.to_model_size(ident.aligned, size).to(dev)
    identity_small = (a.permute(1, 2, 0) * 255).round().byte().cpu().numpy()
    speech = inputs.load_speech(audio) if audio is not None else None

    if video is not None:
        mode, scale = "video", VIDEO_WID_SCALE if wid_scale is None else wid_scale
        transforms = inputs.driving_transforms(video, landmarker)
        n_frames = len(transforms) - inputs.FIRST_BIN
        if n_frames < 1:
            raise ValueError(f"{video}: the driving video needs at least 3 frames")
        if speech is None and inputs.video_has_audio(video):
            speech = inputs.load_speech(video)
        finetune_wids = model.encode_video(a[None, None])[0]  # E_v(A)
        driving = (
            inputs.to_model_size(block, size).to(dev)
            for block in _chunks(inputs.iter_driving_frames(video, transforms), chunk_frames)
        )
    else:
        mode, scale = "audio", AUDIO_WID_SCALE if wid_scale is None else wid_scale
        n_frames = inputs.count_bins(speech)
        if n_frames < 1:
            raise ValueError(
                f"{audio}: {len(speech) / 16000:.2f} s of audio is too short (one frame needs ≥ 0.22 s)"
            )
        mfcc_chunks = inputs.iter_mfcc_bins(speech, chunk_frames)
        first = next(mfcc_chunks)
        finetune_wids = model.encode_audio(torch.from_numpy(first[:FINETUNE_ITEMS]).to(dev)[None])[0]
        driving = (torch.from_numpy(c).to(dev) for c in _prepend(first, mfcc_chunks))

    losses = finetune_identity(model, a, finetune_wids, steps=finetune_steps)
    if losses:
        log.info("fine-tuned E_p and G for %d steps: loss %.4f → %.4f", len(losses), losses[0], losses[-1])
    # channels-last: faster CPU convolutions (G at 256 px: ≈25 %), same output; G gets it in its inference copy
    for encoder in (model.ID_encoder, model.lip_feature_encoder if mode == "video" else None):
        if encoder is not None:
            encoder.to(memory_format=torch.channels_last)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        pid = model.encode_identity(a[None].contiguous(memory_format=torch.channels_last))
    # G's folded inference form; the model is render's own copy, so G is converted in place
    g = inference_decoder(model.Decoder, torch.bfloat16 if bf16 else torch.float32, in_place=True)
    pid = [p.to(g.conv7_2.weight.dtype) for p in pid]
    track = inputs.soundtrack(speech, n_frames)
    peak = float(np.abs(speech).max()) if speech is not None and len(speech) else 1.0
    paste = PasteBack(ident.photo_bgr, ident.transform, size) if paste_back else None
    photo_rgb = np.ascontiguousarray(ident.photo_bgr[:, :, ::-1]) if paste_back else None
    outputs = RenderOutputs(
        out_mp4, identity_small, n_frames, track, side_by_side, grid, gif, grid_frames, photo_rgb=photo_rgb
    )
    with outputs as out:
        for frames, panels in _stream(model, g, pid, driving, mode, scale, bf16):
            for k, frame in enumerate(frames):
                i = out.n
                if panels is not None:
                    panel = panels[k]
                elif side_by_side or grid:
                    hop = inputs.SAMPLES_PER_FRAME
                    panel = waveform_panel(speech[hop * i : hop * i + 3440], size, peak)  # bin i + 2's 215 ms
                else:
                    panel = None
                out.add(frame, panel, paste(frame) if paste is not None else None)
            if out.n % (10 * chunk_frames) < chunk_frames:
                log.info("%d / %d frames", out.n, n_frames)
    seconds = time.perf_counter() - start
    log.info("rendered %d frames (%s mode) in %.1f s → %s", out.n, mode, seconds, out_mp4)
    return RenderResult(out.n, mode, tuple(losses), seconds)


def _stream(
    model: DAVS,
    g: Decoder,
    pid: list[torch.Tensor],
    driving: Iterator[torch.Tensor],
    mode: str,
    scale: float,
    bf16: bool,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Blocks of driving MFCC windows (k, 20, 12) or frames (k, 3, S, S) → (generated (k, S, S, 3) uint8 RGB,
    driving panels (k, S, S, 3) in video mode else None), E_p(A) encoded once by the caller, G's inference copy
    ``g`` made by the caller (:mod:`.inference`)."""
    device_type = next(model.parameters()).device.type
    for block in driving:
        with torch.inference_mode(), torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            if mode == "video":
                wid = model.encode_video(block[None])[0]
                panels = (block.permute(0, 2, 3, 1) * 255).round().byte().cpu().numpy()
            else:
                wid = model.encode_audio(block[None])[0]
                panels = None
            frames = _generate(g, pid, wid * scale)
        yield frames, panels


def _prepend(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest

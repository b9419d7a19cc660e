"""Evaluate one model on a split's shards: word accuracy, audio↔video retrieval, reconstruction quality.

Per clip (its longest run of paired frames and MFCC bins, n items; clips shorter than the 12 stride-2 steps, 23
items, are skipped and counted):

- audio and video wid features of all n items (E_a, E_v; the encoders work frame by frame);
- classification and retrieval on the 12 stride-2 items centred in the run (the original draws the start at
  random; the centre makes the numbers reproducible);
- reconstruction of all n frames from the identity A = the run's first frame: audio-driven G(E_p(A), 1.5·w_a) and
  video-driven G(E_p(A), 0.8·w_v) (the original's test-time scales; configurable), against the ground truth, at
  the model's resolution (the 256 centre crop resized as in training). The ground-truth row goes through the same
  code (PSNR/SSIM/LMD of the ground truth against itself are their ideal values by construction).

Reconstruction metrics are means over clips of per-clip values. LSE-C/LSE-D (:mod:`.lse`) need SyncNet weights
(config ``evaluate.syncnet``) and the clips' audio, which the shards do not hold: ``audio_paths`` maps clip ids to
their source videos (the workflow passes the catalog's). Without either the entry says "skipped: …" and nothing
fails; the three rows of the reconstruction are scored by the same code.
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import dlib
import numpy as np
import torch

from davs_model.data.dataset import aligned_run
from davs_model.evaluation import metrics
from davs_model.evaluation.config import EvaluateConfig
from davs_model.evaluation.lse import DEFINITION as LSE_DEFINITION
from davs_model.evaluation.lse import LSE_SKIPPED, LSEScorer, lse_status
from davs_model.evaluation.report import write_json, write_markdown, write_plot
from davs_model.io.shards import BIN_NUMBERS, FRAME_INDEX, ShardReader
from davs_model.model import AUDIO_WID_SCALE, DAVS, VIDEO_WID_SCALE
from davs_model.networks.common import mouth_box
from davs_model.rendering.finetune import finetune_identity
from davs_model.rendering.inputs import CROP, to_model_size
from davs_model.rendering.render import load_model_file, pick_device

log = logging.getLogger(__name__)

STRIDE = 2  # classification items are 2 frames apart (§1.4)
LANDMARK_SIZE = 256  # frames are upscaled to this before dlib's landmark predictor
FIXED_BOX_256 = (
    48,
    76,
    212,
    240,
)  # left, top, right, bottom: the face box of an aligned 256 crop, when none found
ROWS = ("ground_truth", "audio_driven", "video_driven")
__all__ = ["LSE_SKIPPED", "evaluate", "lse_status"]


class MouthLandmarks:
    """dlib 68 landmarks of aligned frames: the box is the detector's on the ground-truth frame (upscaled to 256),
    or a fixed box of the aligned layout when it finds none, and the same box serves the generated frames."""

    def __init__(self) -> None:
        from davs_model.face import FaceLandmarker

        self.landmarker = FaceLandmarker(upsample=0)

    @staticmethod
    def _bgr256(rgb: np.ndarray) -> np.ndarray:
        import cv2

        return np.ascontiguousarray(cv2.resize(rgb, (LANDMARK_SIZE, LANDMARK_SIZE), cv2.INTER_CUBIC)[:, :, ::-1])

    def boxes(self, gt_rgb: np.ndarray) -> list:
        out = []
        for frame in gt_rgb:
            found = self.landmarker.detect(self._bgr256(frame))
            out.append(found[0] if found else dlib.rectangle(*FIXED_BOX_256))
        return out

    def __call__(self, frames_rgb: np.ndarray, boxes: list) -> np.ndarray:
        """(n, S, S, 3) uint8 RGB → (n, 68, 2) landmarks in 256-px coordinates."""
        return np.stack(
            [self.landmarker.landmarks(self._bgr256(f), b) for f, b in zip(frames_rgb, boxes, strict=True)]
        )


def _clip_tensors(reader: ShardReader, i: int, size: int, need: int):
    """(frames (n, 3, S, S), mfcc (n, 20, 12) float32, label, bin numbers (n,)) of a clip's aligned run, or None
    if n < need."""
    frame_index = reader.array(i, FRAME_INDEX)
    first, n = aligned_run(frame_index)
    if n < need:
        return None
    raw = reader.frames(i, np.arange(frame_index[first], frame_index[first] + n))[:, CROP, CROP]
    mfcc = reader.mfcc(i)[first : first + n].astype(np.float32)
    label = int(reader.meta(i, ("label",))["label"])
    return to_model_size(raw, size), torch.from_numpy(mfcc), label, reader.array(i, BIN_NUMBERS)[first : first + n]


def _images(x: torch.Tensor) -> np.ndarray:
    """(n, 3, S, S) in [0, 1] → (n, S, S, 3) float64, quantised to 8 bits as a written video would be."""
    return ((x.clamp(0, 1) * 255).round() / 255).permute(0, 2, 3, 1).double().cpu().numpy()


def _decode(
    model: DAVS, identity: torch.Tensor, wid: torch.Tensor, steps: int, ft_wid: torch.Tensor
) -> np.ndarray:
    if steps > 0:
        model = copy.deepcopy(model)
        finetune_identity(model, identity, ft_wid, steps=steps)
    pid = model.encode_identity(identity[None])
    out = [model.decode([p.expand(len(c), *p.shape[1:]) for p in pid], c) for c in wid.split(32)]
    return _images(torch.cat(out))


def _reconstruction(frames: dict[str, np.ndarray], wanted: tuple[str, ...], box, landmarks) -> dict[str, dict]:
    gt = frames["ground_truth"]
    gt_u8 = (gt * 255).round().astype(np.uint8)
    boxes = landmarks.boxes(gt_u8) if landmarks else None
    gt_lm = landmarks(gt_u8, boxes) if landmarks else None
    out = {}
    for row, x in frames.items():
        values = {}
        if "psnr" in wanted:
            values["psnr"] = metrics.psnr(x, gt)
        if "ssim" in wanted:
            values["ssim"] = metrics.ssim(x, gt)
        if landmarks:
            values["lmd"] = metrics.lmd(landmarks((x * 255).round().astype(np.uint8), boxes), gt_lm)
        if "cpbd" in wanted:
            values["cpbd"] = metrics.cpbd(x)
        if "jitter" in wanted:
            values["jitter"] = metrics.jitter(x, box)
        out[row] = values
    return out


@torch.no_grad()
def evaluate(
    model_path: str | Path,
    test_shards: list[str | Path],
    out_json: str | Path,
    out_md: str | Path,
    out_png: str | Path,
    cfg: EvaluateConfig | dict | None = None,
    *,
    device: str | torch.device | None = None,
    model: DAVS | None = None,
    audio_paths: Mapping[str, str | Path] | None = None,
) -> dict:
    """Evaluate ``model_path`` (or an in-memory ``model``) on ``test_shards``; writes the JSON, Markdown and PNG
    and returns the JSON's content. ``audio_paths`` (clip id → source video) gives LSE the clips' audio, which
    the shards do not hold."""
    cfg = cfg if isinstance(cfg, EvaluateConfig) else EvaluateConfig.from_dict(cfg)
    lse = lse_status(cfg.syncnet)  # fail fast on a wrong hash
    dev = pick_device(device)
    model = (model.to(dev) if model is not None else load_model_file(model_path, dev)).eval()
    scorer = LSEScorer(lse, cfg.syncnet, audio_paths, dev)
    mc = model.config
    size, wanted = mc.image_size, cfg.metrics
    scale_a = AUDIO_WID_SCALE if cfg.audio_wid_scale is None else cfg.audio_wid_scale
    scale_v = VIDEO_WID_SCALE if cfg.video_wid_scale is None else cfg.video_wid_scale
    span = 1 + STRIDE * (mc.pred_length - 1)
    landmarks = MouthLandmarks() if "lmd" in wanted else None
    recon_wanted = {"psnr", "ssim", "lmd", "cpbd", "jitter"} & set(wanted)
    logits_a, logits_v, labels, emb_a, emb_v = [], [], [], [], []
    per_clip: dict[str, dict[str, list[float]]] = {row: defaultdict(list) for row in ROWS}
    n_clips = n_frames = skipped = 0
    for shard in test_shards:
        reader = ShardReader(shard)
        try:
            for i in range(len(reader)):
                if cfg.max_clips is not None and n_clips >= cfg.max_clips:
                    break
                clip = _clip_tensors(reader, i, size, span)
                if clip is None:
                    skipped += 1
                    continue
                frames, mfcc, label, bins = clip
                frames, mfcc = frames.to(dev), mfcc.to(dev)
                wa = model.encode_audio(mfcc[None])[0]
                wv = model.encode_video(frames[None])[0]
                sel = (len(frames) - span) // 2 + STRIDE * torch.arange(mc.pred_length, device=dev)
                labels.append(label)
                logits_a.append(model.model_fusion(wa[sel][None])[0].cpu().numpy())
                logits_v.append(model.model_fusion(wv[sel][None])[0].cpu().numpy())
                emb_a.append(wa[sel].flatten().cpu().numpy())
                emb_v.append(wv[sel].flatten().cpu().numpy())
                if recon_wanted or scorer.active:
                    a, steps = frames[0], cfg.finetune_steps
                    recon = {
                        "ground_truth": _images(frames),
                        "audio_driven": _decode(model, a, wa * scale_a, steps, wa[:5]),
                        "video_driven": _decode(
                            model, a, wv * scale_v, steps, model.encode_video(a[None, None])[0]
                        ),
                    }
                    scorer.add(reader.clip_ids[i], bins, recon)
                    box = mouth_box(size)
                    values = _reconstruction(recon, tuple(recon_wanted), box, landmarks) if recon_wanted else {}
                    for row, vals in values.items():
                        for key, v in vals.items():
                            per_clip[row][key].append(v)
                n_clips += 1
                n_frames += len(frames)
                if n_clips % 50 == 0:
                    log.info("%d clips evaluated", n_clips)
        finally:
            reader.close()
    if n_clips == 0:
        raise ValueError(f"no clip with at least {span} paired frames/bins in {len(test_shards)} shard(s)")
    result = {
        "model": str(model_path),
        "split": cfg.split,
        "n_clips": n_clips,
        "n_frames": n_frames,
        "skipped_short_clips": skipped,
        "image_size": size,
        "wid_scale": {"audio": scale_a, "video": scale_v},
        "finetune_steps": cfg.finetune_steps,
        "lse": scorer.result(),
        "definitions": {
            k: metrics.DEFINITIONS[k] for k in (*wanted, "word_accuracy", "retrieval") if k in metrics.DEFINITIONS
        },
    }
    if "rows" in result["lse"]:
        result["definitions"]["lse"] = LSE_DEFINITION
    if "word_accuracy" in wanted:
        y = np.asarray(labels)
        ok = (y >= 0) & (y < mc.n_words)
        za, zv = np.stack(logits_a)[ok], np.stack(logits_v)[ok]
        result["word_accuracy"] = {
            "audio": metrics.accuracy(za, y[ok]),
            "video": metrics.accuracy(zv, y[ok]),
            "fused": metrics.accuracy(za + zv, y[ok]),
            "n_clips": int(ok.sum()),
        }
    if "retrieval" in wanted:
        result["retrieval"] = metrics.retrieval_from_embeddings(np.stack(emb_a), np.stack(emb_v))
    if recon_wanted:
        result["reconstruction"] = {
            row: {k: float(np.nanmean(v)) if np.isfinite(v).any() else None for k, v in per_clip[row].items()}
            for row in ROWS
        }
    write_json(result, out_json)
    write_markdown(result, out_md)
    write_plot(result, out_png)
    return result

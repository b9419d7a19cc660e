"""LSE-D / LSE-C lip-sync scores with SyncNet, computed as Wav2Lip's evaluation computes them.

Wav2Lip (``evaluation/scores_LSE``) runs syncnet_python's ``SyncNetInstance.evaluate`` on every video and reports
the means over videos of its minimum distance (LSE-D, lower is better) and its confidence (LSE-C, higher is
better). Per video (25 fps, 16 kHz mono int16):

- MFCC: ``python_speech_features.mfcc(audio, 16000)``, its defaults (13 coefficients, 100 frames/s); the block
  of video frame i is MFCC frames 4i … 4i+19;
- lips: frames i … i+4, resized to 224×224, BGR 0-255 (OpenCV's order, as the released weights expect);
- i runs over ``min(n_frames, len(audio) // 640) - 5`` windows; ``calc_pdist`` pairs video window i with audio
  windows i−15 … i+15 (zero vectors past either end) by Euclidean distance; the mean over i gives a 31-point
  curve; LSE-D = its minimum, LSE-C = its median − its minimum, AV offset = 15 − argmin.

Our frames are aligned face crops already (the DAVS 256 crop), so there is no S3FD face detection and tracking
here: the crops are the aligned faces resized to 224, which frame the face differently from syncnet_python's
enlarged detector box. Numbers compare the rows of one evaluation (ground truth, audio-driven, video-driven)
with each other; they are close to, not identical with, numbers from the full syncnet_python pipeline.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from davs_model.evaluation.config import SyncNetConfig
from davs_model.rendering.inputs import FIRST_BIN, SAMPLE_RATE, SAMPLES_PER_FRAME, soundtrack

log = logging.getLogger(__name__)

LSE_SKIPPED = "skipped: weights not provided"
LSE_NO_AUDIO = (
    "skipped: shards hold no audio and no source videos were given (the workflow passes the clips' source "
    "videos; the Python API takes evaluate(..., audio_paths={clip_id: video}))"
)
LSE_READY = "ready"
VSHIFT = 15  # frames searched each way (Wav2Lip's --vshift)
BATCH = 20  # windows per SyncNet forward (Wav2Lip's --batch_size; results do not depend on it)
SIZE = 224
WINDOW = 5  # video frames per SyncNet window; its audio block is 4 × 5 = 20 MFCC frames
MFCC_PER_FRAME = 4
LSE_ROWS = ("ground_truth", "audio_driven", "video_driven")
DEFINITION = (
    "LSE-D / LSE-C (Wav2Lip's evaluation, SyncNet syncnet_v2.model): per clip, 1024-d SyncNet embeddings of every "
    "5-frame window of 224×224 face crops and of the python_speech_features MFCC of the audio as heard with "
    f"the frames; mean Euclidean distance over windows for audio shifts of −{VSHIFT}…{VSHIFT} frames; LSE-D = "
    "the minimum (lower is better), LSE-C = median − minimum (higher is better), offset = the best shift "
    "(0 = in sync). Means over clips. Crops are our aligned faces (no S3FD detection)."
)


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lse_status(cfg: SyncNetConfig) -> dict:
    """``{"status": LSE_SKIPPED}`` without weights; ``{"status": "ready", "sha256": ...}`` when the file exists
    and its SHA-256 matches. A missing file or a wrong hash is an error (fail before a long evaluation)."""
    if cfg.weights is None:
        return {"status": LSE_SKIPPED}
    path = Path(cfg.weights)
    if not path.is_file():
        raise FileNotFoundError(f"evaluate.syncnet.weights: {path} not found; fix the path or set it to null")
    digest = sha256_of(path)
    if digest != str(cfg.sha256).lower():
        raise ValueError(
            f"{path}: SHA-256 {digest} differs from evaluate.syncnet.sha256 {cfg.sha256}; check that the file is "
            "the SyncNet model you meant (syncnet_v2.model) and fix the hash in config.yaml"
        )
    try:
        import python_speech_features  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "LSE needs python_speech_features (SyncNet's MFCC): pip install python_speech_features"
        ) from e
    return {"status": LSE_READY, "sha256": digest}


@dataclass(frozen=True)
class LSEScore:
    dist: float  # LSE-D: the minimum of the mean-distance curve
    conf: float  # LSE-C: median − minimum of the curve
    offset: int  # VSHIFT − argmin: > 0 when the sound comes that many frames before the lips, < 0 after
    curve: np.ndarray  # (2·VSHIFT + 1,) mean distance per shift; curve[VSHIFT - offset] == dist


def syncnet_mfcc(audio: np.ndarray) -> np.ndarray:
    """(13, M) MFCC of 16 kHz int16 audio, exactly as SyncNetInstance (python_speech_features defaults)."""
    from python_speech_features import mfcc

    return np.asarray(mfcc(np.asarray(audio), SAMPLE_RATE), dtype=np.float64).T


def lip_input(frames_rgb: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB → (T, 3, 224, 224) float BGR 0-255 (cv2.resize's default bilinear, as Wav2Lip)."""
    out = [cv2.resize(np.ascontiguousarray(f[:, :, ::-1]), (SIZE, SIZE)) for f in frames_rgb]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()


def distance_curve(video_feat: torch.Tensor, audio_feat: torch.Tensor, vshift: int = VSHIFT) -> torch.Tensor:
    """syncnet_python's ``calc_pdist`` then the mean over windows: (2·vshift + 1,) mean distance per shift, video
    window i against audio window i + shift − vshift, zero vectors beyond the ends."""
    win = 2 * vshift + 1
    padded = torch.nn.functional.pad(audio_feat, (0, 0, vshift, vshift))
    dists = [
        torch.nn.functional.pairwise_distance(video_feat[[i]].repeat(win, 1), padded[i : i + win])
        for i in range(len(video_feat))
    ]
    return torch.stack(dists, 1).mean(1)


def score_curve(curve: torch.Tensor, vshift: int = VSHIFT) -> LSEScore:
    minval, minidx = torch.min(curve, 0)
    conf = torch.median(curve) - minval  # torch.median: the lower middle value, as the original
    return LSEScore(float(minval), float(conf), int(vshift - minidx), curve.cpu().numpy())


@torch.no_grad()
def lse_scores(
    frames_rgb: np.ndarray, audio: np.ndarray, model, vshift: int = VSHIFT, batch_size: int = BATCH
) -> LSEScore:
    """LSE of (T, H, W, 3) uint8 RGB face crops at 25 fps and the 16 kHz int16 ``audio`` heard with them
    (sample 0 at frame 0's start). ``model``: a :class:`SyncNet` (or anything with forward_lip/forward_audio)."""
    cc = torch.from_numpy(syncnet_mfcc(audio)).float()
    n = min(len(frames_rgb), len(audio) // SAMPLES_PER_FRAME) - WINDOW
    if n < 1:
        raise ValueError(
            f"LSE needs more than {WINDOW} frames and as much audio (40 ms a frame), got {len(frames_rgb)} frames "
            f"and {len(audio)} samples"
        )
    device = next(iter(model.parameters())).device if isinstance(model, torch.nn.Module) else "cpu"
    lips = lip_input(frames_rgb[: n + WINDOW - 1])
    video_feat, audio_feat = [], []
    for start in range(0, n, batch_size):
        idx = range(start, min(n, start + batch_size))
        # (B, 3, 5, 224, 224): window i is frames i … i+4
        v = torch.stack([lips[i : i + WINDOW].permute(1, 0, 2, 3) for i in idx])
        a = torch.stack([cc[None, :, MFCC_PER_FRAME * i : MFCC_PER_FRAME * (i + WINDOW)] for i in idx])
        video_feat.append(model.forward_lip(v.to(device)).float().cpu())
        audio_feat.append(model.forward_audio(a.to(device)).float().cpu())
    return score_curve(distance_curve(torch.cat(video_feat), torch.cat(audio_feat), vshift), vshift)


def clip_soundtrack(source_audio: np.ndarray, first_bin: int, n_frames: int) -> np.ndarray:
    """The audio heard with n evaluated frames whose first one pairs with MFCC bin number ``first_bin`` of the
    source (frame k ↔ bin first_bin + k; bin l covers source audio from 40·(l−2) ms, centred on frame l).

    We generate frame k from bin first_bin + k as the renderer generates output frame i from bin i + 2 of its
    input audio, so we hand the renderer's own :func:`soundtrack` the source audio from bin ``first_bin − 2``'s
    start: it drops the first 80 ms, as the rendered mp4 does, and the user hears source time (first_bin + k)/25 s
    with frame k. Measured this way, a perfectly synced clip has offset 0 (the ground truth has, by construction).
    """
    start = (first_bin - FIRST_BIN) * SAMPLES_PER_FRAME
    if start < 0:
        raise ValueError(f"bin numbers start at {FIRST_BIN}, got {first_bin}")
    return soundtrack(np.asarray(source_audio)[start:], n_frames)


class LSEScorer:
    """LSE of the evaluated clips, row by row; inactive (and cheap) when weights or audio are missing."""

    def __init__(
        self,
        status: dict,
        cfg: SyncNetConfig,
        audio_paths: Mapping[str, str | Path] | None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.status, self.audio_paths = dict(status), audio_paths
        self.model = None
        if status["status"] == LSE_READY and audio_paths is None:
            self.status["status"] = LSE_NO_AUDIO
        elif status["status"] == LSE_READY:
            from davs_model.evaluation.syncnet import load_syncnet

            self.model = load_syncnet(cfg.weights, device)
        self.scores: dict[str, list[LSEScore]] = {row: [] for row in LSE_ROWS}
        self.skipped: Counter[str] = Counter()

    @property
    def active(self) -> bool:
        return self.model is not None

    def _audio(self, clip_id: str, first_bin: int, n: int) -> np.ndarray | None:
        from davs_model.io.media import MediaError, read_audio

        path = self.audio_paths.get(clip_id)
        if path is None:
            self.skipped["no source video for the clip"] += 1
            return None
        try:
            return clip_soundtrack(read_audio(path, sample_rate=SAMPLE_RATE), first_bin, n)
        except (MediaError, OSError) as e:
            log.warning("LSE: %s: no audio (%s); clip %s left out of LSE", path, e, clip_id)
            self.skipped["source audio unreadable"] += 1
            return None

    def add(self, clip_id: str, bins: np.ndarray, frames: Mapping[str, np.ndarray]) -> None:
        """Score one clip's rows: ``frames[row]`` (n, S, S, 3) float RGB in [0, 1], frame k made from (or paired
        with) MFCC bin number ``bins[k]``."""
        if not self.active:
            return
        n = len(frames["ground_truth"])
        if n <= WINDOW or len(bins) != n or np.any(np.diff(bins) != 1):
            self.skipped[f"not a run of more than {WINDOW} consecutive bins"] += 1
            return
        audio = self._audio(clip_id, int(bins[0]), n)
        if audio is None:
            return
        for row in LSE_ROWS:
            if row in frames:
                u8 = (np.clip(frames[row], 0, 1) * 255).round().astype(np.uint8)
                self.scores[row].append(lse_scores(u8, audio, self.model))

    def result(self) -> dict:
        """The ``lse`` entry of metrics.json: status, and per row the means over clips."""
        out = dict(self.status)
        if not self.active:
            return out
        n = len(self.scores["ground_truth"])
        out["skipped_clips"] = dict(self.skipped)
        if n == 0:
            out["status"] = f"skipped: no clip could be scored ({dict(self.skipped)})"
            return out
        out["status"] = f"computed on {n} clips (SyncNet, vshift {VSHIFT})"
        out["n_clips"] = n
        out["rows"] = {
            row: {
                "lse_d": float(np.mean([s.dist for s in scores])),
                "lse_c": float(np.mean([s.conf for s in scores])),
                "mean_abs_offset": float(np.mean([abs(s.offset) for s in scores])),
                "in_sync_percent": float(100 * np.mean([s.offset == 0 for s in scores])),
            }
            for row, scores in self.scores.items()
            if scores
        }
        return out

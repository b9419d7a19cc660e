"""What a training run leaves next to its state in ``work_dir`` (written by rank 0 only):

- ``stats.jsonl``: one JSON object per log step: ``step``, ``epoch``, the losses (``D/...``, ``G/...``), ``it_s``
  (iterations per second since the previous log line), ``lr``, ``time``;
- ``tb/``: the same scalars as TensorBoard events (``torch.utils.tensorboard``; needs the ``tensorboard`` package);
- ``loss_curves.png``: ``D/total``, ``G/total`` and every G term against the step (matplotlib, Agg backend);
- ``samples/step_XXXXXX.png``: per clip of a fixed val batch, a row identity | 6 real frames | 6 audio-driven |
  6 video-driven frames.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from davs_model.data.dataset import image_tensor

__all__ = ["RunReport", "generate_sequences", "sample_grid"]


class RunReport:
    """Appends to ``stats.jsonl`` and the TensorBoard log; on resume, drops the lines after the resumed step."""

    def __init__(self, work_dir: Path, *, resume_step: int, enabled: bool = True) -> None:
        self.work_dir, self.enabled = Path(work_dir), enabled
        self.stats_path = self.work_dir / "stats.jsonl"
        self._tb = None
        if not enabled:
            return
        if self.stats_path.exists():  # lines logged after the last saved state are replayed by the resumed run
            kept = [ln for ln in self.stats_path.read_text().splitlines() if _step(ln) <= resume_step]
            self.stats_path.write_text("".join(f"{ln}\n" for ln in kept))
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(str(self.work_dir / "tb"), purge_step=resume_step + 1 if resume_step else None)

    def log(self, step: int, epoch: int, losses: dict[str, float], *, it_s: float, lr: float) -> None:
        if not self.enabled:
            return
        row = {"step": step, "epoch": epoch, **losses, "it_s": it_s, "lr": lr, "time": time.time()}
        with open(self.stats_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        for key, value in losses.items():
            self._tb.add_scalar(f"loss/{key}", value, step)
        self._tb.add_scalar("speed/it_s", it_s, step)
        self._tb.add_scalar("lr", lr, step)

    def history(self) -> list[dict[str, Any]]:
        if not self.stats_path.exists():
            return []
        return [json.loads(ln) for ln in self.stats_path.read_text().splitlines() if ln.strip()]

    def plot_losses(self) -> Path | None:
        """``loss_curves.png`` from ``stats.jsonl``: D terms, G total, G pixel terms, other G terms (linear axes,
        no mathtext and no tight_layout: a plot costs ~0.2 s, not seconds)."""
        rows = self.history()
        if not self.enabled or not rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = [k for k in rows[-1] if "/" in k]
        pixel = [k for k in keys if k.startswith("G/l1_") or k == "G/previous_frame"]
        panels = {
            "D": [k for k in keys if k.startswith("D/")],
            "G/total": ["G/total"],
            "G pixel terms": pixel,
            "G other terms": [k for k in keys if k.startswith("G/") and k not in pixel and k != "G/total"],
        }
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
        for ax, (title, names) in zip(axes, panels.items(), strict=True):
            for key in names:
                pts = [(r["step"], r[key]) for r in rows if key in r]
                if pts:
                    ax.plot(*zip(*pts, strict=True), lw=1, label=key.split("/", 1)[1])
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
            if len(names) > 1:
                ax.legend(fontsize=6, ncol=2)
        fig.subplots_adjust(left=0.04, right=0.99, bottom=0.14, top=0.9, wspace=0.25)
        path = self.work_dir / "loss_curves.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return path

    def save_samples(self, step: int, grid: np.ndarray) -> Path | None:
        if not self.enabled:
            return None
        import matplotlib.image

        path = self.work_dir / "samples" / f"step_{step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        matplotlib.image.imsave(path, grid)
        return path

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _step(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return -1


def sample_grid(identity: Tensor, real: Tensor, audio: Tensor, video: Tensor) -> np.ndarray:
    """(H, W, 3) float in [0, 1]: per clip a row identity | real | audio-driven | video-driven, 2-px gaps.

    identity (B, 3, S, S); real, audio, video (B, T, 3, S, S)."""
    b, t, _, s, _ = real.shape
    gap = 2
    canvas = np.ones((b * (s + gap) - gap, (1 + 3 * t) * (s + gap) - gap, 3), np.float32)
    for i in range(b):
        tiles = [identity[i], *real[i], *audio[i], *video[i]]
        for j, tile in enumerate(tiles):
            y, x = i * (s + gap), j * (s + gap)
            canvas[y : y + s, x : x + s] = tile.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return canvas


def generate_sequences(model, batch: dict, device: torch.device, *, wid_scale: float, video: bool):
    """Real targets and the audio- (and video-) driven frames of a batch: (B, T, 3, S, S) each."""
    frames, t = image_tensor(batch["frames"], device), model.config.sequence_length
    rows = torch.arange(len(frames), device=device)[:, None]
    idx = batch["gen_index"].to(device).long()[:, None] + torch.arange(t, device=device)
    pid = model.encode_identity(image_tensor(batch["identity"], device))
    wid_a = model.encode_audio(batch["mfcc"].to(device))[rows, idx] * wid_scale
    fake_a = torch.stack([model.decode(pid, wid_a[:, i]) for i in range(t)], 1)
    fake_v = None
    if video:
        wid_v = model.encode_video(frames)[rows, idx] * wid_scale
        fake_v = torch.stack([model.decode(pid, wid_v[:, i]) for i in range(t)], 1)
    return frames[rows, idx], fake_a, fake_v

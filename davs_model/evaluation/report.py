"""The evaluation's three files: metrics.json, a Markdown table with every metric's definition, and a plot."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from davs_model.evaluation.metrics import PSNR_CAP_DB

ROW_NAMES = {"ground_truth": "ground truth", "audio_driven": "audio-driven", "video_driven": "video-driven"}
COLUMNS = [  # key, header, format
    ("psnr", "PSNR (dB) ↑", "{:.2f}"),
    ("ssim", "SSIM ↑", "{:.4f}"),
    ("lmd", "LMD ↓", "{:.4f}"),
    ("cpbd", "CPBD ↑", "{:.4f}"),
    ("jitter", "jitter ↓", "{:.3f}"),
]
RECALLS = ("R@1", "R@5", "R@10", "R@50")
LSE_COLUMNS = (
    ("lse_d", "{:.3f}"),
    ("lse_c", "{:.3f}"),
    ("mean_abs_offset", "{:.2f}"),
    ("in_sync_percent", "{:.1f}"),
)


def _clean(value):
    """NaN/inf → None, recursively (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _atomic_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(result: dict, path: str | Path) -> None:
    _atomic_text(path, json.dumps(_clean(result), indent=2, ensure_ascii=False) + "\n")


def _fmt(value, spec: str) -> str:
    return (
        "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else spec.format(value)
    )


def markdown(result: dict) -> str:
    """The metrics table as Markdown (what ``write_markdown`` writes)."""
    r = _clean(result)
    lines = [
        f"# DAVS evaluation: `{r['model']}` on the {r['split']} split",
        "",
        f"{r['n_clips']} clips, {r['n_frames']} frames at {r['image_size']}×{r['image_size']} px "
        f"({r['skipped_short_clips']} clips too short for 12 stride-2 steps skipped). "
        f"Test-time fine-tuning steps: {r['finetune_steps']}.",
        "",
    ]
    if "word_accuracy" in r:
        acc = r["word_accuracy"]
        lines += [
            f"## Word accuracy (%, {acc['n_clips']} labelled clips)",
            "",
            "| input | accuracy (%) |",
            "|---|---|",
            f"| audio | {_fmt(acc['audio'], '{:.2f}')} |",
            f"| video (lip reading) | {_fmt(acc['video'], '{:.2f}')} |",
            f"| fused (sum of logits) | {_fmt(acc['fused'], '{:.2f}')} |",
            "",
        ]
    if "retrieval" in r:
        lines += [
            "## Audio ↔ video retrieval",
            "",
            "| query → candidates | " + " | ".join(f"{k} (%)" for k in RECALLS) + " | median rank | mean rank |",
            "|---|" + "---|" * (len(RECALLS) + 2),
        ]
        for key, name in (("audio_to_video", "audio → video"), ("video_to_audio", "video → audio")):
            d = r["retrieval"][key]
            cells = [_fmt(d[k], "{:.2f}") for k in RECALLS] + [_fmt(d["median_rank"], "{:.0f}")]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {_fmt(d['mean_rank'], '{:.1f}')} |")
        lines.append("")
    if "reconstruction" in r:
        rec = r["reconstruction"]
        cols = [c for c in COLUMNS if c[0] in rec["ground_truth"]]
        scale = r["wid_scale"]
        lines += [
            "## Reconstruction against the ground-truth frames",
            "",
            "Float RGB images in [0, 1] (8-bit quantised), at the model's resolution; means over clips. "
            f"PSNR of identical frames is capped at {PSNR_CAP_DB:g} dB.",
            "",
            "| frames | " + " | ".join(h for _, h, _ in cols) + " |",
            "|---|" + "---|" * len(cols),
        ]
        for row, name in ROW_NAMES.items():
            label = name + {
                "audio_driven": f" (wid × {scale['audio']:g})",
                "video_driven": f" (wid × {scale['video']:g})",
            }.get(row, "")
            lines.append(f"| {label} | " + " | ".join(_fmt(rec[row].get(k), f) for k, _, f in cols) + " |")
        lines.append("")
    lines += ["## Lip sync (SyncNet LSE-C / LSE-D)", "", r["lse"]["status"], ""]
    if "rows" in r["lse"]:
        lines += [
            "| frames | LSE-D ↓ | LSE-C ↑ | mean abs. AV offset (frames) | clips in sync (%) |",
            "|---|---|---|---|---|",
        ]
        for row, d in r["lse"]["rows"].items():
            lines.append(f"| {ROW_NAMES[row]} | " + " | ".join(_fmt(d[k], f) for k, f in LSE_COLUMNS) + " |")
        lines.append("")
    lines += ["## Definitions", ""]
    lines += [f"- **{k}**: {v}" for k, v in r["definitions"].items()]
    return "\n".join(lines) + "\n"


def write_markdown(result: dict, path: str | Path) -> None:
    _atomic_text(path, markdown(result))


def write_plot(result: dict, path: str | Path) -> None:
    """Bar charts of accuracy and reconstruction metrics, recall@K curves of retrieval (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = _clean(result)
    panels = []
    if "word_accuracy" in r:
        panels.append(
            (
                "word accuracy (%)",
                ["audio", "video", "fused"],
                [r["word_accuracy"][k] for k in ("audio", "video", "fused")],
            )
        )
    rec = r.get("reconstruction", {})
    for key, header, _ in COLUMNS:
        if key in rec.get("ground_truth", {}):
            panels.append((header, [ROW_NAMES[k] for k in ROW_NAMES], [rec[k].get(key) for k in ROW_NAMES]))
    lse_rows = r["lse"].get("rows", {})
    for key, header in (("lse_d", "LSE-D ↓"), ("lse_c", "LSE-C ↑")):
        if lse_rows:
            panels.append((header, [ROW_NAMES[k] for k in lse_rows], [d[key] for d in lse_rows.values()]))
    n = len(panels) + ("retrieval" in r)
    cols = min(n, 4) or 1
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax, (title, names, values) in zip(flat, panels, strict=False):
        ax.bar(
            names, [v if v is not None else 0 for v in values], color=["#777", "#3b7dd8", "#e0803a"][: len(names)]
        )
        for x, v in enumerate(values):
            ax.text(
                x,
                v if v is not None else 0,
                "n/a" if v is None else f"{v:.3g}",
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_title(title)
        ax.tick_params(axis="x", labelsize=8)
    if "retrieval" in r:
        ax = flat[len(panels)]
        ks = [int(k[2:]) for k in RECALLS]
        for key, name in (("audio_to_video", "audio → video"), ("video_to_audio", "video → audio")):
            ax.plot(ks, [r["retrieval"][key][k] for k in RECALLS], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_ylim(0, 100)
        ax.set_title("retrieval recall@K (%)")
        ax.legend(fontsize=8)
    for ax in flat[n:]:
        ax.axis("off")
    fig.suptitle(
        f"DAVS evaluation, {r['split']} split, {r['n_clips']} clips · LSE: {r['lse']['status'][:60]}", fontsize=10
    )
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_name(f".{Path(path).name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)

"""QC: one row per clip (:class:`QCRow`, written per shard by :func:`write_qc`); the manifest of every shard's
rows, a summary and a plot."""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from davs_model.preprocess.sources import Clip

QC_COLUMNS = (
    "clip_id",
    "source",
    "split",
    "label",
    "speaker",
    "frames",
    "input_fps",
    "n_bins",
    "status",
    "reason",
    "notes",
    "detection_rate",
    "detector_calls",
    "faces",
    "jitter_scale",
    "jitter_shift_px",
    "seconds",
    "path",
)


@dataclass
class QCRow:
    clip: Clip
    status: str = "ok"
    reason: str = ""
    message: str = ""
    frames: int = 0
    input_fps: float = float("nan")
    n_bins: int = 0
    detection_rate: float = float("nan")
    detector_calls: int = 0
    faces: int = 0
    notes: list[str] = field(default_factory=list)
    jitter_scale: float = float("nan")
    jitter_shift_px: float = float("nan")
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def as_row(self) -> dict[str, str]:
        c = self.clip
        reason = f"{self.reason}: {self.message}" if self.message else self.reason
        values = {
            "clip_id": c.clip_id,
            "source": c.source,
            "split": c.split,
            "label": c.label,
            "speaker": c.speaker,
            "frames": self.frames,
            "input_fps": f"{self.input_fps:.3f}",
            "n_bins": self.n_bins,
            "status": self.status,
            "reason": reason.replace("\t", " ").replace("\n", " "),
            "notes": "; ".join(self.notes).replace("\t", " ").replace("\n", " "),
            "detection_rate": f"{self.detection_rate:.4f}",
            "detector_calls": self.detector_calls,
            "faces": self.faces,
            "jitter_scale": f"{self.jitter_scale:.4f}",
            "jitter_shift_px": f"{self.jitter_shift_px:.4f}",
            "seconds": f"{self.seconds:.3f}",
            "path": c.path,
        }
        return {k: str(v) for k, v in values.items()}


def write_qc(rows: list[QCRow], path: str | Path) -> None:
    """QC rows as a TSV (atomic: temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        writer = csv.DictWriter(fh, QC_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row.as_row())
    tmp.replace(path)


def read_qc(paths: list[str | Path]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in paths:
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
            rows.extend(csv.DictReader(fh, delimiter="\t"))
    return sorted(rows, key=lambda r: r["clip_id"])


def _float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return float("nan")


def summarize(rows: list[dict[str, str]]) -> dict:
    """Counts by split, status and reason, and detection/jitter statistics of the good clips."""
    ok = [r for r in rows if r["status"] == "ok"]

    def stats(key: str) -> dict[str, float]:
        values = sorted(v for v in (_float(r[key]) for r in ok) if v == v)
        if not values:
            return {}
        return {
            "mean": sum(values) / len(values),
            "median": values[len(values) // 2],
            "max": values[-1],
        }

    return {
        "clips": len(rows),
        "ok": len(ok),
        "by_split": dict(Counter(f"{r['split']}:{r['status']}" for r in rows)),
        "by_reason": dict(Counter(r["reason"].split(":")[0] for r in rows if r["status"] != "ok")),
        "frames": sum(int(r["frames"] or 0) for r in ok),
        "detection_rate": stats("detection_rate"),
        "jitter_scale": stats("jitter_scale"),
        "jitter_shift_px": stats("jitter_shift_px"),
        "detector_calls_per_frame": (
            sum(int(r["detector_calls"] or 0) for r in ok) / max(1, sum(int(r["frames"] or 0) for r in ok))
        ),
    }


def plot_qc(rows: list[dict[str, str]], out_png: str | Path) -> None:
    """Histograms of detection rate and jitter, and the rejection reasons, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, key, title in zip(
        axes[:3],
        ("detection_rate", "jitter_scale", "jitter_shift_px"),
        ("face detection rate", "jitter: scale change (%)", "jitter: shift (px, 260 crop)"),
        strict=True,
    ):
        values = [v for v in (_float(r[key]) for r in ok) if v == v]
        ax.hist(values, bins=20, color="#4477aa")
        ax.set_title(title)
        ax.set_ylabel("clips")
    reasons = Counter(r["reason"].split(":")[0] for r in rows if r["status"] != "ok")
    labels = ["ok"] + sorted(reasons)
    counts = [len(ok)] + [reasons[k] for k in labels[1:]]
    axes[3].barh(labels, counts, color=["#228833"] + ["#cc3311"] * len(reasons))
    axes[3].set_title(f"{len(rows)} clips by outcome")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def write_manifest(qc_paths: list[str | Path], out_tsv: str | Path, out_json: str | Path, out_png: str | Path):
    """Merge the shards' QC tables into the manifest, with a JSON summary and a PNG plot."""
    rows = read_qc(qc_paths)
    out_tsv = Path(out_tsv)
    out_tsv.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_tsv.with_name(out_tsv.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        writer = csv.DictWriter(fh, QC_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(out_tsv)
    summary = summarize(rows)
    Path(out_json).write_text(json.dumps(summary, indent=2) + "\n")
    plot_qc(rows, out_png)
    return summary

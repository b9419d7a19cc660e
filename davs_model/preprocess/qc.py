"""The QC manifest: every clip's row from every shard, a summary and a plot."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from davs_model.preprocess.pipeline import QC_COLUMNS


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

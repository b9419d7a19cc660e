"""Reliability on bad inputs: generate the bad-input corpus, run the workflow over it, print the outcome table.

The per-clip kinds go through one real `snakemake preprocess` (a folder source mixing them with good clips); the
corrupted shard is read back with ShardReader; each bad config gets a `snakemake --dry-run`. Prints a Markdown
table (kind -> outcome, reason, message excerpt, whether it is the documented outcome) and the counts: tried,
classified (a clear QC row or error), crashed (an exception escaping or the run dying), good clips lost.

    python bench/reliability_table.py [--long-seconds 60] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from davs_model.io.shards import ShardError, ShardReader  # noqa: E402
from tests.bad_inputs import Case, make_corpus  # noqa: E402


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = ["snakemake", "--snakefile", str(REPO / "workflow/Snakefile"), "--directory", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)


def short(text: str, root: Path, n: int = 110) -> str:
    text = text.replace(str(root) + "/", "").replace("|", "\\|")
    return text if len(text) <= n else text[: n - 1] + "…"


def clip_outcomes(root: Path, clips: list[Case]) -> tuple[list[dict], float]:
    """One `snakemake preprocess` over the folder source; a row per clip case."""
    (root / "config.yaml").write_text(
        f"sources:\n  bad: {{kind: folder, root: '{root / 'videos'}'}}\npreprocess:\n  shards: {{train: 2}}\n"
    )
    start = time.perf_counter()
    proc = snakemake(root, "--cores", "2", "preprocess")
    seconds = time.perf_counter() - start
    manifest = root / "results/qc/manifest.tsv"
    if proc.returncode != 0 or not manifest.exists():
        print(proc.stderr[-3000:], file=sys.stderr)
        return [dict(case=c, status="run died", crashed=True) for c in clips], seconds
    with open(manifest, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        rows = {r["path"]: r for r in csv.DictReader(fh, delimiter="\t")}
    in_shards = {cid for p in (root / "results/shards").glob("*/*.h5") for cid in ShardReader(p).clip_ids}
    out = []
    for c in clips:
        row = rows.get(str(c.path))
        if row is None:
            out.append(dict(case=c, status="no QC row", crashed=False))
            continue
        code, _, message = row["reason"].partition(": ")
        out.append(
            dict(
                case=c,
                status=row["status"],
                reason=code,
                text=message if row["status"] != "ok" else f"{row['frames']} frames; {row['notes']}".strip("; "),
                classified=row["status"] == "ok" or (row["status"] == "rejected" and len(message) > 20),
                documented=row["status"] == c.status and (c.status == "ok" or code == c.reason),
                lost=c.good and (row["status"] != "ok" or row["clip_id"] not in in_shards),
                crashed=False,
            )
        )
    return out, seconds


def shard_outcome(case: Case) -> dict:
    reader = ShardReader(case.path)
    try:
        for i in range(len(reader)):
            reader.clip(i)
    except ShardError as e:
        clear = case.path.name in str(e) and "snakemake preprocess" in str(e)
        return dict(case=case, status="error", reason="ShardError", text=str(e), classified=clear, documented=True)
    except Exception as e:  # noqa: BLE001 - what the table counts as a crash
        return dict(case=case, status="crash", reason=type(e).__name__, text=str(e), crashed=True)
    return dict(case=case, status="read back silently", reason="", text="corruption not detected")


def config_outcome(case: Case) -> dict:
    proc = snakemake(case.path.parent, "--dry-run", "preprocess")
    out = proc.stdout + proc.stderr
    lines = [ln.strip() for ln in out.splitlines() if "preprocess." in ln]
    named = proc.returncode != 0 and bool(lines)
    return dict(
        case=case, status=f"exit {proc.returncode}", reason="WorkflowError" if named else "", classified=named,
        text=" ".join(lines) or out[-200:], documented=named, crashed="Traceback" in out,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--long-seconds", type=float, default=60.0, help="length of the long clip")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="davs bad inputs "))
    try:
        start = time.perf_counter()
        cases = make_corpus(root, long_seconds=args.long_seconds)
        made = time.perf_counter() - start
        results, run_s = clip_outcomes(root, [c for c in cases if c.level == "clip"])
        results += [shard_outcome(c) for c in cases if c.level == "shard"]
        results += [config_outcome(c) for c in cases if c.level == "config"]
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print("| kind | outcome | reason | message or notes (excerpt) | as documented |")
    print("|---|---|---|---|---|")
    for r in results:
        c, ok = r["case"], "yes" if r.get("documented") else "**no**"
        print(f"| {c.kind} | {r['status']} | {r.get('reason', '')} | {short(r.get('text', ''), root)} | {ok} |")
    good = [r for r in results if r["case"].good]
    print(
        f"\ntried {len(results)} kinds ({len(good)} good clips among them), "
        f"classified {sum(bool(r.get('classified')) for r in results)}, "
        f"crashed {sum(bool(r.get('crashed')) for r in results)}, "
        f"good clips lost {sum(bool(r.get('lost')) for r in good)}, "
        f"as documented {sum(bool(r.get('documented')) for r in results)}/{len(results)}"
    )
    print(f"corpus written in {made:.1f} s; `snakemake --cores 2 preprocess` over it: {run_s:.1f} s wall")


if __name__ == "__main__":
    main()

"""Scale of preprocessing LRW on a cluster: the DAG of an LRW-sized dataset, and the wall time on K nodes.

``dag``: builds an LRW-style tree of EMPTY files (lipread_mp4/<WORD>/<split>/<WORD>_<NNNNN>.mp4; 500 words,
default 978 train + 50 val + 50 test clips per word = 539,000 clips, LRW's 488,766 + 25,000 + 25,000 rounded up)
and a manifest TSV listing every one of them, then times ``snakemake -n preprocess`` on it under
``/usr/bin/time -v`` (wall time, peak memory). The files exist, so the catalog keeps every row and every file is
stat'ed (for the shard jobs' params fingerprint) exactly as with the real videos; only decoding would see that they
are empty, and a dry run never decodes. ``--kind lrw`` uses the tree itself as an LRW source instead of the
manifest. ``--snakefile`` times another version of the workflow (e.g. a copy of an older one) on the same tree.

    python bench/dag_scale.py dag [--root /tmp/dag_scale] [--kind manifest|lrw] [--repeats 3] [--cprofile out.prof]

``project``: the per-clip cost of a real preprocessing run, from its ``benchmarks/build_shard/*/*.tsv``
(Snakemake's benchmark of every shard job) and ``results/shards/*/index.json`` (clips per shard), and the jobs
and wall time for all of LRW on K CPU nodes of C cores (one single-threaded shard job per core).

    python bench/dag_scale.py project --run /tmp/davs-demo [--clips 539000] [--shards 256,16,16] [--cores 32]

``copies``: a run folder whose one shard job is LRW-sized in clips (a demo run's jobs have 5-12 clips, which the
job's start-up dominates): a manifest listing the demo clips ``--copies`` times under distinct clip ids, all in one
train shard, and its config.yaml. Then ``snakemake --directory OUT --cores 1 preprocess`` and
``project --run OUT``.

    python bench/dag_scale.py copies --out /tmp/longjob [--copies 10] [--demo resources/demo/lipread_mp4]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------- dag
def make_tree(root: Path, words: int, per_split: dict[str, int]) -> Path:
    """The LRW layout with empty files, and manifest.tsv listing them (made once; reused when complete)."""
    tree, manifest = root / "lipread_mp4", root / "manifest.tsv"
    n = words * sum(per_split.values())
    if manifest.exists() and sum(1 for _ in manifest.open()) == n + 1:
        return manifest
    t0 = time.perf_counter()
    names = [f"W{i:03d}" for i in range(words)]
    with open(manifest, "w", newline="") as fh:
        out = csv.writer(fh, delimiter="\t", lineterminator="\n")
        out.writerow(["path", "split", "label", "word"])
        for label, word in enumerate(names):
            for split, count in per_split.items():
                folder = tree / word / split
                folder.mkdir(parents=True, exist_ok=True)
                for k in range(1, count + 1):
                    rel = f"lipread_mp4/{word}/{split}/{word}_{k:05d}.mp4"
                    (root / rel).touch()
                    out.writerow([rel, split, label, word])
    print(f"made {n:,} empty files + {manifest} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return manifest


def time_dry_run(workdir: Path, cprofile: str | None, snakefile: Path) -> dict:
    """`snakemake -n preprocess` in workdir under /usr/bin/time -v: wall s, peak RSS MB, jobs per rule."""
    snakemake = [sys.executable, "-m", "snakemake"]
    if cprofile:
        snakemake = [sys.executable, "-m", "cProfile", "-o", cprofile, "-m", "snakemake"]
    cmd = ["/usr/bin/time", "-v", *snakemake, "--snakefile", str(snakefile)]
    cmd += ["--directory", str(workdir), "-n", "--cores", "1", "preprocess", "--quiet", "rules"]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, flags=re.M))
    if proc.returncode != 0 or "build_shard" not in jobs:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    err = proc.stderr
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", err).group(1)
    seconds = sum(float(x) * 60**i for i, x in enumerate(reversed(wall.split(":"))))
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1))
    return {"wall_s": seconds, "peak_rss_mb": rss_kb / 1024, "jobs": jobs}


def dag(args) -> None:
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    per_split = {"train": args.train, "val": args.val, "test": args.test}
    manifest = make_tree(root, args.words, per_split)
    n_train, n_val, n_test = (int(x) for x in args.shards.split(","))
    source = (
        "  lrw: {kind: manifest, path: manifest.tsv}\n"
        if args.kind == "manifest"
        else "  lrw: {kind: lrw, root: lipread_mp4}\n"
    )
    (root / "config.yaml").write_text(
        f"sources:\n{source}preprocess:\n  shards: {{train: {n_train}, val: {n_val}, test: {n_test}}}\n"
    )
    n = sum(1 for _ in manifest.open()) - 1
    runs = [
        time_dry_run(root, args.cprofile if i == 0 else None, Path(args.snakefile).resolve())
        for i in range(args.repeats)
    ]
    walls = [r["wall_s"] for r in runs]
    print(
        json.dumps(
            {
                "clips": n,
                "kind": args.kind,
                "shards": [n_train, n_val, n_test],
                "wall_s": walls,
                "wall_s_median": statistics.median(walls),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                "jobs": runs[0]["jobs"],
            },
            indent=1,
        )
    )


# ---------------------------------------------------------------------------------------------------- project
def _benchmarks(run: Path) -> list[dict]:
    """One row per shard job of a finished run: wall s, CPU s, peak RSS, clips (from the split's index.json)."""
    rows = []
    for split_dir in sorted((run / "benchmarks/build_shard").iterdir()):
        index = json.loads((run / f"results/shards/{split_dir.name}/index.json").read_text())
        clips_of = {Path(s["path"]).stem: s["n_clips"] for s in index["shards"]}
        for tsv in sorted(split_dir.glob("*.tsv")):
            with open(tsv) as fh:
                bench = next(csv.DictReader(fh, delimiter="\t"))
            if clips_of.get(tsv.stem):
                rows.append(
                    {
                        "clips": clips_of[tsv.stem],
                        "s": float(bench["s"]),
                        "cpu_s": float(bench["cpu_time"]),
                        "max_rss_mb": float(bench["max_rss"]),
                    }
                )
    if not rows:
        raise SystemExit(f"no benchmarks/build_shard/*/*.tsv with clips under {run}")
    return rows


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares y = a + b x: (a = per-job overhead, b = per-clip cost)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else my / mx
    return my - b * mx, b


def project(args) -> None:
    rows = _benchmarks(Path(args.run))
    clips = [r["clips"] for r in rows]
    total = sum(clips)
    wall_mean = sum(r["s"] for r in rows) / total
    cpu_mean = sum(r["cpu_s"] for r in rows) / total
    wall_a, wall_b = _fit(clips, [r["s"] for r in rows])
    cpu_a, cpu_b = _fit(clips, [r["cpu_s"] for r in rows])
    print(f"measured: {len(rows)} shard jobs, {total} clips ({min(clips)}-{max(clips)} per job); peak RSS "
          f"{max(r['max_rss_mb'] for r in rows):.0f} MB per job")  # fmt: skip
    print(f"  wall: {wall_mean:.3f} s/clip overall; fit {wall_b:.3f} s/clip + {wall_a:.2f} s/job")
    print(f"  CPU:  {cpu_mean:.3f} s/clip overall; fit {cpu_b:.3f} s/clip + {cpu_a:.2f} s/job")
    shard_bytes = sum(p.stat().st_size for p in Path(args.run).glob("results/shards/*/*.h5"))
    lrw_gb = shard_bytes * args.clips / total / 1e9
    print(f"  output: {shard_bytes / total / 1e3:.0f} kB of shard per clip ({lrw_gb:,.0f} GB for all clips)")
    # project with the marginal wall cost per clip (the fit's slope) plus the fixed cost of a job (start-up,
    # imports, detector load), both measured; --per-clip overrides the slope
    per_clip = wall_b if args.per_clip is None else args.per_clip
    shards = [int(x) for x in args.shards.split(",")]
    jobs = sum(shards)
    per_job = args.clips / jobs
    job_h = (per_job * per_clip + max(wall_a, 0.0)) / 3600
    print(f"LRW: {args.clips:,} clips in {jobs} shard jobs ({per_job:,.0f} clips, {job_h:.2f} h each at "
          f"{per_clip:.3f} s/clip + {max(wall_a, 0.0):.1f} s); {jobs * job_h:,.1f} core-hours")  # fmt: skip
    print(f"| CPU nodes ({args.cores} cores) | concurrent shard jobs | waves | projected wall time |")
    print("|---:|---:|---:|---:|")
    for nodes in args.nodes:
        slots = nodes * args.cores
        waves = math.ceil(jobs / slots)
        print(f"| {nodes} | {min(jobs, slots)} | {waves} | {waves * job_h * 60:.0f} min |")


# ---------------------------------------------------------------------------------------------------- copies
def copies(args) -> None:
    """manifest.tsv (the demo clips ``--copies`` times, distinct ids, split train) + config.yaml in ``--out``."""
    videos = sorted(Path(args.demo).resolve().glob("*/*/*.mp4"))  # <WORD>/<split>/<WORD>_<NNNNN>.mp4
    if not videos:
        raise SystemExit(f"no demo clips under {args.demo}: run `make demo` first")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    words = sorted({v.parent.parent.name for v in videos})
    with open(out / "manifest.tsv", "w", newline="") as fh:
        rows = csv.writer(fh, delimiter="\t", lineterminator="\n")
        rows.writerow(["path", "split", "label", "word", "clip_id"])
        for k in range(args.copies):
            for v in videos:
                word = v.parent.parent.name
                rows.writerow([v, "train", words.index(word), word, f"copy{k}/{v.parent.name}/{v.stem}"])
    (out / "config.yaml").write_text(
        "sources:\n  m: {kind: manifest, path: manifest.tsv}\npreprocess:\n  shards: {train: 1, val: 1, test: 1}\n"
    )
    print(f"{out}: {len(videos) * args.copies} clips in one shard job; now run\n"
          f"  snakemake --snakefile {REPO / 'workflow/Snakefile'} --directory {out} --cores 1 preprocess\n"
          f"  python bench/{Path(__file__).name} project --run {out}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    d = sub.add_parser("dag", help="time `snakemake -n preprocess` on an LRW-sized dataset")
    d.add_argument("--root", default="/tmp/dag_scale")
    d.add_argument("--kind", choices=["manifest", "lrw"], default="manifest")
    d.add_argument("--words", type=int, default=500)
    d.add_argument("--train", type=int, default=978, help="train clips per word")
    d.add_argument("--val", type=int, default=50)
    d.add_argument("--test", type=int, default=50)
    d.add_argument("--shards", default="256,16,16", help="shards of train,val,test")
    d.add_argument("--repeats", type=int, default=3)
    d.add_argument("--cprofile", help="write a cProfile of the first dry run here")
    d.add_argument("--snakefile", default=str(REPO / "workflow/Snakefile"), help="e.g. another version's")
    d.set_defaults(func=dag)
    p = sub.add_parser("project", help="jobs and wall time for LRW on K nodes, from a real run's benchmarks")
    p.add_argument("--run", required=True, help="folder of a finished `snakemake preprocess` run")
    p.add_argument("--clips", type=int, default=539_000)
    p.add_argument("--shards", default="256,16,16")
    p.add_argument("--cores", type=int, default=32, help="cores per CPU node")
    p.add_argument("--nodes", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    p.add_argument("--per-clip", type=float, help="seconds per clip to project with (default: the measured slope)")
    p.set_defaults(func=project)
    c = sub.add_parser("copies", help="a run folder with one LRW-sized shard job (the demo clips, copied)")
    c.add_argument("--out", default="/tmp/longjob")
    c.add_argument("--copies", type=int, default=10)
    c.add_argument("--demo", default=str(REPO / "resources/demo/lipread_mp4"))
    c.set_defaults(func=copies)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()

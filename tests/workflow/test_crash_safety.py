"""Crash safety of `snakemake preprocess` (issue 6): kill -9 at 10 random points, rerun, and the shards equal an
uninterrupted run's (content hash); a second run in the same folder is refused by Snakemake's lock; the run needs
no network; a changed or added video reruns exactly its shard (the videos are tracked by a params fingerprint).

One reference run (under `unshare -n` where the machine allows it) serves every test. Snakemake runs as a user
runs it from the repository root: with the auto-loaded workflow profile profiles/default (rerun-incomplete).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import REPO
from tests.workflow.helpers import local_env, snakemake_exe

pytestmark = pytest.mark.slow

# 4 clips in 2 shards: train/000 = mine/v1, mine/v3 (folder videos); train/001 = the two demo clips, whose
# videos the make_demo_data rule makes (so a kill can land in it too)
CONFIG = """
sources:
  demo: {kind: demo}
  mine: {kind: folder, root: videos, split: train}
demo: {words: [ABOUT, HOUSE], voices: [en], clips_per_word: {train: 1, val: 0, test: 0}, seed: 0}
preprocess: {shards: {train: 2}}
"""
KILLS, SEED = 10, 20240611
LOCKED = "Directory cannot be locked"


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _cmd(workdir: Path, *args: str) -> list[str]:
    return [
        snakemake_exe(),
        *("--snakefile", str(REPO / "workflow/Snakefile"), "--directory", str(workdir)),
        *("--workflow-profile", str(REPO / "profiles/default")),
        *args,
    ]


def _run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = local_env()
    proc = subprocess.run(_cmd(workdir, *args), cwd=workdir, capture_output=True, text=True, timeout=600, env=env)
    proc.output = proc.stdout + proc.stderr
    return proc


def _start(workdir: Path, log: Path, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    """`snakemake preprocess` in its own process group (so kill -9 reaches every job it started)."""
    cmd, env = [*prefix, *_cmd(workdir, "preprocess")], local_env()
    with open(log, "w") as fh:
        return subprocess.Popen(
            cmd, cwd=workdir, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )


def content_hash(path: Path) -> str:
    """BLAKE2b of an HDF5 file's content: every group and dataset (sorted by name), its dtype, shape and data
    bytes (vlen elements length-prefixed), and every attribute in sorted order, except the root's write time
    `created`. File bytes would differ between two identical runs by that time and HDF5's own layout choices."""
    digest = hashlib.blake2b()

    def add(*parts: object) -> None:
        for part in parts:
            b = part if isinstance(part, bytes) else repr(part).encode()
            digest.update(len(b).to_bytes(8, "little") + b)

    with h5py.File(path, "r") as f:
        names: list[str] = []
        f.visit(names.append)
        for name in ["/", *sorted(names)]:
            obj = f[name]
            add(name, type(obj).__name__)
            for key in sorted(obj.attrs):
                if not (name == "/" and key == "created"):
                    add(key, obj.attrs[key])
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                add(str(obj.dtype), obj.shape)
                if isinstance(data, np.ndarray) and data.dtype == object:
                    for item in data.ravel():
                        add(item if isinstance(item, bytes) else np.asarray(item).tobytes())
                else:
                    add(np.asarray(data).tobytes())
    return digest.hexdigest()


def _state(workdir: Path) -> dict:
    """What must equal the reference: the files under results/ and resources/ (a stray temporary file shows up
    here), shard content hashes, the QC manifest without its timing column, the indexes and the QC summary."""
    files = sorted(str(p.relative_to(workdir)) for d in ("results", "resources") for p in (workdir / d).rglob("*"))
    with open(workdir / "results/qc/manifest.tsv", newline="") as fh:
        qc = [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh, delimiter="\t")]
    shards = sorted(workdir.glob("results/shards/*/*.h5"))
    tables = [*sorted(workdir.glob("results/shards/*/index.json")), workdir / "results/qc/summary.json"]
    return {
        "files": files,
        "hashes": {str(p.relative_to(workdir)): content_hash(p) for p in shards},
        "qc": qc,
        "json": {str(p.relative_to(workdir)): json.loads(p.read_text()) for p in tables},
    }


def _incomplete(workdir: Path) -> list[str]:
    """Outputs Snakemake had marked incomplete (jobs running) when it was killed."""
    folder = workdir / ".snakemake/incomplete"
    return sorted(base64.urlsafe_b64decode(p.name).decode() for p in folder.iterdir()) if folder.is_dir() else []


def _locked(workdir: Path) -> bool:
    folder = workdir / ".snakemake/locks"
    return folder.is_dir() and any(folder.iterdir())


@dataclass
class Reference:
    workdir: Path
    seconds: float
    no_network: bool
    state: dict
    second: subprocess.CompletedProcess
    first_running: bool  # the first run was still going when the second one was refused


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    from davs_model.demo.dataset import DemoConfig, make_demo_clip

    root = tmp_path_factory.mktemp("crash")
    cfg = DemoConfig(words=("MONEY",), voices=("en",), clips_per_word={"train": 1}, seed=7)
    video = make_demo_clip(cfg, "MONEY", "train", 1, root / "made/MONEY.mp4")
    workdir = root / "reference"
    (workdir / "videos").mkdir(parents=True)
    (workdir / "config.yaml").write_text(CONFIG)
    for name in ("v1.mp4", "v3.mp4"):
        shutil.copy2(video, workdir / "videos" / name)
    no_network = _unshare_works()
    t0 = time.monotonic()
    first = _start(workdir, root / "reference.log", ("unshare", "-n") if no_network else ())
    # issue 6: a second run in the same folder, once the first holds the lock, is refused
    while not _locked(workdir) and first.poll() is None:
        time.sleep(0.1)
    second = _run(workdir, "preprocess")
    first_running = first.poll() is None
    rc = first.wait(timeout=600)
    seconds = time.monotonic() - t0
    log = (root / "reference.log").read_text()
    assert rc == 0, log[-6000:]
    return Reference(workdir, seconds, no_network, _state(workdir), second, first_running)


def test_reference_run_needs_no_network(reference):
    if not reference.no_network:
        pytest.skip("`unshare -n` is not allowed here (needs root or user namespaces): ran with the network")
    assert reference.state["json"]["results/qc/summary.json"]["ok"] == 4
    assert len(reference.state["hashes"]) == 2  # both shards hold clips


def test_second_run_in_the_same_folder_is_refused(reference):
    assert reference.first_running, "the first run ended before the second one was refused: inconclusive"
    assert reference.second.returncode != 0
    assert LOCKED in reference.second.output and "--unlock" in reference.second.output, reference.second.output


def test_kill_9_at_random_points_then_rerun_equals_uninterrupted(reference, tmp_path):
    """A chain of runs in one folder, each killed (kill -9 of its process group) at a random time within the
    duration of a whole run (the reference's at first, then that of the last run here that started from an empty
    results/ and finished: the demo videos are made once); the next run is the rerun. A run that finishes before
    its kill is compared with the reference and its results/ deleted (the videos stay). A final run completes; it
    must equal the reference."""
    rng = random.Random(SEED)
    workdir = tmp_path / "work"
    (workdir / "videos").mkdir(parents=True)
    (workdir / "config.yaml").write_text(CONFIG)
    for p in (reference.workdir / "videos").iterdir():
        shutil.copy2(p, workdir / "videos" / p.name)
    events, interrupted, unlocked, span, fresh = [], 0, False, reference.seconds, False
    for k in range(KILLS):
        at = rng.uniform(0.05, 1.0) * span
        t0, proc, started_fresh, fresh = time.monotonic(), _start(workdir, tmp_path / f"run{k}.log"), fresh, False
        try:
            rc = proc.wait(timeout=at)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            running = _incomplete(workdir)
            interrupted += bool(running)
            events.append(f"kill {k} at {at:.1f} s: running {running or 'nothing'}, lock left: {_locked(workdir)}")
            if _locked(workdir):  # the documented path (README, Troubleshooting)
                if not unlocked:
                    refused = _run(workdir, "preprocess")
                    assert refused.returncode != 0 and LOCKED in refused.output, refused.output[-3000:]
                assert _run(workdir, "--unlock").returncode == 0
                unlocked = True
            continue
        log = (tmp_path / f"run{k}.log").read_text()
        assert rc == 0, f"{events}\n{log[-6000:]}"
        events.append(f"run {k} finished before its kill at {at:.1f} s")
        if started_fresh:
            span = time.monotonic() - t0
        assert _state(workdir) == reference.state, events
        shutil.rmtree(workdir / "results")
        fresh = True
    final = _run(workdir, "preprocess")
    assert final.returncode == 0, f"{events}\n{final.output[-6000:]}"
    print("\n".join(events))
    assert interrupted >= 1, f"no kill landed while a job ran: {events}"
    state = _state(workdir)
    assert state["files"] == reference.state["files"], events  # no stray temporary file, nothing missing
    assert state == reference.state, events
    assert not list(workdir.glob("**/*.tmp*")), events


def _planned_shards(proc: subprocess.CompletedProcess) -> list[str]:
    return sorted(set(re.findall(r"output: (results/shards/\w+/\d{3})\.h5", proc.output)))


def test_changed_or_added_video_reruns_only_its_shard(reference, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(reference.workdir, workdir, symlinks=True)  # copy2: mtimes kept, so is Snakemake's metadata
    assert "Nothing to be done" in _run(workdir, "-n", "preprocess").output
    video = workdir / "videos/v3.mp4"  # shard train/000
    st = video.stat()
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: same bytes, newer
    plan = _run(workdir, "-n", "preprocess")
    assert _planned_shards(plan) == ["results/shards/train/000"], plan.output[-3000:]
    assert "Params have changed" in plan.output
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert "Nothing to be done" in _run(workdir, "-n", "preprocess").output
    shutil.copy2(workdir / "videos/v1.mp4", workdir / "videos/v5.mp4")  # a new clip, in shard train/001
    plan = _run(workdir, "-n", "preprocess")
    assert _planned_shards(plan) == ["results/shards/train/001"], plan.output[-3000:]

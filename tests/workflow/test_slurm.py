"""End to end through a REAL Slurm: munge + slurmctld + slurmd (Debian packages), one node on localhost, started
by tools/slurm-local/start_slurm.sh and stopped (by recorded PIDs) when the test session ends.

The workflow runs exactly as on a cluster, through snakemake-executor-plugin-slurm, with our profile and the
one-node overlay: `snakemake … --profile profiles/slurm --profile tools/slurm-local/profile`. Skipped, with the
reason, where Slurm cannot be set up (not root, no apt-get, no Debian mirror).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.workflow.helpers import snakemake_exe

pytestmark = pytest.mark.slow

TOOLS = REPO / "tools/slurm-local"
# its own state folder: never the daemons of a cluster someone started by hand with the default /tmp/slurm
SLURM_DIR = Path(os.environ.get("DAVS_TEST_SLURM_DIR", "/tmp/davs-test-slurm"))
PROFILES = ["--profile", str(REPO / "profiles/slurm"), "--profile", str(TOOLS / "profile")]
TINY = """
model: {image_size: 64, width: 0.125, n_words: 0}
train: {device: DEVICE, gpus: GPUS, pretrain: {steps: 6, batch_size: 4}, main: {steps: 30, batch_size: 4},
        checkpoint_every: 2, num_workers: 0, log_every: 1, sample_every: 1000}
"""
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


@dataclass
class Cluster:
    env: dict
    gpus: int  # fake GPUs the node advertises (0 where they could not be set up)


@dataclass
class Run:
    workdir: Path
    proc: subprocess.CompletedProcess
    seconds: float


def _live_pids() -> bool:
    """True when the state folder records daemons that are still running (someone else's cluster: leave it up)."""
    pids = SLURM_DIR / "started.pids"
    if not pids.exists():
        return False
    for line in pids.read_text().split("\n"):
        if line.strip():
            name, pid = line.split()
            comm = Path(f"/proc/{pid}/comm")
            if comm.exists() and comm.read_text().startswith(name[:15]):
                return True
    return False


@pytest.fixture(scope="session")
def slurm() -> Cluster:
    if os.geteuid() != 0:
        pytest.skip("a local Slurm needs root (tools/slurm-local/start_slurm.sh installs and starts the daemons)")
    if not shutil.which("apt-get") and not shutil.which("slurmctld"):
        pytest.skip("no Slurm installed and no apt-get to install it (Debian packages munge, slurmctld, slurmd)")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("the workflow's training jobs ask for 2 CPUs; this machine has 1")
    was_up = _live_pids()
    env = dict(os.environ, SLURM_LOCAL_DIR=str(SLURM_DIR), SLURM_WAIT_S="90")
    gpus = 1
    start = subprocess.run(
        [str(TOOLS / "start_slurm.sh")], env={**env, "SLURM_FAKE_GPUS": "1"}, capture_output=True, text=True
    )
    if start.returncode == 1:  # e.g. no mknod for the fake GPU device: try a CPU-only node
        warnings.warn(
            f"no fake GPU on the local Slurm, GPU requests untested:\n{start.stderr[-1500:]}", stacklevel=1
        )
        gpus = 0
        start = subprocess.run([str(TOOLS / "start_slurm.sh")], env=env, capture_output=True, text=True)
    if start.returncode in (2, 3):
        pytest.skip(f"Slurm cannot be set up here:\n{start.stderr[-2000:]}")
    assert start.returncode == 0, f"start_slurm.sh failed:\n{start.stderr[-4000:]}"
    yield Cluster(env=env, gpus=gpus)
    _cancel_our_jobs()
    if not was_up:
        stop = subprocess.run([str(TOOLS / "stop_slurm.sh")], env=env, capture_output=True, text=True)
        assert stop.returncode == 0, stop.stderr


def _cancel_our_jobs() -> None:
    """Cancel jobs left by a failed test (only those whose working directory is one of our scratch folders)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i %Z"], capture_output=True, text=True).stdout
    ours = [ln.split()[0] for ln in out.splitlines() if "slurm_run" in ln]
    if ours:
        subprocess.run(["scancel", *ours], check=False)


def _cmd(workdir: Path, *targets: str) -> list[str]:
    """snakemake as typed from a repository root: our Slurm profile + the workflow profile profiles/default."""
    return [
        snakemake_exe(),
        "--snakefile",
        str(REPO / "workflow/Snakefile"),
        "--directory",
        str(workdir),
        "--workflow-profile",
        str(REPO / "profiles/default"),
        *PROFILES,
        *targets,
    ]


def _submissions(output: str) -> list[tuple[str, str]]:
    """(rule, Slurm job id) of every job the plugin submitted, from its `submitted with SLURM jobid` lines."""
    found = []
    for _, slurm_id, log in SUBMITTED.findall(output):
        rule = next(part[5:] for part in Path(log).parts if part.startswith("rule_"))
        found.append((rule, slurm_id))
    return found


def _jobcomp() -> dict[str, dict[str, str]]:
    """Slurm's own log of every finished job (jobcomp/filetxt): job id → fields (JobState, WorkDir, …)."""
    path = SLURM_DIR / "log/jobcomp.txt"
    records = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        records[fields["JobId"]] = fields
    return records


def _scontrol(job_id: str) -> dict[str, str]:
    """slurmctld's record of a job (kept MinJobAge = 1 h after it ends): JobState, NumCPUs, TresPerJob, …"""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True)
    return dict(kv.split("=", 1) for kv in out.stdout.split() if "=" in kv)


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"snakemake exited ({proc.returncode}) before {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def slurm_run(slurm, tmp_path_factory) -> Run:
    """`snakemake preprocess train` on the tiny configuration, every job through Slurm."""
    workdir = tmp_path_factory.mktemp("slurm_run")
    device, gpus = ("auto", 1) if slurm.gpus else ("cpu", 0)  # fake GPU: Slurm schedules it, torch uses the CPU
    tiny = TINY.replace("DEVICE", device).replace("GPUS", str(gpus))
    (workdir / "config.yaml").write_text((REPO / ".test/config.yaml").read_text() + tiny)
    t0 = time.monotonic()
    proc = subprocess.run(
        _cmd(workdir, "preprocess", "train"), cwd=workdir, capture_output=True, text=True, timeout=1800
    )
    return Run(workdir, proc, time.monotonic() - t0)


def test_preprocess_and_train_go_through_slurm(slurm, slurm_run):
    out = slurm_run.proc.stdout + slurm_run.proc.stderr
    assert slurm_run.proc.returncode == 0, out[-8000:]
    work = slurm_run.workdir
    assert (work / "results/train/main/model.safetensors").stat().st_size > 0
    assert (work / "results/qc/manifest.tsv").exists()

    jobs = _submissions(out)
    rules = sorted(rule for rule, _ in jobs)
    # one Slurm job per shard (tiny config: 2 train + 1 val + 1 test), the demo data and the two training
    # stages; index_shards and qc_manifest are local rules and run on the submitting host
    assert rules == sorted(["make_demo_data", *["build_shard"] * 4, "pretrain_association", "train_gan"]), out
    records = _jobcomp()
    for rule, slurm_id in jobs:
        assert records.get(slurm_id, {}).get("JobState") == "COMPLETED", (rule, slurm_id, records.get(slurm_id))
        job = _scontrol(slurm_id)
        assert job["JobState"] == "COMPLETED" and Path(job["WorkDir"]) == work, job
        # the plugin's per-job Slurm log (kept by the local overlay), written by Slurm on the node
        assert list((work / "logs/slurm").glob(f"rule_{rule}/**/{slurm_id}.log")), rule
        if rule in ("pretrain_association", "train_gan"):
            # threads from the rule (capped by the overlay's set-threads), not the submitting host's `cores`
            assert job["NumCPUs"] == "2", job
            if slurm.gpus:  # resources: gpu=1 → sbatch --gpus=1
                assert job.get("TresPerJob") == "gres:gpu:1", job
        if rule == "build_shard":
            assert job["NumCPUs"] == "1" and "gpu" not in job.get("TresPerJob", ""), job
    # shards are written to a temporary file and renamed: nothing half-written is left
    assert not list((work / "results/shards").rglob("*.tmp*"))


def _last_step(stats: Path) -> int:
    if not stats.exists():
        return 0
    lines = [ln for ln in stats.read_text().splitlines() if ln.strip()]
    return json.loads(lines[-1])["step"] if lines else 0


def test_cancelled_training_job_is_retried_and_resumes(slurm, slurm_run):
    """scancel the running train_gan job: Snakemake resubmits it (profile `retries`) and the new job continues
    from the state saved in results/train/main/work/ instead of starting over."""
    assert slurm_run.proc.returncode == 0, "needs the trained workdir of the previous test"
    work = slurm_run.workdir
    shutil.rmtree(work / "results/train/main")  # train stage 2 again, with the shards and stage 1 in place
    shutil.rmtree(work / "logs/train_gan")
    stats = work / "results/train/main/work/stats.jsonl"
    state = work / "results/train/main/work/state.pt"
    output = work / "retry.out"
    with open(output, "w") as out_fh:
        proc = subprocess.Popen(_cmd(work, "train"), cwd=work, stdout=out_fh, stderr=subprocess.STDOUT, text=True)
    try:
        first = _wait_for(lambda: _submissions(output.read_text()), 600, "the train_gan submission", proc)
        assert [rule for rule, _ in first] == ["train_gan"], first
        killed_job = first[0][1]
        # a checkpoint is written every 2 steps: once step 3 is logged, state.pt holds step >= 2
        _wait_for(lambda: _last_step(stats) >= 3, 600, "training step 3", proc)
        assert state.exists()
        subprocess.run(["scancel", killed_job], check=True)
        proc.wait(timeout=1200)  # minutes on an idle machine; generous for a busy one
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    text = output.read_text()
    assert proc.returncode == 0, text[-8000:]
    jobs = _submissions(text)
    assert [rule for rule, _ in jobs] == ["train_gan", "train_gan"], text[-8000:]
    assert _scontrol(killed_job)["JobState"] == "CANCELLED"
    assert _scontrol(jobs[1][1])["JobState"] == "COMPLETED"
    assert _jobcomp()[killed_job]["JobState"] == "CANCELLED"
    assert "Trying to restart job" in text
    # the cancelled job's Slurm log (kept for failed jobs): training caught SIGTERM, saved and exited with 143
    killed_log = next((work / "logs/slurm/rule_train_gan").rglob(f"{killed_job}.log")).read_text()
    assert "returned non-zero exit status 143" in killed_log, killed_log[-3000:]

    log = (work / "logs/train_gan/train_gan.log").read_text()
    resumed = [int(m) for m in re.findall(r"resumed main from \S+ at step (\d+)", log)]
    assert resumed and 0 < resumed[-1] < 30, log[-3000:]
    # stats.jsonl: one line per step 1..30, the resumed run continuing where the saved state stopped
    steps = [json.loads(ln)["step"] for ln in stats.read_text().splitlines() if ln.strip()]
    assert steps == list(range(1, 31)), steps
    assert (work / "results/train/main/model.safetensors").stat().st_size > 0

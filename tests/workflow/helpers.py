"""Run the workflow in a scratch folder, as a user would from a repository root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.conftest import REPO


def snakemake_exe() -> str:
    exe = shutil.which("snakemake", path=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    if exe is None:
        raise RuntimeError("snakemake not installed: run `make test` (it installs the [workflow] extra)")
    return exe


_STUB_DIR: Path | None = None


def local_env() -> dict[str, str]:
    """The environment with a failing `scontrol` first on PATH, for runs that never use Slurm. Only for speed: the
    Slurm executor plugin runs `scontrol show config` whenever snakemake starts, and where a Slurm client is
    installed without a running controller (as on our test machines after the Slurm tests) that waits ~9 s."""
    global _STUB_DIR
    if _STUB_DIR is None:
        _STUB_DIR = Path(tempfile.mkdtemp(prefix="davs-noslurm-"))
        stub = _STUB_DIR / "scontrol"
        stub.write_text("#!/bin/sh\nexit 1\n")
        stub.chmod(0o755)
    return {**os.environ, "PATH": f"{_STUB_DIR}{os.pathsep}{os.environ['PATH']}"}


def run_snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 900):
    """`snakemake` with the repository's Snakefile, in ``workdir`` (which holds config.yaml)."""
    cmd = [
        snakemake_exe(),
        "--snakefile",
        str(REPO / "workflow/Snakefile"),
        "--directory",
        str(workdir),
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir, env=local_env())
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n"
            f"--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc

"""Run the workflow in a scratch folder, as a user would from a repository root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def snakemake_exe() -> str:
    exe = shutil.which("snakemake", path=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    if exe is None:
        raise RuntimeError("snakemake not installed: run `make test` (it installs the [workflow] extra)")
    return exe


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
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n"
            f"--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc

"""The Slurm profile, its installation as the user's `slurm` profile, and the workflow profile's `cores` (set for
local runs only, so that it never caps a cluster run). Fast: no cluster needed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO
from tests.workflow.helpers import snakemake_exe

INSTALL = REPO / "tools/install_slurm_profile.sh"
SLURM_PROFILE = REPO / "profiles/slurm/config.yaml"


def _install(home: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    environ.update(HOME=str(home), XDG_CONFIG_DIRS=str(home / "site"), **env)
    return subprocess.run([str(INSTALL)], env=environ, capture_output=True, text=True, check=True)


def test_slurm_profile_has_the_cluster_keys_each_commented():
    profile = yaml.safe_load(SLURM_PROFILE.read_text())
    assert profile["executor"] == "slurm"
    assert profile["jobs"] >= 1 and profile["latency-wait"] >= 10
    assert profile["retries"] >= 1  # training resumes from its work dir on a retry
    assert {"mem_mb", "runtime"} <= set(profile["default-resources"])
    assert "cores" not in profile and "resources" not in profile  # no caps: the rules carry their needs
    for line in SLURM_PROFILE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert "#" in line, f"profiles/slurm/config.yaml: say why on the line itself: {line!r}"


def test_install_copies_the_profile_when_the_user_has_none(tmp_path):
    proc = _install(tmp_path)
    installed = tmp_path / ".config/snakemake/slurm/config.yaml"
    assert installed.read_text() == SLURM_PROFILE.read_text()
    assert "installed profiles/slurm" in proc.stdout
    again = _install(tmp_path)  # idempotent
    assert "up to date" in again.stdout


def test_install_never_touches_an_existing_profile(tmp_path):
    mine = tmp_path / ".config/snakemake/slurm/config.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text("executor: slurm\njobs: 7\n")
    proc = _install(tmp_path)
    assert mine.read_text() == "executor: slurm\njobs: 7\n"
    assert "--profile profiles/slurm" in proc.stdout
    # an edited copy of ours is left alone as well
    ours = tmp_path / "other"
    _install(ours)
    edited = ours / ".config/snakemake/slurm/config.yaml"
    edited.write_text(edited.read_text() + "slurm-qos: long  # mine\n")
    proc = _install(ours)
    assert "left as it is" in proc.stdout and edited.read_text().endswith("mine\n")


def test_install_respects_a_site_profile(tmp_path):
    site = tmp_path / "site/snakemake/slurm/config.yaml"
    site.parent.mkdir(parents=True)
    site.write_text("executor: slurm\n")
    proc = _install(tmp_path)
    assert not (tmp_path / ".config/snakemake/slurm").exists()
    assert str(site.parent) in proc.stdout


def _default_profile_keys(argv: list[str], monkeypatch, cwd: Path, env: dict | None = None) -> dict:
    """The keys profiles/default gives Snakemake for a command line `snakemake <argv>` run in cwd."""
    from snakemake.profiles import ProfileConfigFileParser

    monkeypatch.setattr(sys, "argv", ["snakemake", *argv])
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("SNAKEMAKE_PROFILE", raising=False)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    with open(REPO / "profiles/default/config.yaml") as fh:
        return dict(ProfileConfigFileParser().parse(fh))


def test_workflow_profile_sets_cores_for_local_runs_only(tmp_path, monkeypatch):
    home = tmp_path / "home"
    _install(home)
    local = tmp_path / "mylocal"
    local.mkdir()
    (local / "config.yaml").write_text("cores: 3\nkeep-going: true\n")
    cases = {
        (): "all",
        ("render_samples",): "all",
        ("--profile", str(local)): "all",  # a profile without an executor is a local run
        ("train", "--profile", "slurm"): None,  # the installed profile, found by name
        ("--profile", str(REPO / "profiles/slurm")): None,
        (f"--profile={REPO / 'profiles/slurm'}",): None,
        ("--executor", "slurm", "--jobs", "4"): None,
        ("-e", "slurm"): None,
        ("--profile", str(REPO / "profiles/slurm"), "--profile", str(REPO / "tools/slurm-local/profile")): None,
    }
    for argv, cores in cases.items():
        keys = _default_profile_keys(list(argv), monkeypatch, tmp_path, {"HOME": str(home)})
        assert keys.get("cores") == cores, argv
        assert keys["rerun-incomplete"] == "True"
        assert "resources" not in keys and "jobs" not in keys  # would override the cluster profile's
    keys = _default_profile_keys([], monkeypatch, tmp_path, {"HOME": str(home), "SNAKEMAKE_PROFILE": "slurm"})
    assert "cores" not in keys


def test_snakemake_train_profile_slurm_as_typed(tmp_path):
    """`snakemake -n train --profile slurm` from a repository root: found by name once the set-up installed it
    (and refused before), with the workflow profile on top."""
    home = tmp_path / "home"
    home.mkdir()
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("workflow", "profiles"):
        (root / name).symlink_to(REPO / name)
    shutil.copy(REPO / ".test/config.yaml", root / "config.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "SNAKEMAKE_"))}
    env["HOME"] = str(home)
    cmd = [snakemake_exe(), "-n", "train", "--profile", "slurm"]
    before = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    assert before.returncode != 0 and "no profile.yaml (or config.yaml) found" in before.stderr
    _install(home)
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert "Using profiles slurm and workflow specific profile profiles/default" in out
    assert "train_gan" in out and "slurm_extra=--signal=TERM@300" in out

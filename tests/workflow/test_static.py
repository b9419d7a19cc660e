"""The workflow is formatted and lint-clean, and every target dry-runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.workflow.helpers import local_env, run_snakemake, snakemake_exe


def _tool(name: str) -> str:
    exe = shutil.which(name, path=str(Path(sys.executable).parent))
    if exe is None:
        exe = shutil.which(name)
    if exe is None:
        pytest.fail(f"{name} is not installed: run `make test`, which installs the [dev] extra")
    return exe


def test_snakefmt_clean():
    proc = subprocess.run([_tool("snakefmt"), "--check", "workflow/"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakemake_lint_clean():
    proc = subprocess.run(
        [snakemake_exe(), "--lint", "--cores", "1"], cwd=REPO, capture_output=True, text=True, env=local_env()
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_package_never_imports_snakemake():
    offenders = [
        str(p.relative_to(REPO))
        for p in (REPO / "davs_model").rglob("*.py")
        if "import snakemake" in p.read_text() or "from snakemake" in p.read_text()
    ]
    assert offenders == []


def test_dry_run_shows_the_whole_plan(tmp_path):
    (tmp_path / "config.yaml").write_text((REPO / ".test/config.yaml").read_text())
    proc = run_snakemake(tmp_path, "-n", "--cores", "1", "preprocess", "--quiet", "rules")
    out = proc.stdout + proc.stderr
    # tiny config: demo data (1 job), 2 train + 1 val + 1 test shards, 3 indexes, 1 QC manifest, the target
    for rule, count in [
        ("make_demo_data", 1),
        ("build_shard", 4),
        ("index_shards", 3),
        ("qc_manifest", 1),
    ]:
        line = next((ln for ln in out.splitlines() if ln.strip().startswith(rule)), "")
        assert line.split()[1:2] == [str(count)], out


def test_unknown_config_key_fails_the_dry_run(tmp_path):
    (tmp_path / "config.yaml").write_text("preprocess:\n  jpeg_qualty: 90\n")
    proc = run_snakemake(tmp_path, "-n", "--cores", "1", "preprocess", check=False)
    assert proc.returncode != 0
    assert "jpeg_qualty" in proc.stdout + proc.stderr


def test_package_never_unpickles_arbitrary_objects():
    """Safe loading (issue 6): no pickle.load(s) call, every torch.load passes weights_only=True, no np.load with
    allow_pickle=True (read from the syntax tree, so docstrings and comments do not count)."""
    import ast

    def kw(call: ast.Call, name: str):
        values = [k.value.value for k in call.keywords if k.arg == name and isinstance(k.value, ast.Constant)]
        return values[0] if values else None

    offenders = []
    for path in (REPO / "davs_model").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
            name = f"{owner}.{node.func.attr}"
            if (
                name in ("pickle.load", "pickle.loads")
                or (name == "torch.load" and kw(node, "weights_only") is not True)
                or (name == "np.load" and kw(node, "allow_pickle") is True)
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
    assert offenders == []
    assert len([p for p in (REPO / "davs_model").rglob("*.py") if "torch.load(" in p.read_text()]) >= 3  # it looks

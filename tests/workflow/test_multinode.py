"""Training over several nodes (train.nodes > 1): the rule's Slurm request and the launcher's srun + torchrun
command. There is one node here, so the job itself is not run; what sbatch is given is checked through the Slurm
executor plugin's own submit-string builder."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import yaml

from davs_model.training.launch import RDZV_PORT, multinode_command
from tests.conftest import REPO
from tests.workflow.helpers import run_snakemake


def planned_resources(tmp_path, train: dict) -> dict:
    """The resources `snakemake -n train_gan` plans for the training job under the tiny config + ``train``."""
    config = yaml.safe_load((REPO / ".test/config.yaml").read_text())
    config["train"].update(train)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    out = run_snakemake(tmp_path, "-n", "--cores", "1", "train_gan").stdout
    block = out[out.index("rule train_gan:") :]
    line = next(ln for ln in block.splitlines() if ln.strip().startswith("resources:"))
    pairs = re.findall(r"(\w+)=(.*?)(?=, \w+=|$)", line.split("resources:", 1)[1].strip())
    return {k: int(v) if v.isdigit() else v for k, v in pairs}


class FakeResources(dict):
    __getattr__ = dict.get


def sbatch_call(resources: dict, threads: int) -> str:
    """The sbatch command line the Slurm executor plugin builds for a job with these resources."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    job = SimpleNamespace(resources=FakeResources(resources), threads=threads)
    params = {"run_uuid": "u", "slurm_logfile": "log", "comment_str": "c", "account": "", "partition": "",
              "workdir": None}  # fmt: skip
    return get_submit_command(job, params) + set_gres_string(job)  # as the plugin composes its sbatch call


def test_two_nodes_ask_for_gpus_per_node_and_one_task_each(tmp_path):
    res = planned_resources(tmp_path, {"device": "cuda", "gpus": 4, "nodes": 2})
    assert res["nodes"] == 2 and res["gres"] == "gpu:4" and "gpu" not in res
    call = sbatch_call(res, threads=16)
    assert "--nodes=2" in call and "--gres=gpu:4" in call and "--ntasks-per-node=1" in call, call
    assert "--gpus" not in call and "--ntasks-per-gpu" not in call and "--signal=TERM@300" in call, call


def test_one_node_keeps_the_plain_gpu_request(tmp_path):
    res = planned_resources(tmp_path, {"device": "cuda", "gpus": 2, "nodes": 1})
    assert res["gpu"] == 2 and "nodes" not in res and "gres" not in res
    call = sbatch_call(res, threads=8)
    assert "--gpus=2" in call and "--nodes" not in call, call


def test_cpu_configuration_ignores_nodes(tmp_path):
    res = planned_resources(tmp_path, {"device": "cpu", "nodes": 3})
    assert res["gpu"] == 0 and "nodes" not in res


def test_launcher_runs_one_torchrun_per_node_meeting_on_the_first(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    cmd = multinode_command("main", {"image_size": 64}, {"nodes": 2}, ["a.h5"], ["v.h5"], tmp_path / "work",
                            tmp_path / "m.safetensors", "pre.safetensors", nodes=2, gpus_per_node=4,
                            host="gpu017")  # fmt: skip
    run = cmd.index("torch.distributed.run")
    srun, torchrun = cmd[: run - 2], cmd[run + 1 :]
    assert srun == ["srun", "--overlap", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    assert torchrun[:5] == ["--nnodes=2", "--nproc-per-node=4", "--rdzv-backend=c10d",
                            f"--rdzv-endpoint=gpu017:{RDZV_PORT}", "--rdzv-id=4242"]  # fmt: skip
    assert torchrun[5:7] == ["-m", "davs_model.training"] and "--init-from" in torchrun
    assert (tmp_path / "work" / "launch_main.json").is_file()


def test_several_nodes_outside_slurm_is_a_clear_error(tmp_path, monkeypatch):
    from davs_model.training import launch

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setattr(launch.torch.cuda, "device_count", lambda: 2)
    with pytest.raises(SystemExit, match="train.nodes = 2 needs a Slurm job over 2 nodes"):
        launch.run_stage(stage="main", model={}, train={"device": "cuda", "nodes": 2}, train_shards=[],
                         val_shards=[], work_dir=str(tmp_path), out_model=str(tmp_path / "m"), gpus=2)  # fmt: skip

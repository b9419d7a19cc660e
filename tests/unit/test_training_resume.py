"""A training run killed at any moment continues bit for bit (CPU, fixed seed), and SIGTERM saves the state.

Runs the real entry point (``python -m davs_model.training``) in subprocesses: one uninterrupted run, one killed
with SIGKILL right after its first checkpoint and run again, one stopped with SIGTERM (sent to its whole process
group, DataLoader worker included, as Slurm does) and run again. All three end with identical weights, optimiser
states and logged losses.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from davs_model.training.checkpoint import CheckpointError, load_model, load_state, read_model_metadata
from davs_model.training.config import ModelConfig, TrainConfig
from davs_model.training.heldout import evaluate_mouth_l1
from davs_model.training.loop import train_stage
from davs_model.training.step import ASSOCIATION_MODULES
from tests.unit.training_data import write_training_shards

STEPS = 6
TRAIN = {
    "main": {"steps": STEPS, "batch_size": 2}, "num_workers": 1, "log_every": 1, "checkpoint_every": 2,
    "sample_every": 3, "seed": 7,
}  # fmt: skip
MODEL = {"image_size": 64, "width": 0.0625, "n_words": 0}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    train, val = write_training_shards(root / "shards", n_train=8, n_val=2)
    config = root / "run.json"
    config.write_text(json.dumps({"model": MODEL, "train": TRAIN}))
    return root, config, train, val


def command(setup, name: str) -> tuple[list[str], object, object]:
    root, config, train, val = setup
    work, out = root / name, root / f"{name}.safetensors"
    cmd = [sys.executable, "-m", "davs_model.training", "--stage", "main", "--config", str(config),
           "--train-shards", *map(str, train), "--val-shards", *map(str, val), "--work-dir", str(work),
           "--out-model", str(out), "--no-progress"]  # fmt: skip
    return cmd, work, out


def run_to_end(cmd) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]


def start_and_signal(cmd, work, sig) -> int:
    """Start a run in its own process group, wait for its first state file, signal the group; returns the rc."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "2"})  # fmt: skip
    state = work / "state.pt"
    deadline = time.monotonic() + 120
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if proc.poll() is not None or not state.exists():
        proc.kill()
        pytest.fail(
            f"the run ended (rc {proc.returncode}) before its first checkpoint: {proc.communicate()[1][-2000:]}"
        )
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert "saving the state after this step" in err, err[-2000:]
    return proc.returncode


@pytest.fixture(scope="module")
def uninterrupted(setup):
    cmd, work, out = command(setup, "uninterrupted")
    run_to_end(cmd)
    return work, out


def assert_same_run(a, b) -> None:
    (work_a, out_a), (work_b, out_b) = a, b
    wa, wb = load_file(out_a), load_file(out_b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    sa, sb = load_state(work_a / "state.pt"), load_state(work_b / "state.pt")
    assert sa["step"] == sb["step"] == STEPS
    assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])  # discriminators included
    for opt in ("opt_g", "opt_d"):
        for pid, st in sa[opt]["state"].items():
            assert all(torch.equal(v, sb[opt]["state"][pid][k]) for k, v in st.items())
    torch.testing.assert_close(sa["rng"]["step_generator"], sb["rng"]["step_generator"], rtol=0, atol=0)

    def losses(work):
        rows = [json.loads(line) for line in (work / "stats.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if "/" in k or k == "step"} for r in rows]

    assert losses(work_a) == losses(work_b)
    assert [r["step"] for r in losses(work_b)] == list(range(1, STEPS + 1))


def test_uninterrupted_run_writes_its_artifacts(uninterrupted):
    work, out = uninterrupted
    meta = read_model_metadata(out)
    assert meta["step"] == STEPS and meta["stage"] == "main" and meta["model_config"]["n_words"] == 6
    resolved = json.loads((work / "config.resolved.json").read_text())
    assert resolved["model"]["n_words"] == 6 and resolved["train"]["seed"] == 7
    assert (work / "loss_curves.png").is_file() and len(list((work / "tb").iterdir())) == 1
    assert sorted(p.name for p in (work / "samples").iterdir()) == ["step_000003.png", "step_000006.png"]
    assert not list(work.glob(".*tmp*")) and not list(out.parent.glob(f".{out.name}.tmp*"))


def test_sigkill_then_rerun_is_bit_identical(setup, uninterrupted):
    cmd, work, out = command(setup, "killed")
    assert start_and_signal(cmd, work, signal.SIGKILL) == -signal.SIGKILL
    assert not out.exists()
    assert 2 <= load_state(work / "state.pt")["step"] < STEPS
    run_to_end(cmd)
    assert_same_run(uninterrupted, (work, out))


def test_sigterm_saves_the_state_and_a_rerun_finishes_identically(setup, uninterrupted):
    cmd, work, out = command(setup, "terminated")
    assert start_and_signal(cmd, work, signal.SIGTERM) == 128 + signal.SIGTERM
    assert not out.exists()
    stopped = load_state(work / "state.pt")["step"]
    assert 2 <= stopped < STEPS
    logged = [json.loads(line)["step"] for line in (work / "stats.jsonl").read_text().splitlines()]
    assert logged[-1] == stopped  # the state is saved at the step the signal arrived in, nothing after it
    run_to_end(cmd)
    assert_same_run(uninterrupted, (work, out))


def test_evaluate_mouth_l1_is_deterministic_and_restores_the_mode(setup, uninterrupted):
    _, _, _, val = setup
    model = load_model(uninterrupted[1]).train()
    first = evaluate_mouth_l1(model, val, batch_size=1)
    assert model.training  # the caller's mode is restored
    assert 0.0 < first < 1.0 and evaluate_mouth_l1(model, val, batch_size=2) == pytest.approx(first, abs=1e-6)
    assert evaluate_mouth_l1(model, val, max_clips=1) != first


def test_pretrain_then_main_initialised_from_its_model(setup, tmp_path, caplog):
    _, _, train, val = setup
    model_cfg = ModelConfig.from_dict(MODEL)
    cfg = TrainConfig.from_dict({**TRAIN, "num_workers": 0, "pretrain": {"steps": 2, "batch_size": 2},
                                 "main": {"steps": 1, "batch_size": 2}})  # fmt: skip
    pre = train_stage("pretrain", model_cfg=model_cfg, cfg=cfg, train_shards=train, val_shards=val,
                      work_dir=tmp_path / "pre", out_model=tmp_path / "pre.safetensors",
                      progress=False)  # fmt: skip
    meta = read_model_metadata(pre)
    assert meta["stage"] == "pretrain" and meta["trained_modules"] == list(ASSOCIATION_MODULES)
    assert not (tmp_path / "pre" / "samples").exists()  # stage 1 does not generate
    with caplog.at_level(logging.INFO, logger="davs_model.training.loop"):
        train_stage("main", model_cfg=model_cfg, cfg=cfg, train_shards=train, val_shards=val,
                    work_dir=tmp_path / "main", out_model=tmp_path / "main.safetensors", init_from=str(pre),
                    progress=False)  # fmt: skip
    assert "initialised mfcc_encoder, lip_feature_encoder, model_fusion from" in caplog.text
    with pytest.raises(CheckpointError, match="'pretrain' run"):  # a work dir belongs to one stage
        train_stage("main", model_cfg=model_cfg, cfg=cfg, train_shards=train, work_dir=tmp_path / "pre",
                    out_model=tmp_path / "x.safetensors", progress=False)  # fmt: skip

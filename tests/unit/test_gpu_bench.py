"""Smoke tests of the GPU benchmark scripts (bench/train_speed.py, bench/render_gpu.py, bench/gpu_all.sh) on the
CPU at tiny size: they run, and their JSON holds the expected keys with positive numbers. No timing is asserted.
torch.compile is left out here (minutes on the CPU); the GPU run (bench/gpu_all.sh) covers it."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def one_thread():
    """One torch thread: the CI machine's 2 cores are shared, and two threads then wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_device_peaks_and_configs():
    ts = _load("train_speed")
    assert ts.device_peak("NVIDIA H100 80GB HBM3")["name"] == "H100 SXM"
    assert ts.device_peak("NVIDIA H100 PCIe")["bf16_tflops"] == 756.5
    assert ts.device_peak("NVIDIA H200")["tf32_tflops"] == 494.7
    assert ts.device_peak("NVIDIA A100-SXM4-80GB")["name"] == "A100"
    for unknown in ("NVIDIA H100 NVL", "NVIDIA GeForce RTX 4090", "cpu"):
        assert ts.device_peak(unknown) is None
    assert ts.parse_config("fp32") == dict.fromkeys(ts.FLAGS, False)
    assert ts.parse_config("all") == dict.fromkeys(ts.FLAGS, True)
    assert ts.parse_config("bf16+compile") == {"bf16": True, "channels_last": False, "compile": True,
                                               "fused_adam": False}  # fmt: skip
    with pytest.raises(ValueError, match="bf61"):
        ts.parse_config("bf61")


def test_flops_of_one_iteration_grow_with_the_batch(one_thread):
    ts = _load("train_speed")
    cfg, cpu = ts.SIZES["tiny"], torch.device("cpu")
    f2, f3 = (ts.count_flops(cfg, ts.synthetic_batch(cfg, b, cpu), cpu) for b in (2, 3))
    assert 0 < f2 < f3
    assert 1.45 < f3 / f2 < 1.55  # convolutions dominate: about linear in the batch


def test_train_speed_smoke(tmp_path, one_thread):
    ts = _load("train_speed")
    out, md = tmp_path / "train.json", tmp_path / "train.md"
    ts.main(["--size", "tiny", "--batch-size", "2", "--steps", "2", "--warmup", "1", "--device", "cpu",
             "--configs", "fp32,bf16+channels_last+fused_adam", "--json", str(out), "--md", str(md)])  # fmt: skip
    report = json.loads(out.read_text())
    assert report["flops_per_iteration"] > 0 and report["peak"] is None  # CPU: MFU n/a
    rows = {r["config"]: r for r in report["results"]}
    assert set(rows) == {"fp32", "bf16+channels_last+fused_adam"}
    for r in rows.values():
        assert r["samples_per_s"] > 0 and r["median_s"] > 0 and r["tflops"] > 0 and r["finite"]
        assert r["mfu"] is None and r["speedup_vs_fp32"] > 0
    assert rows["fp32"]["speedup_vs_fp32"] == 1.0
    assert rows["bf16+channels_last+fused_adam"]["flags"]["bf16"]
    assert not rows["bf16+channels_last+fused_adam"]["fused_adam_used"]  # fused Adam is CUDA-only
    assert "| fp32 |" in md.read_text()


def test_render_gpu_smoke(tmp_path, one_thread):
    rg = _load("render_gpu")
    out = tmp_path / "render.json"
    rg.main(["--size", "tiny", "--batch-sizes", "2", "4", "--precision", "bf16", "fp32", "--repeats", "2",
             "--warmup", "1", "--baseline-frames", "3", "--seconds", "1", "--e2e-repeats", "1", "--device", "cpu",
             "--json", str(out), "--md", str(tmp_path / "render.md")])  # fmt: skip
    report = json.loads(out.read_text())
    assert report["original"]["fps"] > 0 and report["original"]["flops_per_frame"] > 0
    assert [(r["precision"], r["batch"]) for r in report["model_only"]] == [
        ("bf16", 2), ("bf16", 4), ("fp32", 2), ("fp32", 4)
    ]  # fmt: skip
    for r in report["model_only"]:
        assert r["fps"] > 0 and r["flops_per_frame"] > 0
    bf16_first, fp32_first = report["model_only"][0], report["model_only"][2]
    assert fp32_first["max_grey_diff_vs_fp32"] <= 1 and bf16_first["max_grey_diff_vs_fp32"] <= 16  # same function
    [e2e] = report["end_to_end"]
    assert "error" not in e2e, e2e
    assert e2e["precision"] == "bf16" and e2e["frames"] > 0 and e2e["fps"] > 0
    assert "| model only | bf16 | 4 |" in (tmp_path / "render.md").read_text()


def test_carried_inputs_give_the_same_identity_and_speech(tmp_path):
    """What --prepare writes for the GPU machine (landmarks instead of dlib's model, the speech as a wav) gives
    the render the same aligned identity and the same samples."""
    rg = _load("render_gpu")
    from davs_model.face import FaceLandmarker
    from davs_model.rendering import inputs

    rg.prepare(tmp_path)
    fixed = inputs.load_identity_frame("demo", rg.FixedLandmarker(np.load(tmp_path / "astronaut_landmarks.npy")))
    real = inputs.load_identity_frame("demo", FaceLandmarker(upsample=1))
    np.testing.assert_array_equal(fixed.aligned, real.aligned)
    np.testing.assert_array_equal(fixed.transform, real.transform)
    np.testing.assert_array_equal(inputs.load_speech(tmp_path / "demo_speech.wav"), inputs.load_speech("demo"))


def test_gpu_all_is_valid_bash():
    subprocess.run(["bash", "-n", str(BENCH / "gpu_all.sh")], check=True)

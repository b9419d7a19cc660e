"""Stage-2 training speed on a GPU (issue 7.4, issue 3): samples/s of ``train_iteration`` per configuration.

Each configuration is a set of the training loop's speed flags (``train.bf16``, ``channels_last``, ``compile``,
``fused_adam``), joined by ``+``: ``fp32`` is none of them (fp32 eager, the baseline), ``all`` is all four. The
model, its dropout generator and the optimisers are made by the loop's own ``build_model``, ``build_optimizers``
and ``compile_model``; the batches have the training loader's layout (uint8 images (…, S, S, 3) scaled on the
device, as ``ShardClipDataset(uint8=True)`` gives them) and are drawn at random once, on the device.

Per configuration: ``--warmup`` iterations (compilation happens there), then ``--steps`` iterations, each timed
alone between two device synchronisations; the figure is the median. MFU = FLOPs of one iteration (counted once
with ``torch.utils.flop_counter.FlopCounterMode``, fp32 eager: convolutions and matrix products, forward and
backward) / median time / the device's dense peak from NVIDIA's datasheets: the BF16 peak for configurations with
bf16, else the TF32 peak (cuDNN runs fp32 convolutions on TF32 tensor cores by default,
``torch.backends.cudnn.allow_tf32``). Unknown device (or CPU): MFU n/a.

    python bench/train_speed.py [--size paper|tiny] [--batch-size 16] [--steps 20] [--warmup 5]
                                [--configs fp32,all] [--device auto] [--json PATH] [--md PATH]

The JSON and Markdown files are rewritten after every configuration: a run stopped by a time limit keeps what it
measured.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
from torch._dynamo.utils import counters as dynamo_counters
from torch.utils.flop_counter import FlopCounterMode

from davs_model.training.config import ModelConfig, TrainConfig
from davs_model.training.loop import build_model, build_optimizers, compile_model, resolve_device
from davs_model.training.step import train_iteration

SIZES = {"paper": ModelConfig(), "tiny": ModelConfig(image_size=64, width=1 / 16, n_words=6)}
FLAGS = ("bf16", "channels_last", "compile", "fused_adam")
ALIASES = {"fp32": (), "all": FLAGS}
# Dense (no sparsity) tensor-core peaks in TFLOP/s, (BF16, TF32), from NVIDIA's datasheets: H100 SXM5 and H200
# SXM (same chip and clocks), H100 PCIe, A100 (SXM4 and PCIe). Matched in order on torch.cuda.get_device_name();
# the NVL parts (other clocks) and everything else: unknown, MFU n/a.
PEAKS = (
    ("H100 NVL", None),
    ("H200 NVL", None),
    ("H100 PCIe", ("H100 PCIe", 756.5, 378.0)),
    ("H100", ("H100 SXM", 989.4, 494.7)),
    ("H200", ("H200 SXM", 989.4, 494.7)),
    ("A100", ("A100", 312.0, 156.0)),
)


def device_peak(name: str) -> dict | None:
    """{"name", "bf16_tflops", "tf32_tflops"} of a device name, or None when unknown."""
    for pattern, entry in PEAKS:
        if pattern.lower() in name.lower():
            return None if entry is None else dict(zip(("name", "bf16_tflops", "tf32_tflops"), entry, strict=True))
    return None


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def parse_config(name: str) -> dict[str, bool]:
    """ "fp32", "all" or flags joined by "+" → TrainConfig flags."""
    on = set(ALIASES.get(name, name.split("+")))
    unknown = on - set(FLAGS)
    if unknown:
        raise ValueError(f"unknown flag(s) {sorted(unknown)} in {name!r}: use fp32, all or {'+'.join(FLAGS)}")
    return {f: f in on for f in FLAGS}


def synthetic_batch(model_cfg: ModelConfig, batch_size: int, device: torch.device, seed: int = 0) -> dict:
    """A random batch with the training loader's keys, dtypes and shapes (``ShardClipDataset(uint8=True)``)."""
    g = torch.Generator(device).manual_seed(seed)
    s, p, b = model_cfg.image_size, model_cfg.pred_length, batch_size

    def images(*lead: int) -> torch.Tensor:
        return torch.randint(0, 256, (*lead, s, s, 3), generator=g, device=device, dtype=torch.uint8)

    def ints(high: int) -> torch.Tensor:
        return torch.randint(0, high, (b,), generator=g, device=device)

    return {
        "identity": images(b), "frames": images(b, p), "disfc_frames": images(b, model_cfg.disfc_length),
        "mfcc": 5 * torch.randn(b, p, 20, 12, generator=g, device=device),
        "gen_index": ints(p - model_cfg.sequence_length + 1), "label": ints(model_cfg.n_words),
        "speaker": torch.full((b,), -1, device=device),
    }  # fmt: skip


def setup(model_cfg: ModelConfig, flags: dict[str, bool], device: torch.device):
    """The loop's model, generator and optimisers for ``flags`` (compiled if asked)."""
    cfg = TrainConfig(device=str(device), **flags)
    model, gen = build_model(model_cfg, cfg, device)
    opt_g, opt_d = build_optimizers(model, "main", cfg, device)
    if cfg.compile:
        compile_model(model)
    return model.train(), gen, opt_g, opt_d, cfg


def count_flops(model_cfg: ModelConfig, batch: dict, device: torch.device) -> int:
    """FLOPs of one fp32 eager stage-2 iteration (convolutions and matrix products, forward and backward)."""
    model, gen, opt_g, opt_d, cfg = setup(model_cfg, parse_config("fp32"), device)
    with FlopCounterMode(display=False) as counter:
        train_iteration(model, batch, opt_g, opt_d, cfg.loss_weights, gen)
    return int(counter.get_total_flops())


def time_config(name: str, model_cfg: ModelConfig, batch: dict, device: torch.device, steps: int, warmup: int):
    """Median seconds per iteration of one configuration, with its warm-up time, peak memory and last losses."""
    flags = parse_config(name)
    reset_peak_memory(device)
    dynamo_counters.clear()  # torch.compile's graph and graph-break counts, per configuration
    model, gen, opt_g, opt_d, cfg = setup(model_cfg, flags, device)
    start = time.perf_counter()
    for _ in range(warmup):
        train_iteration(model, batch, opt_g, opt_d, cfg.loss_weights, gen, bf16=cfg.bf16)
    synchronize(device)
    warmup_s, times = time.perf_counter() - start, []
    for _ in range(steps):
        synchronize(device)
        t0 = time.perf_counter()
        losses = train_iteration(model, batch, opt_g, opt_d, cfg.loss_weights, gen, bf16=cfg.bf16)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return {
        "config": name, "flags": flags, "fused_adam_used": bool(opt_g.defaults.get("fused")),
        "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "warmup_s": warmup_s,
        "peak_memory_gib": peak_memory_gib(device),
        "finite": all(math.isfinite(losses[k]) for k in ("D/total", "G/total")),
        "dynamo": dynamo_summary() if cfg.compile else None,
    }  # fmt: skip


def dynamo_summary() -> dict:
    """torch.compile's graphs and most frequent graph-break reasons since the last ``dynamo_counters.clear()``."""
    breaks = {reason[:160]: n for reason, n in dynamo_counters["graph_break"].most_common(8)}
    return {"graphs": dynamo_counters["stats"].get("unique_graphs", 0), "graph_breaks": breaks}


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def finish_row(row: dict, batch_size: int, flops: int | None, peak: dict | None, baseline: dict | None) -> dict:
    tflops = flops / row["median_s"] / 1e12 if flops else None
    peak_kind = "bf16" if row["flags"]["bf16"] else "tf32"
    peak_tflops = peak[f"{peak_kind}_tflops"] if peak else None
    return row | {
        "samples_per_s": batch_size / row["median_s"],
        "speedup_vs_fp32": baseline["median_s"] / row["median_s"] if baseline else None,
        "tflops": tflops, "peak_used": f"{peak['name']} dense {peak_kind}" if peak else None,
        "mfu": tflops / peak_tflops if peak_tflops and tflops else None,
    }  # fmt: skip


def fmt(value, spec: str, missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)


def markdown(report: dict) -> str:
    flops = report["flops_per_iteration"]
    head = (
        f"{report['device']}, torch {report['torch']}, {report['size']} size, batch {report['batch_size']}, "
        f"median of {report['steps']} iterations after {report['warmup']}; "
        f"{fmt(flops and flops / 1e12, '.3f')} TFLOP per iteration (fp32 eager count)"
    )
    lines = [head, "", "| config | samples/s | × fp32 eager | ms/iter | peak GiB | TFLOP/s | MFU | warm-up s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['config']} | {r['error']} | | | | | | |")
            continue
        mfu = f"{100 * r['mfu']:.1f} % of {r['peak_used']}" if r["mfu"] is not None else "n/a"
        lines.append(
            f"| {r['config']} | {r['samples_per_s']:.2f} | {fmt(r['speedup_vs_fp32'], '.2f')} | "
            f"{1000 * r['median_s']:.1f} | {fmt(r['peak_memory_gib'], '.2f')} | {fmt(r['tflops'], '.3g')} | "
            f"{mfu} | {r['warmup_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    model_cfg = SIZES[args.size]
    names = [c for c in args.configs.split(",") if c]
    for name in names:
        parse_config(name)  # fail early on a typo
    batch = synthetic_batch(model_cfg, args.batch_size, device)
    name = device_name(device)
    report = {
        "device": name, "torch": torch.__version__, "size": args.size, "model": model_cfg.to_dict(),
        "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
        "flops_per_iteration": None, "peak": device_peak(name),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(), "results": [],
    }  # fmt: skip
    try:
        report["flops_per_iteration"] = count_flops(model_cfg, batch, device)
    except Exception as exc:  # e.g. fp32 out of memory at this batch: the bf16 configurations may still fit
        report["flops_error"] = error_text(exc)
    baseline = None
    for config in names:
        try:
            row = time_config(config, model_cfg, batch, device, args.steps, args.warmup)
        except Exception as exc:  # an OOM or a compile failure must not lose the other configurations
            report["results"].append({"config": config, "error": error_text(exc)})
            print(f"{config}: failed: {exc}", flush=True)
        else:
            baseline = row if config == "fp32" else baseline
            row = finish_row(row, args.batch_size, report["flops_per_iteration"], report["peak"], baseline)
            report["results"].append(row)
            print(f"{config}: {row['samples_per_s']:.2f} samples/s ({1000 * row['median_s']:.1f} ms)", flush=True)
        save(report, args)
    return report


def save(report: dict, args: argparse.Namespace, to_markdown=None) -> str:
    """Write ``report`` as JSON to ``args.json`` and its table (``to_markdown``, default this script's) to
    ``args.md`` where given; returns the table."""
    table = (to_markdown or markdown)(report)
    for path, text in ((args.json, json.dumps(report, indent=2) + "\n"), (args.md, table)):
        if path:
            Path(path).write_text(text)
    return table


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="paper")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per iteration (the paper's: 16)")
    parser.add_argument("--steps", type=int, default=20, help="timed iterations per configuration")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations first (compiles here)")
    parser.add_argument("--configs", default="fp32,all", help="comma-separated: fp32, all, or flags joined by +")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cuda, cpu, ...")
    parser.add_argument("--json", help="write the results here (rewritten after every configuration)")
    parser.add_argument("--md", help="write the Markdown table here (likewise)")
    args = parser.parse_args(argv)
    report = run(args)
    print(save(report, args))
    return report


if __name__ == "__main__":
    main()

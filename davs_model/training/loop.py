"""The training loop of one stage: ``train_stage("pretrain" | "main", ...)`` (DAVS_SPEC §4.5–4.6).

A run lives in ``work_dir``: it resumes by itself from ``work_dir/state.pt`` (same data position, same RNG states,
so a resumed CPU run continues bit for bit), writes the state every ``checkpoint_every`` steps and on SIGTERM /
SIGINT, and writes ``out_model`` only at the end (STYLE §9.8: only the finished artifact is a Snakemake output).

Stopping on a signal. Slurm sends SIGTERM some time before it kills a job (at the time limit, on preemption or
``scancel``). The handler only sets a flag; after the current step the loop saves the state, and ``train_stage``
raises :class:`TrainingInterrupted`, a ``SystemExit`` with code 143 (128 + SIGTERM): the job is reported as
failed, not completed, so Snakemake's ``retries`` (or Slurm's requeue) start it again, and it resumes from the
saved step. DataLoader workers ignore the signals and leave stopping to the main process. In a torchrun job
every rank stops at the same step (the flag is all-reduced each step).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader, default_collate
from tqdm import tqdm

from davs_model import CHECKPOINT_FORMAT_VERSION, __version__
from davs_model.data.dataset import ShardClipDataset, image_tensor
from davs_model.model import DAVS, DISCRIMINATOR_MODULES, GENERATOR_MODULES
from davs_model.training import distributed as ddp
from davs_model.training.checkpoint import (
    STATE_FILE,
    CheckpointError,
    load_modules,
    load_state,
    restore_rng,
    save_model,
    save_state,
)
from davs_model.training.config import ModelConfig, TrainConfig
from davs_model.training.identity import IDENTITY_MODULE, IdentityPretraining
from davs_model.training.report import RunReport, generate_sequences, sample_grid
from davs_model.training.runtime import StopFlag, bind_generator, worker_ignores_signals
from davs_model.training.step import ASSOCIATION_MODULES, pretrain_step, train_iteration

__all__ = ["STAGES", "TrainingInterrupted", "build_model", "build_optimizers", "compile_model", "train_stage"]

log = logging.getLogger(__name__)
STAGES = ("pretrain", "main")
N_SAMPLE_CLIPS = 4


class TrainingInterrupted(SystemExit):
    """Raised after a signal-triggered save; exit status 143 (128 + SIGTERM)."""

    def __init__(self, step: int) -> None:
        super().__init__(128 + signal.SIGTERM)
        self.step = step


def resolve_device(name: str) -> torch.device:
    """ "auto" → CUDA if available (the local rank's GPU under torchrun), else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def make_dataset(paths, split: str, model_cfg: ModelConfig, *, train: bool, seed: int) -> ShardClipDataset:
    return ShardClipDataset(
        [Path(p) for p in paths], split=split, image_size=model_cfg.image_size, pred_length=model_cfg.pred_length,
        sequence_length=model_cfg.sequence_length, disfc_length=model_cfg.disfc_length, train=train, seed=seed,
        uint8=True,
    )  # fmt: skip


def build_model(model_cfg: ModelConfig, cfg: TrainConfig, device: torch.device) -> tuple[DAVS, torch.Generator]:
    """DAVS on ``device`` (seeded, SyncBatchNorm under DDP, channels-last if asked) and its dropout generator."""
    torch.manual_seed(cfg.seed)
    model = DAVS(model_cfg).to(device)
    gen = torch.Generator(device).manual_seed(cfg.seed)
    bind_generator(model, gen)
    model = ddp.convert_batchnorm(model, device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, gen


def compile_model(model: DAVS) -> None:
    """``torch.compile`` every generator and discriminator module in place (state-dict keys unchanged)."""
    for name in (*GENERATOR_MODULES, *DISCRIMINATOR_MODULES):
        getattr(model, name).compile()


def build_optimizers(model: DAVS, stage: str, cfg: TrainConfig, device: torch.device):
    stage_cfg = getattr(cfg, stage)
    if stage == "pretrain":  # §4.6: only E_a^w, E_v^w, C and D_mod learn
        g_params = [p for n in ASSOCIATION_MODULES for p in getattr(model, n).parameters()]
        d_params = list(model.discriminator_audio.parameters())
    else:
        g_params, d_params = list(model.generator_parameters()), list(model.discriminator_parameters())
    fused = bool(cfg.fused_adam and device.type == "cuda")
    kw = {"lr": stage_cfg.lr, "betas": tuple(stage_cfg.betas), "fused": fused}
    return torch.optim.Adam(g_params, **kw), torch.optim.Adam(d_params, **kw)


def train_stage(
    stage: str,
    *,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    train_shards,
    val_shards=(),
    work_dir,
    out_model,
    init_from: str | None = None,
    progress: bool = True,
) -> Path:
    """Train one stage to ``cfg.<stage>.steps`` steps and write ``out_model``; resumes from ``work_dir``."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    device = resolve_device(cfg.device)
    owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    ctx = ddp.init_from_env(device)
    try:
        return _train(stage, model_cfg, cfg, train_shards, val_shards, Path(work_dir), Path(out_model),
                      init_from, progress, device, ctx)  # fmt: skip
    finally:
        if owns_group:
            ddp.shutdown()


def _train(stage, model_cfg, cfg, train_shards, val_shards, work_dir, out_model, init_from, progress, device, ctx):
    stage_cfg = getattr(cfg, stage)
    train_ds = make_dataset(train_shards, "train", model_cfg, train=True, seed=cfg.seed)
    if model_cfg.n_words == 0:  # "from the data"
        labels = train_ds.labels
        if not (labels >= 0).any():
            raise ValueError("model.n_words = 0 needs word labels in the training shards; none has one")
        model_cfg = replace(model_cfg, n_words=int(labels.max()) + 1)
    model, gen = build_model(model_cfg, cfg, device)
    opt_g, opt_d = build_optimizers(model, stage, cfg, device)
    identity = None
    if stage == "pretrain":  # optional E_p pretraining on the shards' speakers (§4.6 step 1)
        identity = IdentityPretraining.maybe(
            model, train_ds.speakers, cfg.identity_pretrain, lr=stage_cfg.lr, betas=stage_cfg.betas
        )
    resolved = {
        "stage": stage, "model": model_cfg.to_dict(), "train": cfg.to_dict(),
        "train_shards": [str(p) for p in train_shards], "val_shards": [str(p) for p in val_shards],
        "init_from": init_from, "world_size": ctx.world_size, "device": str(device),
        "format_version": CHECKPOINT_FORMAT_VERSION, "davs_model_version": __version__,
    }  # fmt: skip
    step = epoch = position = 0
    state_path = work_dir / STATE_FILE
    if state_path.exists():
        state = load_state(state_path, device)
        if state["stage"] != stage or state["config"]["model"] != model_cfg.to_dict():
            raise CheckpointError(
                f"{state_path} is a {state['stage']!r} run with model {state['config']['model']}, not a {stage!r} "
                f"run with {model_cfg.to_dict()}: use another work directory"
            )
        if state["config"]["train"] != json.loads(json.dumps(cfg.to_dict())):
            log.warning("%s was written with another train config; continuing with the current one", state_path)
        model.load_state_dict(state["model"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        restore_rng(state["rng"], gen)
        if identity is not None:
            identity.load_state_dict(state["extra"]["identity"])
        step, epoch, position = state["step"], state["epoch"], state["position"]
        log.info("resumed %s from %s at step %d (epoch %d, batch %d)", stage, state_path, step, epoch, position)
        del state
    elif init_from:
        loaded = load_modules(model, init_from)
        log.info("initialised %s from %s", ", ".join(loaded) or "nothing", init_from)
    ddp.broadcast_state(model)
    if cfg.compile:
        compile_model(model)
    if ctx.is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
        (work_dir / "config.resolved.json").write_text(json.dumps(resolved, indent=2) + "\n")
    report = RunReport(work_dir, resume_step=step, enabled=ctx.is_main)
    samples = None
    if stage == "main" and val_shards and ctx.is_main:
        val_ds = make_dataset(val_shards, "val", model_cfg, train=False, seed=cfg.seed)
        picked = [val_ds[i] for i in range(min(N_SAMPLE_CLIPS, len(val_ds)))]
        samples = default_collate(picked) if picked else None

    def checkpoint() -> None:
        if ctx.is_main:
            save_state(state_path, model=model, opt_g=opt_g, opt_d=opt_d, stage=stage, step=step, epoch=epoch,
                       position=position, step_generator=gen, config=resolved,
                       extra={"identity": identity.state_dict()} if identity else None)  # fmt: skip
        ddp.barrier()

    weights, bf16 = cfg.loss_weights, cfg.bf16
    pbar = tqdm(total=stage_cfg.steps, initial=step, disable=not (progress and ctx.is_main), unit="it", desc=stage)
    t_last, step_last = time.perf_counter(), step
    model.train()
    with StopFlag() as stop:
        try:
            while step < stage_cfg.steps:
                train_ds.set_epoch(epoch)
                sampler = ddp.EpochBatchSampler(
                    len(train_ds), stage_cfg.batch_size, seed=cfg.seed, epoch=epoch, rank=ctx.rank,
                    world_size=ctx.world_size, start=position,
                )  # fmt: skip
                loader = DataLoader(train_ds, batch_sampler=sampler, num_workers=cfg.num_workers,
                                    pin_memory=device.type == "cuda", worker_init_fn=worker_ignores_signals,
                                    generator=torch.Generator())  # fmt: skip
                for batch in loader:
                    if stage == "pretrain":
                        losses = pretrain_step(model, batch, opt_g, opt_d, weights, gen, bf16=bf16)
                        if identity is not None:
                            losses |= identity.step(batch)
                    else:
                        losses = train_iteration(model, batch, opt_g, opt_d, weights, gen, bf16=bf16)
                    step, position = step + 1, position + 1
                    pbar.update()
                    if step % cfg.log_every == 0 or step == stage_cfg.steps:
                        values = ddp.all_reduce_mean(torch.tensor(list(losses.values()), dtype=torch.float64))
                        losses = dict(zip(losses, values.tolist(), strict=True))
                        now = time.perf_counter()
                        it_s = (step - step_last) / max(now - t_last, 1e-9)
                        t_last, step_last = now, step
                        report.log(step, epoch, losses, it_s=it_s, lr=opt_g.param_groups[0]["lr"])
                        pbar.set_postfix({"D": f"{losses['D/total']:.3g}", "G": f"{losses['G/total']:.4g}"})
                    if step % cfg.sample_every == 0 or step == stage_cfg.steps:
                        if samples is not None:
                            report.save_samples(step, _sample_grid(model, samples, device))
                        report.plot_losses()
                    stopping = ddp.any_rank(stop.requested, device)
                    if stopping or (step % cfg.checkpoint_every == 0 and step < stage_cfg.steps):
                        checkpoint()
                    if stopping:
                        log.warning("stopped by a signal at step %d; state saved in %s", step, state_path)
                        raise TrainingInterrupted(step)
                    if step >= stage_cfg.steps:
                        break
                else:
                    epoch, position = epoch + 1, 0
            checkpoint()  # a rerun after this point only rewrites out_model
            if ctx.is_main:
                trained = ASSOCIATION_MODULES if stage == "pretrain" else GENERATOR_MODULES
                trained += (IDENTITY_MODULE,) if identity else ()
                save_model(model, out_model, step=step, stage=stage, trained_modules=trained)
                log.info("%s done at step %d: wrote %s", stage, step, out_model)
            ddp.barrier()
        finally:
            pbar.close()
            report.close()
    return out_model


@torch.no_grad()
def _sample_grid(model: DAVS, batch: dict, device: torch.device) -> object:
    """identity | real | audio-driven | video-driven frames of a fixed val batch, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        real, fake_a, fake_v = generate_sequences(model, batch, device, wid_scale=1.0, video=True)
    finally:
        model.train(was_training)
    return sample_grid(image_tensor(batch["identity"], "cpu"), real, fake_a, fake_v)

# Helpers for the rules: config validation, the clip catalog and the shard plan. No rules here.
import os

import yaml
from snakemake.utils import validate

from davs_model import CHECKPOINT_FORMAT_VERSION, SHARD_FORMAT_VERSION
from davs_model.config import (
    DemoSection,
    PreprocessConfig,
    schema_errors,
    sources_from_dict,
)
from davs_model.evaluation.config import EvaluateConfig
from davs_model.rendering.config import RenderConfig
from davs_model.preprocess.catalog import discover_all, files_fingerprint, plan_shards

with open(os.path.join(workflow.basedir, "schemas/config.schema.yaml")) as fh:
    if errors := schema_errors(config, yaml.safe_load(fh)):
        raise WorkflowError(
            "config.yaml is not valid:\n  "
            + "\n  ".join(errors)
            + "\nFix config.yaml (keys, types, defaults: workflow/schemas/config.schema.yaml)."
        )
validate(config, "../schemas/config.schema.yaml")  # fills the defaults

SOURCES = sources_from_dict(config["sources"])
DEMO = DemoSection.from_dict(config["demo"])
PREPROCESS = PreprocessConfig.from_dict(config["preprocess"])
CLIPS = discover_all(SOURCES, DEMO)
if not CLIPS:
    raise WorkflowError(
        "no clips found in any source of config.yaml `sources:`; check the paths and layouts "
        "(README: 'Your own data')"
    )
PLAN = plan_shards(CLIPS, PREPROCESS.shards)
SPLITS = sorted({split for split, _ in PLAN})
EVALUATE = EvaluateConfig.from_dict(config["evaluate"])
RENDER = RenderConfig.from_dict(config["render"])


wildcard_constraints:
    split="train|val|test",
    shard=r"\d{3}",
    sample="|".join(RENDER.samples) or "no_samples",


def shard_clips(wildcards):
    """The clips that hash into this shard (decided from the clip ids alone)."""
    return PLAN[(wildcards.split, wildcards.shard)]


def shard_inputs(wildcards):
    """The shard's videos that the workflow makes itself (the demo's, made by make_demo_data). Other videos are NOT
    declared as inputs: Snakemake's bookkeeping of 539k declared files costs ~35 s per dry run at LRW scale
    (BENCHMARKS.md). shard_fingerprint stands in for them; a missing file gets a QC row in the job.
    """
    return [c.path for c in shard_clips(wildcards) if c.kind == "demo"]


def shard_fingerprint(wildcards):
    """Digest of the (path, size, mtime) of the shard's videos and box files that are not inputs: a changed,
    touched, missing or restored file changes this param, and Snakemake's params trigger reruns the shard.
    """
    return files_fingerprint(c for c in shard_clips(wildcards) if c.kind != "demo")


def shard_params(wildcards):
    """The shard's clips as plain dicts (they travel to the job through params). Same dicts as Clip.to_dict()
    (flat fields of immutable values), without dataclasses.asdict's recursive copy: 30x faster, ~5 s less per
    dry run at LRW scale (539k clips; bench/dag_scale.py)."""
    return [dict(vars(c)) for c in shard_clips(wildcards)]


def shards_of(split, ext="h5"):
    """Every shard file of a split."""
    return [f"results/shards/{split}/{shard}.{ext}" for s, shard in PLAN if s == split]


def split_shards(wildcards):
    """Every shard file of the wildcard's split."""
    return shards_of(wildcards.split)


def all_qc_tables():
    """The QC table of every shard of every split."""
    return [path for split in SPLITS for path in shards_of(split, "qc.tsv")]


def demo_videos():
    """The demo dataset's mp4 files, when a source of kind demo is configured."""
    return [c.path for c in CLIPS if c.kind == "demo"]


def sources_param():
    """The validated sources section (plain dicts, built into typed objects in the job)."""
    return config["sources"]


def train_gpus():
    """GPUs a training job requests (0 on a CPU-only configuration)."""
    return 0 if config["train"]["device"] == "cpu" else config["train"]["gpus"]


def train_nodes():
    """Nodes one training job spans (train.nodes; 1 on a CPU-only configuration)."""
    return config["train"]["nodes"] if train_gpus() else 1


def train_resources():
    """A training job's GPU and node requests. One node: `gpu` GPUs (sbatch --gpus). Several nodes: `nodes`, one
    task per node with `train.gpus` GPUs each (--gres, per node); the launcher runs srun + torchrun over them.
    """
    extra = "--signal=TERM@300"  # SIGTERM 5 min before the time limit: the state is saved at a step boundary
    if train_nodes() == 1:
        return {"gpu": train_gpus(), "slurm_extra": extra}
    return {
        "nodes": train_nodes(),
        "gres": f"gpu:{train_gpus()}",
        "slurm_extra": f"{extra} --ntasks-per-node=1",
    }


def evaluation_model():
    """The model evaluate_model scores: evaluate.checkpoint, or our trained model (a dependency on training)."""
    return EVALUATE.model_path


def render_sample_inputs(wildcards):
    """The model and the files a render sample reads (the built-in demo identity and speech are made in the job)."""
    return {
        "model": RENDER.model_path,
        "files": RENDER.samples[wildcards.sample].input_files(),
    }


def render_sample_params(wildcards):
    """The sample's validated settings, as a plain dict (typed in the job)."""
    return config["render"]["samples"][wildcards.sample]


def rendered_samples():
    """Every file `snakemake render_samples` makes: per sample mp4, side-by-side mp4, still grid (+ GIF)."""
    files = []
    for name, sample in RENDER.samples.items():
        files += [
            f"results/render/main/{name}{end}"
            for end in (".mp4", "_side_by_side.mp4", ".png")
        ]
        if sample.gif:
            files.append(f"results/render/main/{name}.gif")
    return files

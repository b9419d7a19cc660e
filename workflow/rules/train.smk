# Cluster needs: 4 CPU cores per training process (one process per GPU under torchrun), `gpu` GPUs (sbatch
# --gpus=N with the Slurm executor; per node over `train.nodes` nodes, see train_resources), a day per job. A job
# stopped earlier (time limit, preemption, scancel) is retried by the profile's `retries` and resumes from its work
# dir; --signal=TERM@300 sends SIGTERM 5 min before the time limit so the state is saved at a step boundary rather
# than at the last periodic checkpoint.
rule pretrain_association:
    input:
        train=shards_of("train"),
        val=shards_of("val"),
    output:
        model="results/train/pretrain/model.safetensors",
    log:
        "logs/pretrain_association/pretrain_association.log",
    benchmark:
        "benchmarks/pretrain_association/pretrain_association.tsv"
    conda:
        "../envs/davs.yaml"
    threads: 4 * max(1, train_gpus())
    resources:
        **train_resources(),
        mem_mb=32000,
        runtime=24 * 60,
    params:
        stage="pretrain",
        model=config["model"],
        train=config["train"],
        work_dir="results/train/pretrain/work",
        format_version=CHECKPOINT_FORMAT_VERSION,
    script:
        "../scripts/train_stage.py"


rule train_gan:
    input:
        train=shards_of("train"),
        val=shards_of("val"),
        init=rules.pretrain_association.output.model,
    output:
        model="results/train/main/model.safetensors",
    log:
        "logs/train_gan/train_gan.log",
    benchmark:
        "benchmarks/train_gan/train_gan.tsv"
    conda:
        "../envs/davs.yaml"
    threads: 4 * max(1, train_gpus())
    resources:
        **train_resources(),
        mem_mb=64000,
        runtime=24 * 60,
    params:
        stage="main",
        model=config["model"],
        train=config["train"],
        work_dir="results/train/main/work",
        format_version=CHECKPOINT_FORMAT_VERSION,
    script:
        "../scripts/train_stage.py"


rule train:
    input:
        rules.train_gan.output.model,

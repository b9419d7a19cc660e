# Adapter: one training stage (association pretraining or the full DAVS objective), resumable from its work dir.
from davs_model.training.launch import run_stage
from davs_model.utils.logging import log_to

with log_to(snakemake.log[0]):
    run_stage(
        stage=snakemake.params.stage,
        model=snakemake.params.model,
        train=snakemake.params.train,
        train_shards=list(snakemake.input.train),
        val_shards=list(snakemake.input.val),
        work_dir=snakemake.params.work_dir,
        out_model=snakemake.output.model,
        init_from=snakemake.input.get("init"),
        threads=snakemake.threads,
        gpus=snakemake.resources.gpu,
    )

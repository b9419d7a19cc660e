# Adapter: merge the shards' QC tables into the manifest, a summary and a plot.
from davs_model.preprocess.qc import write_manifest
from davs_model.utils.logging import log_to
from davs_model.utils.stale import remove_stale_temporaries

with log_to(snakemake.log[0]):
    remove_stale_temporaries(snakemake.output)  # a killed earlier run's, if any
    write_manifest(
        list(snakemake.input.qc),
        snakemake.output.manifest,
        snakemake.output.summary,
        snakemake.output.plot,
    )

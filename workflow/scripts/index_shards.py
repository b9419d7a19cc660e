# Adapter: the per-split index of the shards.
from davs_model.io.shards import write_index
from davs_model.utils.logging import log_to
from davs_model.utils.stale import remove_stale_temporaries

with log_to(snakemake.log[0]):
    remove_stale_temporaries(snakemake.output)  # a killed earlier run's, if any
    write_index(list(snakemake.input.shards), snakemake.output.index, split=snakemake.wildcards.split)

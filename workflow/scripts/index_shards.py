# Adapter: the per-split index of the shards.
from davs_model.io.shards import write_index
from davs_model.utils.logging import log_to

with log_to(snakemake.log[0]):
    write_index(list(snakemake.input.shards), snakemake.output.index, split=snakemake.wildcards.split)

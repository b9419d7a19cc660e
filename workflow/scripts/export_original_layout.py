# Adapter: write the shards in the original DAVS folder layout (align_face256/*.jpg, mfcc20/*.bin).
from davs_model.io.shards import export_original_layout
from davs_model.utils.logging import log_to

with log_to(snakemake.log[0]):
    export_original_layout(list(snakemake.input.shards), snakemake.output.data)

# Adapter: preprocess the clips of one shard into an HDF5 shard and its QC table.
from davs_model.config import PreprocessConfig, sources_from_dict
from davs_model.preprocess.pipeline import build_shard
from davs_model.preprocess.sources import Clip
from davs_model.utils.logging import log_to
from davs_model.utils.stale import remove_stale_temporaries

with log_to(snakemake.log[0]):
    remove_stale_temporaries(snakemake.output)  # a killed earlier run's, if any
    build_shard(
        clips=[Clip.from_dict(c) for c in snakemake.params.clips],
        sources=sources_from_dict(snakemake.params.sources),
        cfg=PreprocessConfig.from_dict(snakemake.params.preprocess),
        split=snakemake.wildcards.split,
        shard=int(snakemake.wildcards.shard),
        out_h5=snakemake.output.shard,
        out_qc=snakemake.output.qc,
        one_core=True,  # the rule gives this job one core: one BLAS thread, gc.freeze
    )

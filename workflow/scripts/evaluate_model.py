# Adapter: metrics of one model on the evaluation split → JSON, Markdown table, plot.
from davs_model.evaluation.config import EvaluateConfig
from davs_model.evaluation.evaluate import evaluate
from davs_model.utils.logging import log_to

with log_to(snakemake.log[0]):
    evaluate(
        model_path=snakemake.input.model,
        test_shards=list(snakemake.input.shards),
        out_json=snakemake.output.json,
        out_md=snakemake.output.md,
        out_png=snakemake.output.png,
        cfg=EvaluateConfig.from_dict(snakemake.params.evaluate),
        audio_paths=snakemake.params.audio_paths,
    )

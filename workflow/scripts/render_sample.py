# Adapter: one configured render sample → full-frame mp4 (H.264 + AAC), side-by-side mp4, PNG still grid.
from davs_model.rendering.config import SampleConfig
from davs_model.rendering.render import render
from davs_model.utils.logging import log_to

with log_to(snakemake.log[0]):
    sample = SampleConfig.from_dict(snakemake.params.sample, snakemake.wildcards.sample)
    render(
        snakemake.input.model,
        sample.identity,
        snakemake.output.mp4,
        audio=sample.audio,
        video=sample.video,
        side_by_side=snakemake.output.side_by_side,
        grid=snakemake.output.grid,
        finetune_steps=sample.finetune_steps,
        wid_scale=sample.wid_scale,
        grid_frames=snakemake.params.grid_frames,
        paste_back=snakemake.params.paste_back,
    )

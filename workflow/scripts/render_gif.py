# Adapter: a rendered mp4 → GIF (25 fps, one palette, no sound), for samples with `gif: true`.
from davs_model.rendering.outputs import video_to_gif
from davs_model.utils.logging import log_to

with log_to(snakemake.log[0]):
    video_to_gif(snakemake.input.mp4, snakemake.output.gif)

rule render_sample:
    input:
        unpack(render_sample_inputs),
    output:
        mp4=report(
            "results/render/main/{sample}.mp4",
            category="Samples",
            caption="../report/sample.rst",
            labels={"sample": "{sample}", "file": "video"},
        ),
        side_by_side="results/render/main/{sample}_side_by_side.mp4",
        grid=report(
            "results/render/main/{sample}.png",
            category="Samples",
            caption="../report/sample.rst",
            labels={"sample": "{sample}", "file": "stills"},
        ),
    log:
        "logs/render_sample/{sample}.log",
    benchmark:
        "benchmarks/render_sample/{sample}.tsv"
    conda:
        "../envs/davs.yaml"
    threads: 2
    resources:
        gpu=min(train_gpus(), 1),
        mem_mb=8000,
        runtime=60,
    params:
        sample=render_sample_params,
        grid_frames=config["render"]["grid_frames"],
        paste_back=RENDER.paste_back,
    script:
        "../scripts/render_sample.py"


rule render_gif:
    input:
        mp4="results/render/main/{sample}.mp4",
    output:
        gif="results/render/main/{sample}.gif",
    log:
        "logs/render_gif/{sample}.log",
    benchmark:
        "benchmarks/render_gif/{sample}.tsv"
    conda:
        "../envs/davs.yaml"
    script:
        "../scripts/render_gif.py"


rule render_samples:
    input:
        rendered_samples(),


localrules:
    render_samples,
    render_gif,

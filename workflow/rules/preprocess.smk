rule build_shard:
    input:
        videos=shard_inputs,
    output:
        shard="results/shards/{split}/{shard}.h5",
        qc="results/shards/{split}/{shard}.qc.tsv",
    log:
        "logs/build_shard/{split}/{shard}.log",
    benchmark:
        "benchmarks/build_shard/{split}/{shard}.tsv"
    conda:
        "../envs/davs.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
    params:
        clips=shard_params,
        files=shard_fingerprint,
        sources=sources_param(),
        preprocess=config["preprocess"],
        format_version=SHARD_FORMAT_VERSION,
    script:
        "../scripts/build_shard.py"


rule index_shards:
    input:
        shards=split_shards,
    output:
        index="results/shards/{split}/index.json",
    log:
        "logs/index_shards/{split}.log",
    benchmark:
        "benchmarks/index_shards/{split}.tsv"
    conda:
        "../envs/davs.yaml"
    params:
        format_version=SHARD_FORMAT_VERSION,
    script:
        "../scripts/index_shards.py"


rule qc_manifest:
    input:
        qc=all_qc_tables(),
    output:
        manifest="results/qc/manifest.tsv",
        summary="results/qc/summary.json",
        plot=report(
            "results/qc/qc.png", category="Preprocessing", caption="../report/qc.rst"
        ),
    log:
        "logs/qc_manifest/qc_manifest.log",
    benchmark:
        "benchmarks/qc_manifest/qc_manifest.tsv"
    conda:
        "../envs/davs.yaml"
    script:
        "../scripts/qc_manifest.py"


rule export_original_layout:
    input:
        index=expand("results/shards/{split}/index.json", split=SPLITS),
        shards=[path for split in SPLITS for path in shards_of(split)],
    output:
        data=directory("results/original_layout"),
    log:
        "logs/export_original_layout/export_original_layout.log",
    benchmark:
        "benchmarks/export_original_layout/export_original_layout.tsv"
    conda:
        "../envs/davs.yaml"
    script:
        "../scripts/export_original_layout.py"


rule preprocess:
    input:
        expand("results/shards/{split}/index.json", split=SPLITS),
        "results/qc/manifest.tsv",


rule export_original:
    input:
        rules.export_original_layout.output,


localrules:
    preprocess,
    train,
    export_original,
    index_shards,
    qc_manifest,

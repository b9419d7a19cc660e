rule evaluate_model:
    input:
        model=evaluation_model(),
        shards=shards_of(config["evaluate"]["split"]),
        syncnet=EVALUATE.syncnet.weights or [],
    output:
        json=report(
            "results/evaluate/main/metrics.json",
            category="Evaluation",
            caption="../report/metrics.rst",
            labels={"run": "main", "file": "metrics (JSON)"},
        ),
        md=report(
            "results/evaluate/main/metrics.md",
            category="Evaluation",
            caption="../report/metrics.rst",
            labels={"run": "main", "file": "metrics table (Markdown)"},
        ),
        png=report(
            "results/evaluate/main/metrics.png",
            category="Evaluation",
            caption="../report/metrics.rst",
            labels={"run": "main", "file": "metrics plot"},
        ),
    log:
        "logs/evaluate_model/main.log",
    benchmark:
        "benchmarks/evaluate_model/main.tsv"
    conda:
        "../envs/davs.yaml"
    threads: 2
    resources:
        gpu=min(train_gpus(), 1),
        mem_mb=16000,
        runtime=8 * 60,
    params:
        evaluate=config["evaluate"],
        format_version=CHECKPOINT_FORMAT_VERSION,
        # LSE needs the clips' audio, which the shards do not hold: their source videos (only with SyncNet weights)
        audio_paths=(
            {c.clip_id: c.path for c in CLIPS if c.split == EVALUATE.split}
            if EVALUATE.syncnet.weights
            else None
        ),
    script:
        "../scripts/evaluate_model.py"


rule evaluate:
    input:
        rules.evaluate_model.output,


localrules:
    evaluate,

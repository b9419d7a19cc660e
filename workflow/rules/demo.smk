if demo_videos():

    rule make_demo_data:
        output:
            videos=demo_videos(),
        log:
            "logs/make_demo_data/make_demo_data.log",
        benchmark:
            "benchmarks/make_demo_data/make_demo_data.tsv"
        conda:
            "../envs/davs.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=30,
        params:
            demo=config["demo"],
        script:
            "../scripts/make_demo_data.py"

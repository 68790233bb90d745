rule train:
    input:
        dataset=PATHS.dataset,
        stats=PATHS.stats,
    output:
        model=PATHS.model("{method}"),
        history=PATHS.history("{method}"),
    log:
        PATHS.log("train_{method}"),
    benchmark:
        PATHS.root / "benchmarks" / "train_{method}.tsv"
    conda:
        "../../envs/gpu.yaml"
    threads: TRAIN_THREADS
    params:
        config=stage_config("train"),
    shell:
        "climai train --config-json {params.config:q} --method {wildcards.method:q} "
        "--threads {threads} > {log:q} 2>&1"

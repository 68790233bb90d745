rule train:
    input:
        unpack(train_inputs),
    output:
        model=PATHS.model("{method}"),
        history=PATHS.history("{method}"),
        validation=PATHS.validation("{method}"),
    log:
        PATHS.log("train_{method}"),
    benchmark:
        PATHS.root / "benchmarks" / "train_{method}.tsv"
    conda:
        "../../envs/gpu.yaml"
    threads: train_threads
    # trainings first: they are the campaign's critical path (a fine-tuned model waits for its
    # parent), the baselines' short jobs fill the cores around them
    priority: 10
    params:
        config=stage_config("train"),
    shell:
        "climai train --config-json {params.config:q} --method {wildcards.method:q} "
        "--threads {threads} > {log:q} 2>&1"

rule train:
    input:
        unpack(train_inputs),
        settings=stage_settings("train"),
    output:
        model=PATHS.model("{method}"),
        history=PATHS.history("{method}"),
        validation=PATHS.validation("{method}"),
        runtime=PATHS.runtime("train", "{method}"),
    log:
        PATHS.log("train_{method}"),
    benchmark:
        PATHS.root / "benchmarks" / "train_{method}.tsv"
    conda:
        "../../envs/gpu.yaml"
    threads: job_threads("train", torch_threads)
    resources:
        **job_resources("train"),
    params:
        config=stage_config("train"),
    shell:
        "climai train --config-json {params.config:q} --method {wildcards.method:q} "
        "--threads {threads} --job-log {log:q} > {log:q} 2>&1"

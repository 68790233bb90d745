rule preprocess:
    input:
        target=PATHS.target,
        static=PATHS.static,
        **INPUT_STORE,
        settings=stage_settings("preprocess"),
    output:
        dataset=directory(PATHS.preprocessed),
        stats=PATHS.preprocessed_stats,
    log:
        PATHS.log("preprocess"),
    benchmark:
        PATHS.root / "benchmarks" / "preprocess.tsv"
    conda:
        "../../envs/cpu.yaml"
    threads: job_threads("preprocess", all_cores)
    resources:
        **job_resources("preprocess"),
    params:
        config=stage_config("preprocess"),
    shell:
        "climai preprocess --config-json {params.config:q} --threads {threads} "
        "--job-log {log:q} > {log:q} 2>&1"

rule ingest:
    input:
        ingest_inputs,
        settings=stage_settings("ingest"),
    output:
        target=directory(PATHS.target),
        static=directory(PATHS.static),
        **{k: directory(v) for k, v in INPUT_STORE.items()},
    log:
        PATHS.log("ingest"),
    benchmark:
        PATHS.root / "benchmarks" / "ingest.tsv"
    conda:
        "../../envs/cpu.yaml"
    threads: job_threads("ingest", one_core)
    resources:
        **job_resources("ingest"),
    params:
        config=stage_config("ingest"),
    shell:
        "climai ingest --config-json {params.config:q} --threads {threads} --job-log {log:q} > {log:q} 2>&1"

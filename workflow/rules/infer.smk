rule infer:
    input:
        unpack(infer_inputs),
    output:
        downscaled=directory(PATHS.downscaled("{method}")),
        runtime=PATHS.runtime("infer", "{method}"),
    log:
        PATHS.log("infer_{method}"),
    benchmark:
        PATHS.root / "benchmarks" / "infer_{method}.tsv"
    conda:
        "../../envs/gpu.yaml"
    threads: job_threads("infer", infer_threads)
    resources:
        **job_resources("infer"),
    params:
        config=stage_config("infer"),
    shell:
        "climai infer --config-json {params.config:q} --method {wildcards.method:q} "
        "--threads {threads} > {log:q} 2>&1"

rule export:
    input:
        downscaled=PATHS.downscaled("{method}"),
        settings=stage_settings("export"),
    output:
        netcdf=[PATHS.export("{method}", v) for v in CFG.variable_names],
    log:
        PATHS.log("export_{method}"),
    benchmark:
        PATHS.root / "benchmarks" / "export_{method}.tsv"
    conda:
        "../../envs/cpu.yaml"
    threads: job_threads("export", all_cores)
    resources:
        **job_resources("export"),
    params:
        config=stage_config("export"),
    shell:
        "climai export --config-json {params.config:q} --method {wildcards.method:q} "
        "--threads {threads} --job-log {log:q} > {log:q} 2>&1"

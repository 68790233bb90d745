rule manifest:
    localrule: runs_beside_snakemake("manifest")
    input:
        metrics=[PATHS.metrics(m) for m in METHODS],
        models=[PATHS.model(m) for m in EMULATORS],
        runtime=[PATHS.runtime(r, m) for r in ("train", "infer") for m in EMULATORS]
        + [PATHS.runtime("infer", m) for m in METHODS if m not in EMULATORS],
        summary=PATHS.summary,
        exports=[PATHS.export(m, v) for m in METHODS for v in CFG.variable_names],
        settings=stage_settings("manifest"),
    output:
        manifest=PATHS.manifest,
    log:
        PATHS.log("manifest"),
    benchmark:
        PATHS.root / "benchmarks" / "manifest.tsv"
    conda:
        "../../envs/cpu.yaml"
    threads: job_threads("manifest", one_core)
    resources:
        **job_resources("manifest"),
    params:
        config=stage_config("manifest"),
    shell:
        "climai manifest --config-json {params.config:q} --threads {threads} --job-log {log:q} > {log:q} 2>&1"

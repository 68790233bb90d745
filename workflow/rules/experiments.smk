rule sweep:
    localrule: runs_beside_snakemake("sweep")
    input:
        validation=sweep_inputs,
        settings=stage_settings("sweep"),
    output:
        csv=PATHS.sweep_csv("{sweep}"),
        md=PATHS.sweep_md("{sweep}"),
        html=report(
            PATHS.sweep_html("{sweep}"),
            caption="../report/sweep.rst",
            category="3. Experiments",
            subcategory="sweep {sweep}",
            labels={"sweep": "{sweep}", "figure": "table"},
        ),
        figure=report(
            PATHS.sweep_figure("{sweep}"),
            caption="../report/sweep.rst",
            category="3. Experiments",
            subcategory="sweep {sweep}",
            labels={"sweep": "{sweep}", "figure": "ranking"},
        ),
    log:
        PATHS.log("sweep_{sweep}"),
    benchmark:
        PATHS.root / "benchmarks" / "sweep_{sweep}.tsv"
    conda:
        "../../envs/cpu.yaml"
    threads: job_threads("sweep", one_core)
    resources:
        **job_resources("sweep"),
    params:
        config=stage_config("sweep"),
        methods=sweep_variants,
    shell:
        "climai sweep --config-json {params.config:q} --name {wildcards.sweep:q} "
        "--methods {params.methods:q} --threads {threads} --job-log {log:q} > {log:q} 2>&1"


rule lineage:
    localrule: runs_beside_snakemake("lineage")
    input:
        validation=[PATHS.validation(m) for m in FINE_TUNED],
        settings=stage_settings("lineage"),
    output:
        html=report(
            PATHS.lineage,
            caption="../report/lineage.rst",
            category="3. Experiments",
            labels={"name": "lineage of fine-tuned models"},
        ),
    log:
        PATHS.log("lineage"),
    benchmark:
        PATHS.root / "benchmarks" / "lineage.tsv"
    conda:
        "../../envs/cpu.yaml"
    threads: job_threads("lineage", one_core)
    resources:
        **job_resources("lineage"),
    params:
        config=stage_config("lineage"),
        methods=FINE_TUNED,
    shell:
        "climai lineage --config-json {params.config:q} --methods {params.methods:q} "
        "--threads {threads} --job-log {log:q} > {log:q} 2>&1"

rule evaluate:
    input:
        dataset=PATHS.dataset,
        downscaled=PATHS.downscaled("{method}"),
    output:
        metrics=PATHS.metrics("{method}"),
        spectra=PATHS.spectra("{method}"),
        maps=PATHS.maps("{method}"),
    log:
        PATHS.log("evaluate_{method}"),
    conda:
        "../../envs/cpu.yaml"
    threads: 1
    params:
        config=stage_config("evaluate"),
    shell:
        "climai evaluate --config-json {params.config:q} --method {wildcards.method:q} "
        "--threads {threads} > {log:q} 2>&1"


rule compare:
    input:
        dataset=PATHS.dataset,
        metrics=[PATHS.metrics(m) for m in METHODS],
        downscaled=[PATHS.downscaled(m) for m in METHODS],
    output:
        figure=PATHS.comparison,
        summary=PATHS.summary,
    log:
        PATHS.log("compare"),
    conda:
        "../../envs/cpu.yaml"
    threads: 1
    params:
        config=stage_config("evaluate"),
        methods=METHODS,
    shell:
        "climai compare --config-json {params.config:q} --methods {params.methods:q} "
        "--threads {threads} > {log:q} 2>&1"

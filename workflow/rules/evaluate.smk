rule evaluate:
    input:
        dataset=PATHS.dataset,
        downscaled=PATHS.downscaled("{method}"),
        settings=stage_settings("evaluate"),
    output:
        metrics=PATHS.metrics("{method}"),
        spectra=PATHS.spectra("{method}"),
        curves=PATHS.curves("{method}"),
        maps=report(
            PATHS.maps("{method}"),
            caption="../report/method_maps.rst",
            category="2. Methods",
            subcategory="{method}",
            labels={"method": "{method}", "figure": "maps"},
        ),
        spectra_figure=report(
            PATHS.spectra_figure("{method}"),
            caption="../report/method_spectra.rst",
            category="2. Methods",
            subcategory="{method}",
            labels={"method": "{method}", "figure": "spectra"},
        ),
        qq=report(
            PATHS.qq("{method}"),
            caption="../report/method_qq.rst",
            category="2. Methods",
            subcategory="{method}",
            labels={"method": "{method}", "figure": "QQ"},
        ),
    log:
        PATHS.log("evaluate_{method}"),
    benchmark:
        PATHS.root / "benchmarks" / "evaluate_{method}.tsv"
    conda:
        "../../envs/cpu.yaml"
    threads: job_threads("evaluate", all_cores)
    resources:
        **job_resources("evaluate"),
    params:
        config=stage_config("evaluate"),
    shell:
        "climai evaluate --config-json {params.config:q} --method {wildcards.method:q} "
        "--threads {threads} --job-log {log:q} > {log:q} 2>&1"


rule compare:
    localrule: runs_beside_snakemake("compare")
    input:
        dataset=PATHS.dataset,
        metrics=[PATHS.metrics(m) for m in METHODS],
        downscaled=[PATHS.downscaled(m) for m in METHODS],
        curves=[PATHS.curves(m) for m in METHODS],
        histories=[PATHS.history(m) for m in EMULATORS],
        settings=stage_settings("compare"),
    output:
        summary=PATHS.summary,
        summary_md=PATHS.summary_md,
        summary_html=report(
            PATHS.summary_html,
            caption="../report/summary.rst",
            category="1. Campaign",
            labels={"name": "metrics table and config"},
        ),
        jobs=report(
            PATHS.jobs_html,
            caption="../report/jobs.rst",
            category="1. Campaign",
            labels={"name": "jobs: predicted vs measured"},
        ),
        figure=report(
            PATHS.comparison,
            caption="../report/comparison.rst",
            category="1. Campaign",
            labels={"name": "maps of all methods"},
        ),
        overview=report(
            PATHS.overview,
            caption="../report/overview.rst",
            category="1. Campaign",
            labels={"name": "whole domain with a zoom"},
        ),
        spectra=report(
            PATHS.comparison_spectra,
            caption="../report/spectra.rst",
            category="1. Campaign",
            labels={"name": "power spectra"},
        ),
        qq=report(
            PATHS.comparison_qq,
            caption="../report/qq.rst",
            category="1. Campaign",
            labels={"name": "QQ plots"},
        ),
        **(
            {
                "rank_histograms": report(
                    PATHS.rank_histograms,
                    caption="../report/rank_histograms.rst",
                    category="1. Campaign",
                    labels={"name": "rank histograms"},
                )
            }
            if ENSEMBLES
            else {}
        ),
        **(
            {
                "learning_curves": report(
                    PATHS.learning_curves,
                    caption="../report/learning_curves.rst",
                    category="1. Campaign",
                    labels={"name": "learning curves"},
                )
            }
            if EMULATORS
            else {}
        ),
    log:
        PATHS.log("compare"),
    benchmark:
        PATHS.root / "benchmarks" / "compare.tsv"
    conda:
        "../../envs/cpu.yaml"
    threads: job_threads("compare", all_cores)
    resources:
        **job_resources("compare"),
    params:
        config=stage_config("compare"),
        methods=METHODS,
    shell:
        "climai compare --config-json {params.config:q} --methods {params.methods:q} "
        "--threads {threads} --job-log {log:q} > {log:q} 2>&1"

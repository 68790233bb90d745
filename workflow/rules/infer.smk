rule infer:
    wildcard_constraints:
        method=method_regex([m for m in METHODS if m not in SPLIT]),
    input:
        unpack(infer_inputs),
        settings=stage_settings("infer"),
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
        "--threads {threads} --job-log {log:q} > {log:q} 2>&1"


# An infer too long for any partition (an emulator's, or a baseline's but a whole-series one,
# qdm; climai/sizing.py): SPLIT[method] jobs over contiguous time blocks of the test split, each
# writing its own store, joined by infer_gather into the one downscaled/<method>/test.zarr
# (equal, bit for bit, to an unsplit infer's).
rule infer_block:
    wildcard_constraints:
        method=method_regex(SPLIT),
        block=r"\d+",
    input:
        unpack(infer_inputs),
        settings=stage_settings("infer"),
    output:
        block=directory(PATHS.downscaled_block("{method}", "{block}")),
        runtime=PATHS.runtime("infer_block", "{method}_{block}"),
    log:
        PATHS.log("infer_block_{method}_{block}"),
    benchmark:
        PATHS.root / "benchmarks" / "infer_block_{method}_{block}.tsv"
    conda:
        "../../envs/gpu.yaml"
    threads: job_threads("infer_block", infer_threads)
    resources:
        **job_resources("infer_block"),
    params:
        config=stage_config("infer"),
        blocks=lambda wildcards: SPLIT[wildcards.method],
    shell:
        "climai infer_block --config-json {params.config:q} --method {wildcards.method:q} "
        "--block {wildcards.block} --blocks {params.blocks} --threads {threads} --job-log {log:q} > {log:q} 2>&1"


rule infer_gather:
    wildcard_constraints:
        method=method_regex(SPLIT),
    input:
        blocks=lambda wildcards: [
            PATHS.downscaled_block(wildcards.method, i) for i in range(SPLIT[wildcards.method])
        ],
        runtime=lambda wildcards: PATHS.runtime("infer_block", f"{wildcards.method}_0"),
        settings=stage_settings("infer"),
    output:
        downscaled=directory(PATHS.downscaled("{method}")),
        runtime=PATHS.runtime("infer", "{method}"),
    log:
        PATHS.log("infer_gather_{method}"),
    benchmark:
        PATHS.root / "benchmarks" / "infer_gather_{method}.tsv"
    conda:
        "../../envs/cpu.yaml"
    threads: job_threads("infer_gather", all_cores)
    resources:
        **job_resources("infer_gather"),
    params:
        config=stage_config("infer"),
        blocks=lambda wildcards: SPLIT[wildcards.method],
    shell:
        "climai infer_gather --config-json {params.config:q} --method {wildcards.method:q} "
        "--blocks {params.blocks} --threads {threads} --job-log {log:q} > {log:q} 2>&1"

# climai: the toy campaign by default; `--configfile config/campaigns/<x>.yaml` for another.
import os

from snakemake.utils import min_version

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


report: "workflow/report/workflow.rst"


# compare, manifest, sweep and lineage run beside Snakemake (on a cluster, on the node that runs
# it) instead of as SLURM jobs only while they are seconds of one-core work (each rule's
# `localrule:`, climai.sizing.beside_snakemake): a login node kills them after 10 CPU minutes.
localrules:
    all,


include: "workflow/rules/common.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/manifest.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/experiments.smk"


# A campaign's own rules (config key `rules`: docs/add-a-rule.md), after climai's.
for extra_rules in EXTRA_RULES:

    include: extra_rules



rule all:
    input:
        all_outputs,
    default_target: True


onerror:
    # a failed job's message where the user looks (its log holds the rest)
    for _message in failed_job_errors(log):
        print(_message, file=sys.stderr)

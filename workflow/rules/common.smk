# Validation of the config, and the input, threads and resources functions of every rule.
from climai.config import (
    ConfigError,
    canonical_json,
    rule_files,
    stage_slice,
    validate_config,
)
from climai.config.loading import order_like, restore_empty_mappings
from climai.config.slices import RUN_KEYS_ENV, split_run_keys
from climai.io.headers import check_before_jobs
from climai.io.settings import only_inspects, refresh_settings, settings_text
from climai.hpc import job_size
from climai.plan import (
    argv_partitions,
    argv_qos,
    argv_set_resources,
    campaign_plans,
    uses_gpus,
)
from climai.sizing import JobTooLarge, Sizer, beside_snakemake, choose_partition, retry_size
from climai.io.readers import SourceError
from climai.manifest import input_paths
from climai.parents import parent_model, pooled_datasets
import json
import re
import yaml
import sys
from pathlib import Path

from climai.paths import CampaignPaths
from climai.registry import method_type

# `{}` in a --configfile must switch on what config.yaml sets to null (Snakemake keeps the null)
restore_empty_mappings(config, workflow.config_settings.overwrite_config or {})
# and in config.yaml's key order, as `climai --configfile` merges: Snakemake puts a --configfile's
# keys first, so naming a method there reordered the methods (compare's rows and params: a rerun)
with open(Path(workflow.basedir) / "config" / "config.yaml") as _defaults:
    order_like(config, yaml.safe_load(_defaults) or {})
try:
    CFG = validate_config(config)
    # a campaign's own rule files, confined to the working folder (docs/security.md)
    EXTRA_RULES = [str(p) for p in rule_files(CFG)]
    # converters, a reused dataset and the source files' headers (variables, units, coordinates,
    # GRIB keys, domain, patches), checked before any job so that a bad config is named here, not
    # in a job's log; the headers once per file, not again inside a cluster job
    check_before_jobs(CFG, files=not workflow.remote_exec)
except ConfigError as err:
    raise WorkflowError(str(err)) from None
except SourceError as err:
    raise WorkflowError(f"{err}\n(checked in the source files' headers before any job)") from None

# progress bars, checkpoint intervals: handed to the jobs apart from their slices, so that
# changing one reruns nothing (climai/config/slices.py, RUN_KEYS)
os.environ[RUN_KEYS_ENV] = json.dumps(split_run_keys(CFG.model_dump(mode="json", by_alias=True))[1])
PATHS = CampaignPaths(CFG.campaign_dir, CFG.prepared_dir)
# ingest/input.zarr exists only with data.input (else LR is the block mean of the target)
INPUT_STORE = {"inputs": PATHS.input} if CFG.data.input is not None else {}
METHODS = CFG.methods.enabled()
EMULATORS = CFG.methods.of_kind("emulator")
ENSEMBLES = CFG.methods.ensembles()
# Extra rule files of the campaign (config key `rules`), included by the Snakefile after climai's
# own; they may append files to EXTRA_TARGETS for `rule all` (docs/add-a-rule.md).
EXTRA_TARGETS = []
CLIMAI_ENVS = Path(workflow.basedir) / "envs"  # conda environments for extra rules
SWEEPS = CFG.sweeps  # swept method → its variants (each a method of its own)
FINE_TUNED = [m for m in EMULATORS if parent_model(CFG, m) is not None]
# The workflow checkout, for the provenance of every output (climai/io/provenance.py): the
# commit of the code that ran, however climai itself is installed.
os.environ.update(CLIMAI_WORKFLOW_DIR=str(workflow.basedir))
# Threads of the parallel rules: every core of a local run (`--cores N`); 1 when no --cores is
# given (a dry run, a cluster run's controller). Inside a cluster job its own Snakemake runs with
# `--mode remote` and `--cores all`: ALL_CORES is then the job's allocation, which the job uses
# whole (job_threads).
ALL_CORES = workflow.resource_settings.cores or 1
IN_CLUSTER_JOB = workflow.remote_exec
# Every job's size from the cost model (climai/sizing.py), checked against the partitions of the
# site profile (--profile's slurm-partition-config, passed on to the jobs in $CLIMAI_PARTITIONS)
# now, before any submission. None: the grid is unknown before ingest (fixed sizes, hpc.JOB_SIZES).
PARTITIONS = argv_partitions(sys.argv)
QOS = argv_qos(sys.argv)  # partition → its QOS (a debug profile's qos.yaml), else empty
try:
    # with the profile's set-resources, as Snakemake submits the jobs: a job too long for every
    # partition runs when the profile gives it a partition and limit of its own (a longer QOS);
    # a cluster job's Snakemake (no --profile) leaves that check to the controller
    PLANS = campaign_plans(
        CFG,
        Sizer.load(PARTITIONS, uses_gpus(PARTITIONS)),
        argv_set_resources(sys.argv),
        strict=not IN_CLUSTER_JOB,
    )
except (JobTooLarge, FileNotFoundError, SourceError) as err:  # SourceError: the target's shape
    raise WorkflowError(str(err)) from None
# Emulators whose infer is split into time blocks (infer_block jobs, then infer_gather).
SPLIT = {m: p.jobs for (rule, m), p in (PLANS or {}).items() if rule == "infer_block"}


def torch_threads(wildcards):
    """The cores a train or infer job of an emulator is scheduled with: the torch threads the
    campaign fixes (compute.threads, or the method's threads), at most --cores. These only
    schedule: the job computes with the campaign's thread count whatever it is given, so the
    numbers do not depend on --cores (README "Reproducibility")."""
    return min(CFG.torch_threads(wildcards.method), ALL_CORES)


def infer_threads(wildcards):
    """Emulators infer with their torch threads; baselines (numpy on a few LR fields) with one
    thread, so they run beside a training instead of waiting for every core."""
    return torch_threads(wildcards) if wildcards.method in EMULATORS else 1


def one_core(wildcards):
    """Serial stages of a local run (and a dry run's threads without --cores)."""
    return 1


def all_cores(wildcards):
    """Every core of a local run, at most the job's sized cores (preprocess: dask; evaluate,
    compare: streamed scoring; export and infer_gather: chunks in threads)."""
    return ALL_CORES


def job_size_of(rule_name, wildcards):
    """The size of a job of ``rule_name``: the cost model's (PLANS), or before the grid is known
    climai.hpc.JOB_SIZES (infer's by the method's kind and infer.device: only emulators on a GPU
    ask for GPUs)."""
    method = wildcards.get("method")
    if PLANS is not None and (rule_name, method) in PLANS:
        return PLANS[(rule_name, method)].size
    if rule_name != "infer" or method is None:
        return job_size(rule_name)
    kind = method_type(CFG.methods.type_of(method)).kind
    return job_size(rule_name, kind, CFG.infer.device)


def job_partition(rule_name, wildcards, size):
    """The site partition a job of ``rule_name`` is planned in (None in a local run)."""
    plan = (PLANS or {}).get((rule_name, wildcards.get("method")))
    named = {p.name: p for p in PARTITIONS or []}
    if plan is not None and plan.partition in named:
        return named[plan.partition]
    return choose_partition(size, PARTITIONS) if PARTITIONS else None


def job_resources(rule):
    """A rule's ``resources:`` per job: cores, memory, minutes and GPUs (``gres``, GPU jobs only).
    The SLURM plugin picks the partition that fits them from the site profile's partitions.yaml;
    a profile's ``set-resources`` overrides any of them, ``slurm_partition`` included. With a
    profile's ``qos.yaml`` (QOS), a job whose partition has a QOS there asks it, on that
    partition by name. A retry (the profile's ``retries``) asks attempt × the minutes and memory,
    within its partition's limits (climai.sizing.retry_size)."""

    def resource(name):
        def value(wildcards, attempt):  # a retry (retries: in the profile) asks more time/memory
            size = job_size_of(rule, wildcards)
            return retry_size(size, attempt, job_partition(rule, wildcards, size)).resources().get(name)

        value.__name__ = f"{rule}_{name}"
        return value

    def partition_qos(wildcards):
        plan = (PLANS or {}).get((rule, wildcards.get("method")))
        return None if plan is None else QOS.get(plan.partition)

    def partition(wildcards):  # named with its QOS, so that the two agree
        plan = (PLANS or {}).get((rule, wildcards.get("method")))
        return plan.partition if plan is not None and plan.partition in QOS else None

    sized = {name: resource(name) for name in ("cpus_per_task", "mem_mb", "runtime", "gres")}
    if not QOS:
        return sized
    return {**sized, "qos": partition_qos, "slurm_partition": partition}


def runs_beside_snakemake(rule):
    """A ``localrule:`` of compare, manifest, sweep and lineage: beside Snakemake only while its
    plan is seconds of one-core work; else a job sized and placed like any other."""
    return beside_snakemake((PLANS or {}).get((rule, None)))


def job_threads(rule, local):
    """A rule's threads: ``local(wildcards)`` cores in a local run (its share of --cores), every
    core of the allocation inside a cluster job; never more than the job asks (cpus_per_task)."""

    def threads(wildcards):
        cores = ALL_CORES if IN_CLUSTER_JOB else local(wildcards)
        return max(1, min(cores, job_size_of(rule, wildcards).cpus))

    threads.__name__ = f"{rule}_threads"
    return threads


def method_regex(methods):
    """A wildcard constraint matching exactly ``methods`` (nothing when empty)."""
    return "|".join(re.escape(m) for m in methods) or "(?!)"


wildcard_constraints:
    method="|".join(re.escape(m) for m in METHODS) or "none",
    sweep="|".join(re.escape(m) for m in SWEEPS) or "none",


def stage_config(stage):
    """A params function: the JSON config slice a stage depends on (reruns when it changes),
    without the keys that change no output (RUN_KEYS_ENV, set above, carries those)."""

    def params(wildcards):
        return canonical_json(split_run_keys(stage_slice(CFG, stage, wildcards.get("method")))[0])

    return params


def stage_settings(stage):
    """An input function: the settings file of ``stage`` (for the job's method), brought to the
    current config when the Snakefile was parsed (refresh_all_settings); absent from the inputs
    only where a dry run found none yet."""

    def settings(wildcards):
        path = PATHS.settings(stage, wildcards.get("method"))
        return path if path.is_file() else []

    settings.__name__ = f"{stage}_settings"
    return settings


def refresh_all_settings():
    """Each stage's settings file brought to the current config now, before Snakemake lists the
    folders (it caches what exists): rewritten when changed, so newer than the stage's outputs
    and the job reruns by modification time, even where Snakemake holds no record of its params
    (another working folder, ``results:`` spelled otherwise: climai/io/settings.py). A dry run,
    --summary or a graph writes none (a setting tried and reverted reruns nothing) and says
    which jobs a run redoes; a cluster job's Snakemake only reads them."""
    per_method = {"train": EMULATORS, "infer": METHODS, "evaluate": METHODS, "export": METHODS}
    keys = [(s, None) for s in ("ingest", "preprocess", "compare", "manifest")]
    keys += [("sweep", None)] * bool(SWEEPS) + [("lineage", None)] * bool(FINE_TUNED)
    keys += [(s, m) for s, methods in per_method.items() for m in methods]
    states = []
    for stage, method in keys:
        text = settings_text(stage_slice(CFG, stage, method))
        path = PATHS.settings(stage, method)
        states.append(refresh_settings(path, text, write=EXECUTES))
        if states[-1] == "changed" and not EXECUTES:
            print(
                f"climai: the settings of {' '.join(filter(None, (stage, method)))} differ "
                f"from {path}: a run redoes it and what follows, whatever this plan lists",
                file=sys.stderr,
            )
    if not EXECUTES and "new" in states and PATHS.root.is_dir():
        print(
            f"climai: {PATHS.root / 'settings'} lacks settings files: a run writes them and "
            "reruns once the jobs Snakemake recorded without them (snakemake --touch keeps "
            "outputs whose settings are unchanged)",
            file=sys.stderr,
        )


# a run that executes jobs (not a dry run, --summary, a graph...; not a cluster job's Snakemake)
EXECUTES = not (IN_CLUSTER_JOB or workflow.output_settings.dryrun or only_inspects(sys.argv))
if not IN_CLUSTER_JOB:
    refresh_all_settings()


def ingest_inputs(wildcards):
    """The campaign's local input files: a changed file reruns ingest and what follows."""
    return [p for p in input_paths(CFG) if "://" not in p]


def train_inputs(wildcards):
    """The dataset, and the parent model of a fine-tuned method (init_from): a DAG dependency
    that this workflow builds when the parent is a method of this campaign; another campaign's
    model must exist (run that campaign first)."""
    inputs = {"dataset": PATHS.dataset, "stats": PATHS.stats}
    parent = parent_model(CFG, wildcards.method)
    if parent is not None:
        inputs["parent"] = parent
    for name, dataset in pooled_datasets(CFG, wildcards.method).items():
        inputs["train_on_" + name.replace("-", "_")] = dataset  # train_on, validate_on
    return inputs


def sweep_inputs(wildcards):
    """The validation scores of every variant of a sweep (never its test metrics)."""
    return [PATHS.validation(m) for m in SWEEPS[wildcards.sweep]]


def sweep_variants(wildcards):
    return SWEEPS[wildcards.sweep]


def infer_inputs(wildcards):
    """The dataset, and the trained model for emulators (baselines need no training)."""
    inputs = {"dataset": PATHS.dataset, "stats": PATHS.stats}
    if wildcards.method in EMULATORS:
        inputs["model"] = PATHS.model(wildcards.method)
    return inputs


def all_outputs(wildcards):
    """Every method's metrics, figure and NetCDF export, the comparison and the manifest."""
    outs = [PATHS.comparison, PATHS.summary, PATHS.summary_md, PATHS.manifest]
    outs += [PATHS.metrics(m) for m in METHODS]
    outs += [PATHS.export(m, v) for m in METHODS for v in CFG.variable_names]
    outs += [PATHS.sweep_md(name) for name in SWEEPS]
    outs += [PATHS.lineage] if FINE_TUNED else []
    return outs + EXTRA_TARGETS


def failed_job_errors(snakemake_logs, tail=5):
    """The error of each failed job, from its own log (its last attempt): the ``climai <stage>:
    error:`` line and the lines after it (at most 20), else the log's last lines. Snakemake's
    log (``snakemake_logs``) names the failed jobs' logs."""
    job_logs = []
    for name in snakemake_logs or []:
        try:
            text = Path(name).read_text(errors="replace")
        except OSError:
            continue
        for block in re.split(r"Error in rule\s", text)[1:]:
            found = re.search(r"^\s+log: (.+?) \(check log file", block, re.MULTILINE)
            job_logs += found.group(1).split(", ") if found else []
    out = []
    for job_log in dict.fromkeys(job_logs):
        try:
            lines = Path(job_log).read_text(errors="replace").rstrip().splitlines()
        except OSError:
            continue
        # the error with its continuation lines (a config error names the key on the next line)
        first = next((i for i, ln in enumerate(lines) if re.match(r"climai \S+: error: ", ln)), None)
        errors = lines[first : first + 20] if first is not None else lines[-tail:]
        out.append(f"{job_log}:\n    " + "\n    ".join(errors))
    return out

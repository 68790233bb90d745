"""``climai plan``: every job of a campaign, its size and partition, the node-hours and the
critical path, before anything is submitted (sizes from :mod:`climai.sizing`).

The jobs are those the workflow builds (:func:`campaign_jobs`): ingest and preprocess (unless the
campaign reuses another's prepared data), train per emulator, infer, evaluate and export per
method, compare and manifest, a sweep's ranking and the lineage page. The critical path follows
the workflow's dependencies: ingest → preprocess → a method's training chain (a fine-tuned
method after its parent) → infer → evaluate → compare → manifest.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from climai.cost import Estimate, Workload
from climai.hpc import JobSize
from climai.sizing import (
    JobPlan,
    JobTooLarge,
    Partition,
    Sizer,
    campaign_workload,
    pooled_missing,
    read_partitions,
    size_rule,
)

if TYPE_CHECKING:
    from climai.config.campaign import CampaignConfig

#: The keys of ``climai plan --format json``, one object per rule and method.
JSON_KEYS = ("rule", "method", "jobs", "partition", "qos", "cpus", "gpus", "mem_mb", "runtime_min",
             "node_hours")  # fmt: skip


def profile_dir(profile: str | Path) -> Path:
    """A profile's folder, found as Snakemake finds it: the path, else the user folder's."""
    folder = Path(profile)
    if not folder.is_dir():
        from climai.hpc import snakemake_config_dir

        folder = snakemake_config_dir() / str(profile)
    if not any((folder / n).is_file() for n in ("profile.yaml", "config.yaml")):
        raise FileNotFoundError(f"profile {str(profile)!r}: no profile.yaml in {str(folder)!r}")
    return folder


def profile_settings(profile: str | Path) -> dict[str, Any]:
    """The keys of a profile's ``profile.yaml`` (or ``config.yaml``)."""
    import yaml

    folder = profile_dir(profile)
    name = next(n for n in ("profile.yaml", "config.yaml") if (folder / n).is_file())
    return yaml.safe_load((folder / name).read_text()) or {}


def partitions_file(profile: str | Path) -> Path | None:
    """The profile's ``slurm-partition-config`` file (None: a profile without partitions)."""
    value = profile_settings(profile).get("slurm-partition-config")
    return None if value is None else profile_dir(profile) / str(value)


def _option(argv: list[str], name: str) -> str | None:
    """The value of option ``name`` in a command line (``--name value`` or ``--name=value``)."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def argv_profiles(argv: list[str], env: Mapping[str, str] | None = None) -> list[str]:
    """The profiles of a Snakemake run, as Snakemake takes them: every ``--profile`` (later ones
    override earlier ones key by key), else ``$SNAKEMAKE_PROFILE``; ``none`` means none."""
    import os

    given = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--profile"]
    given += [a.split("=", 1)[1] for a in argv if a.startswith("--profile=")]
    if not given:
        value = (os.environ if env is None else env).get("SNAKEMAKE_PROFILE", "")
        given = [value] if value else []
    return [p for p in given if p != "none"]


def argv_partitions(argv: list[str]) -> list[Partition] | None:
    """The site's partitions for a Snakemake run: ``--slurm-partition-config``, else the
    profile's (:func:`argv_profiles`: ``--profile`` or ``$SNAKEMAKE_PROFILE``), else
    ``$CLIMAI_PARTITIONS`` (a cluster job inherits it); None for a run without (a local run).
    Sets ``$CLIMAI_PARTITIONS`` so that every job sizes alike."""
    import os

    path: Path | str | None = _option(argv, "--slurm-partition-config")
    for profile in reversed(argv_profiles(argv) if path is None else []):
        if (path := partitions_file(profile)) is not None:
            break
    if path is None:
        path = os.environ.get("CLIMAI_PARTITIONS")
    if not path:
        return None
    os.environ["CLIMAI_PARTITIONS"] = str(Path(path).resolve())
    return read_partitions(path)


def argv_qos(argv: list[str]) -> dict[str, str]:
    """Partition → the QOS its jobs ask, from the profile's ``qos.yaml`` (a debug profile:
    each partition's debug QOS); empty without one. The SLURM plugin's partition file cannot hold
    it (it refuses unknown keys), so climai reads it and gives each job the QOS of the partition
    its size puts it in, with that partition by name (``workflow/rules/common.smk``)."""
    import yaml

    files = [profile_dir(p) / "qos.yaml" for p in argv_profiles(argv)]
    path = next((f for f in reversed(files) if f.is_file()), None)
    if path is None:
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    qos = data.get("qos") if isinstance(data, dict) else None
    if not isinstance(qos, dict) or not all(isinstance(v, str) for v in qos.values()):
        raise ValueError(f"{str(path)!r}: expected 'qos:' mapping partition names to QOS names")
    return {str(k): v for k, v in qos.items()}


def uses_gpus(partitions: list[Partition] | None) -> bool:
    """Emulators compute on GPUs: where the site has GPU partitions, or this machine a GPU."""
    if partitions is not None:
        return any(p.max_gpu > 0 for p in partitions)
    return Path("/dev/nvidia0").exists()


def campaign_plans(
    cfg: CampaignConfig,
    sizer: Sizer,
    overrides: dict[str, dict[str, Any]] | None = None,
    strict: bool = True,
) -> dict[tuple[str, str | None], JobPlan] | None:
    """:func:`campaign_jobs` by ``(rule, method)``, with a profile's ``set-resources``
    (``overrides``, :func:`with_set_resources`) applied as Snakemake applies them: a job too
    large for every partition stops the run (``strict``: :class:`~climai.sizing.JobTooLarge`)
    unless the profile gives it resources that fit, or its own ``slurm_partition`` (e.g. a
    longer QOS). None when the grid is unknown before ingest."""
    if campaign_workload(cfg) is None:
        return None
    jobs = with_set_resources(campaign_jobs(cfg, sizer, strict=False), overrides or {},
                              sizer.partitions)  # fmt: skip
    problems = [j.problem for j in jobs if j.problem]
    if strict and problems:
        raise JobTooLarge("\n".join(problems))
    return {(j.rule, j.method): j for j in jobs}


def campaign_jobs(cfg: CampaignConfig, sizer: Sizer, strict: bool = True) -> list[JobPlan]:
    """Every rule and method of the campaign, sized. A job that fits no partition raises
    :class:`~climai.sizing.JobTooLarge` naming every such job, or with ``strict=False`` is listed
    with its ``problem`` and no partition."""
    from climai.parents import parent_model
    from climai.registry import method_type

    base = campaign_workload(cfg)
    if base is None:
        raise ValueError(
            f"the size of campaign {cfg.campaign!r}'s target is unknown until it is ingested: "
            f"run `snakemake ... {cfg.campaign_dir / 'ingest' / 'target.zarr'}` first"
        )
    todo: list[tuple[str, str | None, str | None, Workload]] = []
    if not cfg.reuses_data:
        todo += [("ingest", None, None, base), ("preprocess", None, None, base)]
    for m in cfg.methods.enabled():
        kind = method_type(cfg.methods.type_of(m)).kind
        w = campaign_workload(cfg, m)
        assert w is not None
        # a pooled training before its train_on campaigns are prepared: sized by JOB_SIZES
        train = kind == "emulator" and not pooled_missing(cfg, m)
        rules = (("train",) if train else ()) + ("infer", "evaluate", "export")
        todo += [(rule, m, kind, w) for rule in rules]
    todo += [("compare", None, None, base), ("manifest", None, None, base)]
    todo += [("sweep", None, None, base) for _ in cfg.sweeps]
    if any(parent_model(cfg, m) is not None for m in cfg.methods.of_kind("emulator")):
        todo.append(("lineage", None, None, base))
    jobs: list[JobPlan] = []
    problems = []
    for rule, m, kind, w in todo:
        try:
            jobs += size_rule(cfg, rule, m, kind, w, sizer)
        except JobTooLarge as err:
            problems.append(str(err.args[0]))
            jobs.append(replace(err.args[1], problem=str(err.args[0])))
    if strict and problems:
        raise JobTooLarge("\n".join(problems))
    return jobs


def argv_set_resources(argv: list[str]) -> dict[str, dict[str, Any]]:
    """The ``set-resources`` of a Snakemake run's profiles (:func:`argv_profiles`): the last
    profile that has the key (Snakemake merges profiles one top-level key at a time)."""
    found = [r for p in argv_profiles(argv) if (r := set_resources(p))]
    return found[-1] if found else {}


def set_resources(profile: str | Path | None) -> dict[str, dict[str, Any]]:
    """The ``--profile``'s ``set-resources`` (rule → resources); empty without a profile."""
    if profile is None:
        return {}
    value = profile_settings(profile).get("set-resources") or {}
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ValueError(
            f"profile {str(profile)!r}: set-resources must map rule names to resources, "
            f"got {value!r}"
        )
    return value


def with_set_resources(
    jobs: list[JobPlan], overrides: dict[str, dict[str, Any]], partitions: list[Partition] | None
) -> list[JobPlan]:
    """The jobs as a run submits them: Snakemake applies a profile's ``set-resources`` over the
    rules' own ``resources:`` (``cpus_per_task``, ``mem_mb``, ``runtime``, ``gres: gpu:N``,
    ``slurm_partition``), so the plan's sizes, partitions and node-hours follow them too."""
    from climai.sizing import choose_partition, job_plan

    out = []
    for j in jobs:
        res = overrides.get(j.rule)
        if not res:
            out.append(j)
            continue
        gpus = j.size.gpus
        if "gres" in res:
            m = re.fullmatch(r"gpu(?::[^:]+)?:(\d+)", str(res["gres"]))
            gpus = int(m[1]) if m else gpus
        size = replace(
            j.size,
            cpus=int(_number(res.get("cpus_per_task"), {}) or j.size.cpus),
            mem_mb=int(_number(res.get("mem_mb", res.get("mem")), _MB) or j.size.mem_mb),
            runtime=int(_number(res.get("runtime"), _MINUTES) or j.size.runtime),
            gpus=gpus,
        )
        named = res.get("slurm_partition")
        qos = str(res["qos"]) if res.get("qos") else j.qos
        part = None
        if partitions is not None:
            by_name = {p.name: p for p in partitions}
            part = by_name.get(str(named)) if named else choose_partition(size, partitions)
        if part is not None:
            out.append(replace(job_plan(j.rule, j.method, j.jobs, size, part, j.estimate),
                               problem=None, qos=qos))  # fmt: skip
        else:
            out.append(replace(j, size=size, partition=str(named) if named else j.partition,
                               qos=qos))  # fmt: skip
    return out


def with_qos(jobs: list[JobPlan], qos: dict[str, str]) -> list[JobPlan]:
    """The jobs with the QOS a run asks: their own (a profile's ``set-resources``), else their
    partition's in a profile's ``qos.yaml`` (:func:`argv_qos`: a debug profile's), else none
    (the account's default QOS)."""
    return [j if j.qos or j.partition not in qos else replace(j, qos=qos[j.partition])
            for j in jobs]  # fmt: skip


_MINUTES = {"w": 10080, "d": 1440, "h": 60, "m": 1, "min": 1, "s": 1 / 60}
_MB = {"k": 1e-3, "m": 1, "g": 1e3, "t": 1e6, "ki": 1024 / 1e6, "mi": 1.048576,
       "gi": 1.073741824e3, "ti": 1.099511627776e6}  # fmt: skip


def _number(value: Any, units: dict[str, float]) -> float | None:
    """A resource value as Snakemake takes it: a number, or a string with units (``"2h"``,
    ``"1d12h"``, ``"120G"``, ``"64 GiB"``); None when absent or not understood (the rule's
    own value is kept; Snakemake judges the string itself)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([a-z]+)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    total = 0.0
    for number, unit in parts:
        key = unit.removesuffix("b") if unit.endswith("b") and len(unit) > 1 else unit
        if key not in units:
            return None
        total += float(number) * units[key]
    return math.ceil(total)


_RULE_HEAD = re.compile(r"^(?:rule|checkpoint)\s+(\w+)\s*:", re.MULTILINE)


def campaign_rule_jobs(
    cfg: CampaignConfig, profile: str | Path | None, partitions: list[Partition] | None
) -> list[JobPlan]:
    """One job per rule of the campaign's own rule files (config key ``rules``), sized by the
    ``--profile``'s ``default-resources``: what Snakemake gives a rule that asks for nothing
    itself (climai does not run a rule file's code to read its own ``resources:``, nor count
    the jobs of a rule with wildcards); without a profile, Snakemake's own defaults (1 core,
    1000 MB; 60 minutes as a placeholder wall time), so a local plan counts them too."""
    from climai.config import rule_files
    from climai.sizing import choose_partition, job_plan

    names = [n for path in rule_files(cfg) for n in _RULE_HEAD.findall(path.read_text())]
    if not names:
        return []
    defaults = (profile_settings(profile).get("default-resources") if profile else None) or {}
    size = JobSize(cpus=int(defaults.get("cpus_per_task", 1)),
                   mem_mb=int(defaults.get("mem_mb", 1000)), runtime=int(defaults.get("runtime", 60)))  # fmt: skip
    est = Estimate(mem_mb=float(size.mem_mb), seconds=60.0 * size.runtime)
    part = choose_partition(size, partitions) if partitions else None
    if part is not None:
        return [job_plan(n, None, 1, size, part, est) for n in names]
    problem = None if partitions is None else "fits no partition"
    return [JobPlan(n, None, 1, size, None, est, problem=problem) for n in names]


def critical_path_minutes(cfg: CampaignConfig, jobs: list[JobPlan]) -> float:
    """The longest chain of requested wall times through the workflow's dependencies (jobs of
    one rule and method run side by side: a split infer's blocks, then its gather)."""
    from climai.parents import parent_method

    minutes: dict[tuple[str, str | None], float] = {}
    for j in jobs:
        minutes[(j.rule, j.method)] = float(j.size.runtime)
    prep = minutes.get(("ingest", None), 0.0) + minutes.get(("preprocess", None), 0.0)

    def trained(m: str) -> float:
        parent = parent_method(cfg, m)
        before = trained(parent) if parent and ("train", parent) in minutes else prep
        return before + minutes.get(("train", m), 0.0)

    def inferred(m: str) -> float:
        infer = minutes.get(("infer", m)) or (
            minutes.get(("infer_block", m), 0.0) + minutes.get(("infer_gather", m), 0.0)
        )
        return trained(m) + infer

    # compare waits for every evaluate, manifest for compare and every export (not compare for
    # the exports: counting an export before compare lengthened the path)
    methods = cfg.methods.enabled()
    scored = max([inferred(m) + minutes.get(("evaluate", m), 0.0) for m in methods] or [prep])
    exported = max([inferred(m) + minutes.get(("export", m), 0.0) for m in methods] or [prep])
    compared = scored + minutes.get(("compare", None), 0.0)
    return max(compared, exported) + minutes.get(("manifest", None), 0.0)


def plan_rows(jobs: list[JobPlan]) -> list[dict[str, Any]]:
    """One object per rule and method with exactly :data:`JSON_KEYS`."""
    return [
        {
            "rule": j.rule,
            "method": j.method,
            "jobs": j.jobs,
            "partition": j.partition,
            "qos": j.qos,
            "cpus": j.size.cpus,
            "gpus": j.size.gpus,
            "mem_mb": j.size.mem_mb,
            "runtime_min": j.size.runtime,
            "node_hours": round(j.node_hours, 3),
        }
        for j in jobs
    ]


def plan_table(cfg: CampaignConfig, jobs: list[JobPlan]) -> str:
    """The plan as a text table, the total node-hours and the critical path's wall time."""
    rows = plan_rows(jobs)
    head = ["rule", "method", "jobs", "partition", "qos", "cpus", "gpus", "mem", "walltime",
            "node-h"]  # fmt: skip
    body = [
        [r["rule"], r["method"] or "-", str(r["jobs"]), r["partition"] or _where(j),
         r["qos"] or "-", str(r["cpus"]), str(r["gpus"]), _mem(r["mem_mb"]), _hm(r["runtime_min"]),
         f"{r['node_hours']:.2f}"]
        for r, j in zip(rows, jobs, strict=True)
    ]  # fmt: skip
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip()
             for line in [head, *body]]  # fmt: skip
    total = sum(r["node_hours"] for r in rows)
    path = critical_path_minutes(cfg, jobs)
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"total: {sum(r['jobs'] for r in rows)} jobs, {total:.1f} node-hours; "
                 f"critical path {_hm(round(path))} wall time (requested limits)")  # fmt: skip
    lines += [f"does not fit: {j.problem}" for j in jobs if j.problem]
    return "\n".join(lines)


def _where(job: JobPlan) -> str:
    """A job without a partition: one that fits none, or one run beside Snakemake."""
    return "NONE FITS" if job.problem else "(local)"


def beside_snakemake_jobs(jobs: list[JobPlan]) -> list[JobPlan]:
    """The jobs with those a run keeps beside Snakemake (``localrule``: no partition, no
    node-hours), as the workflow decides (:func:`climai.sizing.beside_snakemake`)."""
    from climai.sizing import beside_snakemake

    return [replace(j, partition=None, share=0.0, qos=None) if beside_snakemake(j) else j
            for j in jobs]  # fmt: skip


def plan_json(jobs: list[JobPlan]) -> str:
    return json.dumps(plan_rows(jobs), indent=1)


def _mem(mb: int) -> str:
    return f"{mb / 1000:.1f} GB" if mb >= 1000 else f"{mb} MB"


def _hm(minutes: int) -> str:
    return f"{minutes // 60}:{minutes % 60:02d}"


def measured_jobs(cfg: CampaignConfig, benchmarks: Path) -> list[dict[str, Any]]:
    """Predicted against measured for every job with a ``benchmark:`` file in ``benchmarks``
    (``results/<campaign>/benchmarks/<rule>[_<method>].tsv``): peak RSS against the requested
    memory, wall time against the estimate and the requested limit. Sized as the run sized them
    (the partitions of ``$CLIMAI_PARTITIONS`` in a cluster job, none in a local run)."""
    import csv

    partitions = argv_partitions([])
    plans = campaign_plans(cfg, Sizer.load(partitions, uses_gpus(partitions))) or {}
    out = []
    for tsv in sorted(benchmarks.glob("*.tsv")):
        rule, _, method = tsv.stem.partition("_")
        if rule == "infer" and method.startswith(("block_", "gather_")):
            part, _, method = method.partition("_")
            rule = f"infer_{part}"
            method = method.rsplit("_", 1)[0] if part == "block" else method
        plan = plans.get((rule, method or None)) or plans.get((rule, None))
        with tsv.open() as f:
            row = next(csv.DictReader(f, delimiter="\t"), None)
        if plan is None or row is None:
            continue
        out.append({
            "job": tsv.stem, "max_rss_mb": float(row["max_rss"]), "mem_mb": plan.size.mem_mb,
            "seconds": float(row["s"]), "estimate_s": round(plan.estimate.seconds, 1),
            "runtime_min": plan.size.runtime,
        })  # fmt: skip
    return out


def jobs_html(title: str, rows: list[dict[str, Any]]) -> str:
    """The predicted-against-measured table as a small HTML page (the campaign report's)."""
    head = ("<tr><th>job</th><th>peak RSS MB</th><th>mem_mb asked</th><th>RSS / asked</th>"
            "<th>seconds</th><th>estimate s</th><th>s / estimate</th><th>walltime asked</th></tr>")  # fmt: skip
    body = "".join(
        f"<tr><td>{r['job']}</td><td>{r['max_rss_mb']:.0f}</td><td>{r['mem_mb']}</td>"
        f"<td>{r['max_rss_mb'] / r['mem_mb']:.2f}</td><td>{r['seconds']:.1f}</td>"
        f"<td>{r['estimate_s']:.1f}</td><td>{r['seconds'] / max(r['estimate_s'], 1e-9):.2f}</td>"
        f"<td>{r['runtime_min']} min</td></tr>"
        for r in rows
    )
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body><h1>{title}</h1><p>Each job's measured peak RSS and wall time (Snakemake's "
            "benchmark files) against what climai/sizing.py asked for it.</p>"
            f"<table border='1'>{head}{body}</table></body></html>\n")  # fmt: skip

"""The site profiles (profiles/leonardo, profiles/leonardo-debug) without a cluster.

Dry runs only: what Snakemake would submit (each job's resources come from its rule, per method),
where the SLURM plugin would put each job (its partition selection, run here on Leonardo's
partitions.yaml), the errors of bad set-ups, a user's overrides, the installed profile.
"""

from __future__ import annotations

import logging
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file

from climai.hpc import JOB_SIZES, JobSize, install_profile, job_size
from climai.plan import argv_qos
from climai.testing import write_config
from tests.conftest import REPO

pytestmark = [pytest.mark.workflow]

PROFILES = REPO / "profiles"
ITALY = REPO / "config" / "campaigns" / "italy-500m.yaml"
PARTITIONS = PROFILES / "leonardo" / "partitions.yaml"
# Where each job goes on Leonardo: rule, or rule/where for infer (climai.hpc.JOB_SIZES keys).
EXPECTED_PARTITION = {
    "ingest": "lrd_all_serial",
    "preprocess": "dcgp_usr_prod",
    "train": "boost_usr_prod",
    "infer/gpu": "boost_usr_prod",
    "infer/cpu": "dcgp_usr_prod",
    "infer/baseline": "dcgp_usr_prod",
    "evaluate": "dcgp_usr_prod",
    "compare": "lrd_all_serial",
    "export": "lrd_all_serial",
    "manifest": "lrd_all_serial",
    "sweep": "lrd_all_serial",
    "lineage": "lrd_all_serial",
}
# Every default method, and nearest: baselines and emulators (one stochastic).
ALL_METHODS = {  # a non-empty mapping each: an empty one does not override config.yaml's null
    "bicubic": {"type": "bicubic"},
    "nearest": {"type": "nearest"},
    "quantile-mapping": {"type": "quantile-mapping"},
    "unet": {"type": "unet"},
    "unet-crps": {"patch": 32},
}


def snakemake(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO):
    base = dict(os.environ, SLURM_ACCOUNT="IscrB_TEST")
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base['PATH']}"
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), *args],
        cwd=cwd,
        env=base if env is None else {**base, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def load(name: str) -> dict:
    return yaml.safe_load((PROFILES / name / "config.yaml").read_text())


@pytest.fixture(scope="module")
def workflow_rules() -> set[str]:
    res = snakemake("--list-rules")
    assert res.returncode == 0, res.stderr[-2000:]
    return {line.strip() for line in res.stdout.splitlines() if re.fullmatch(r"\s*\w+", line)}


def dry_run_job_list(stdout: str) -> list[dict[str, str]]:
    """Each job of a dry run: {"rule", "method" (if any), "threads", resource: value, ...}."""
    jobs = []
    for block in re.split(r"\n(?=rule \w+:)", stdout):
        head = re.match(r"rule (\w+):", block)
        if head is None or head[1] == "all":
            continue
        info = {"rule": head[1], "threads": "1"}
        if m := re.search(r"^\s+wildcards: method=([^\s,]+)", block, re.MULTILINE):
            info["method"] = m[1]
        if m := re.search(r"^\s+threads: (\d+)", block, re.MULTILINE):
            info["threads"] = m[1]
        if m := re.search(r"^\s+resources: (.*)$", block, re.MULTILINE):
            info.update(item.split("=", 1) for item in m[1].split(", "))
        jobs.append(info)
    return jobs


def dry_run_jobs(stdout: str) -> dict[str, dict[str, str]]:
    """Rule → its (last) job of a dry run, as :func:`dry_run_job_list` gives it."""
    return {job["rule"]: job for job in dry_run_job_list(stdout)}


class FakeJob:
    """What the SLURM plugin's partition selection reads of a job: name, threads, resources."""

    def __init__(self, name: str, threads: int, resources: dict[str, object]):
        self.name, self.threads = name, threads
        self.resources = type("Resources", (dict,), {"__getattr__": dict.__getitem__})(resources)


def plugin_partition(name: str, resources: dict[str, object], threads: int = 1) -> str | None:
    """The partition snakemake-executor-plugin-slurm picks for these resources from Leonardo's
    partitions.yaml (the profiles' `slurm-partition-config`): its own code, no cluster."""
    partitions = read_partition_file(PARTITIONS)
    return get_best_partition(partitions, FakeJob(name, threads, resources), logging.getLogger())


@pytest.mark.parametrize("key", sorted(JOB_SIZES))
def test_the_plugin_puts_each_job_size_in_its_leonardo_partition(key):
    size = JOB_SIZES[key]
    partition = plugin_partition(key, size.resources(), threads=size.cpus)
    assert partition == EXPECTED_PARTITION[key], (key, size)
    assert (size.gpus > 0) == (partition == "boost_usr_prod"), key


def test_only_emulators_on_a_gpu_ask_for_gpus():
    assert job_size("infer", "emulator", "auto").gpus == job_size("infer", "emulator", "cuda").gpus
    assert job_size("infer", "emulator", "auto").resources()["gres"] == "gpu:4"
    for kind, device in (("emulator", "cpu"), ("baseline", "auto"), ("baseline", "cuda")):
        assert "gres" not in job_size("infer", kind, device).resources(), (kind, device)
    assert "gres" not in job_size("evaluate").resources()
    with pytest.raises(KeyError, match="no job size for rule 'infer' without a method kind"):
        job_size("infer")


def test_a_job_that_fits_no_partition_gets_none_from_the_plugin():
    huge = JobSize(cpus=200, mem_mb=1000, runtime=60).resources()
    assert plugin_partition("huge", huge, threads=200) is None  # the plugin then warns


@pytest.mark.parametrize("name", ["leonardo", "leonardo-debug"])
def test_profile_keeps_site_policy_only(name, workflow_rules):
    """Account, partitions and defaults; what a job asks is the workflow's (its rules)."""
    profile = load(name)
    assert profile["slurm-partition-config"] == "partitions.yaml"
    assert (PROFILES / name / "partitions.yaml").resolve() == PARTITIONS.resolve()
    assert set(profile["default-resources"]) == {"slurm_account", "runtime", "mem_mb",
                                                 "cpus_per_task"}  # fmt: skip
    assert "slurm_partition" not in profile["default-resources"]  # the plugin picks it
    assert "set-threads" not in profile
    # Only the debug profile sets resources: the debug limits and QOSes, of rules that exist.
    overrides = profile.get("set-resources", {})
    assert not set(overrides) - workflow_rules, set(overrides) - workflow_rules
    assert all(set(res) == {"runtime"} for res in overrides.values()), overrides
    if name == "leonardo":
        assert not overrides
    else:
        assert set(overrides) == workflow_rules - {"all"}
        assert all(r["runtime"] <= 30 for r in overrides.values())


def test_partitions_file_has_leonardos_partitions_and_limits():
    parts = {p.name: p.limits for p in read_partition_file(PARTITIONS)}
    assert set(parts) == {"lrd_all_serial", "dcgp_usr_prod", "boost_usr_prod"}
    assert (parts["lrd_all_serial"].max_threads, parts["lrd_all_serial"].max_mem_mb) == (4, 30800)
    assert parts["dcgp_usr_prod"].max_threads == 112 and parts["dcgp_usr_prod"].max_gpu == 0
    assert (parts["boost_usr_prod"].max_threads, parts["boost_usr_prod"].max_gpu) == (32, 4)
    assert parts["lrd_all_serial"].max_runtime == 240


@pytest.mark.parametrize("name", ["leonardo", "leonardo-debug"])
def test_every_key_of_the_profile_is_commented(name):
    lines = (PROFILES / name / "config.yaml").read_text().splitlines()
    lines += PARTITIONS.read_text().splitlines()
    in_code = False
    for line in lines:
        if re.match(r"^\S", line):
            in_code = line.startswith("__definitions__")
        if in_code and not line.startswith("__definitions__"):
            continue  # Python code of the YTE definitions (documented by its docstring)
        if re.match(r"^\s*[\w-]+:", line):
            assert "#" in line, f"profiles/{name}: key without a comment: {line}"


def test_debug_profile_differs_only_in_lines_marked_debug():
    prod = (PROFILES / "leonardo" / "config.yaml").read_text().splitlines()
    debug = (PROFILES / "leonardo-debug" / "config.yaml").read_text().splitlines()

    def body(lines):
        keep = [ln for ln in lines if "debug" not in ln and not ln.startswith("#") and ln]
        return [ln.split(" #")[0].rstrip() for ln in keep]

    changed = {ln.split(":")[0].strip() for ln in set(body(prod)) - set(body(debug))}
    assert changed <= {"jobs", "retries", "runtime", "slurm-init-seconds-before-status-checks",
                       "slurm-keep-successful-logs"}, changed  # fmt: skip
    assert body(debug) == [ln for ln in body(prod) if ln.split(":")[0].strip() not in changed]
    assert argv_qos(["--profile", str(PROFILES / "leonardo-debug")]) == {
        "dcgp_usr_prod": "dcgp_qos_dbg", "boost_usr_prod": "boost_qos_dbg"}  # fmt: skip
    assert argv_qos(["--profile", str(PROFILES / "leonardo")]) == {}


@pytest.mark.parametrize("size", [32, 1024])
def test_each_debug_job_asks_the_debug_qos_of_its_own_partition(tmp_path, size):
    """sbatch refuses a QOS of another partition: each job of the debug profile names the
    partition its size puts it in and that partition's debug QOS (qos.yaml); a job on the serial
    partition (no debug QOS) asks none. A small campaign's preprocess and evaluate fit the serial
    partition, a larger one's the DCGP nodes; a training on a GPU goes to the Booster."""
    target = {"source": "synthetic", "nx": size, "ny": size, "steps": 480}
    jobs = campaign_dry_run(tmp_path, PROFILES / "leonardo-debug", data={"target": target})
    debug = {"dcgp_usr_prod": "dcgp_qos_dbg", "boost_usr_prod": "boost_qos_dbg"}
    seen = set()
    for job in jobs:
        resources = {k: int(v) if v.isdigit() else v for k, v in job.items()
                     if k not in ("slurm_partition", "qos")}  # fmt: skip
        chosen = plugin_partition(job["rule"], resources, int(job["threads"]))  # by its size
        assert job.get("qos") == debug.get(chosen), job
        assert job.get("slurm_partition") == (chosen if chosen in debug else None), job
        assert int(job["runtime"]) <= 30, job
        seen.add((job["rule"], chosen))
    print(sorted(seen))
    assert ("train", "boost_usr_prod") in seen
    assert ("ingest", "lrd_all_serial") in seen


def campaign_dry_run(tmp_path: Path, profile: str | Path, **overrides) -> list[dict[str, str]]:
    """The jobs of a dry run of a tiny campaign (every method) with ``profile``."""
    write_config(tmp_path / "c.yaml", methods=ALL_METHODS, **overrides)
    res = snakemake("--profile", str(profile), "-n", "--cores", "64", "--configfile",
                    str(tmp_path / "c.yaml"), cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    return dry_run_job_list(res.stdout)


def planned_jobs(config: Path) -> dict:
    """(rule, method) → the plan the workflow sizes each job with (climai/sizing.py on
    Leonardo's partitions, emulators on GPUs)."""
    from climai.config import load_config
    from climai.plan import campaign_plans
    from climai.sizing import Sizer, read_partitions

    cfg = load_config(REPO / "config" / "config.yaml", config)  # as the Snakefile merges them
    plans = campaign_plans(cfg, Sizer.load(read_partitions(PARTITIONS), True))
    assert plans is not None
    return plans


@pytest.mark.parametrize("device", ["auto", "cpu"])
def test_each_job_asks_its_methods_resources_and_lands_in_its_partition(tmp_path, device):
    """Every job asks the cost model's size (climai/sizing.py), and the SLURM plugin puts it in
    the partition the plan names: baselines (and emulators with infer.device cpu) infer on a
    CPU partition without GPUs, emulators on a GPU get the Booster; no toy job asks a node."""
    jobs = campaign_dry_run(tmp_path, PROFILES / "leonardo", infer={"device": device})
    plans = planned_jobs(tmp_path / "c.yaml")
    infer = {j["method"]: j for j in jobs if j["rule"] == "infer"}
    assert set(infer) == set(ALL_METHODS)
    for job in jobs:
        plan = plans[(job["rule"], job.get("method"))]
        want = {k: str(v) for k, v in plan.size.resources().items()}
        assert {k: job.get(k) for k in want} == want, job
        assert job["slurm_account"] == "IscrB_TEST"
        resources = {k: int(v) if v.isdigit() else v for k, v in job.items()}
        assert plugin_partition(job["rule"], resources, int(job["threads"])) == plan.partition, job
        assert int(job["cpus_per_task"]) <= 4 and int(job["mem_mb"]) < 30_000, job
    gpu_infer = {m for m, j in infer.items() if "gres" in j}
    assert gpu_infer == ({"unet", "unet-crps"} if device == "auto" else set())


def test_a_users_profile_overrides_the_rules_resources(tmp_path):
    """A user's profile: `set-resources` beats the rule's `resources:` (Snakemake 9 applies
    default-resources, then the rule's, then set-resources), for every job of the rule."""
    profile = tmp_path / "mine"
    profile.mkdir()
    text = (PROFILES / "leonardo" / "config.yaml").read_text()
    (profile / "partitions.yaml").write_text(PARTITIONS.read_text())
    (profile / "config.yaml").write_text(text + (
        "set-resources:\n"
        "  infer: {slurm_partition: my_gpus, cpus_per_task: 8, mem_mb: 64000, runtime: 30}\n"
        "  evaluate: {qos: my_qos}\n"
        "set-threads:\n"
        "  infer: 3\n"
    ))  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    jobs = campaign_dry_run(run, profile)
    for job in (j for j in jobs if j["rule"] == "infer"):
        assert (job["slurm_partition"], job["cpus_per_task"], job["mem_mb"], job["runtime"],
                job["threads"]) == ("my_gpus", "8", "64000", "30", "3"), job  # fmt: skip
        # keys the user did not set keep the rule's value: unet still asks its GPUs
        assert ("gres" in job) == (job["method"] in {"unet", "unet-crps"}), job
    evaluate = [j for j in jobs if j["rule"] == "evaluate"]
    assert evaluate and all(j["qos"] == "my_qos" and j["cpus_per_task"] == "1" for j in evaluate)


def test_no_workflow_profile_overrides_the_site_profile():
    assert not (REPO / "profiles" / "default").exists()


def test_no_account_stops_with_a_clear_error():
    env = {k: v for k, v in os.environ.items() if k != "SLURM_ACCOUNT"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "profiles/leonardo", "-n"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode != 0
    assert "SLURM_ACCOUNT is not set: export SLURM_ACCOUNT=<project>" in res.stderr, res.stderr


def cpu_seconds_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.slow
def test_dry_run_of_the_italy_campaign_shows_leonardo_resources_quickly():
    """Under 10 s of CPU (wall time on a quiet 2-core machine); printed beside Snakemake's own start.

    The machine running the tests is shared: wall time there follows its load, so the test
    asserts the CPU time of the dry run and prints the wall times against ``snakemake --version``.
    """
    t0, c0 = time.monotonic(), cpu_seconds_of_children()
    base = snakemake("--version")
    t_base, c_base = time.monotonic() - t0, cpu_seconds_of_children() - c0
    assert base.returncode == 0
    t0, c0 = time.monotonic(), cpu_seconds_of_children()
    res = snakemake("--profile", "profiles/leonardo", "-n", "--cores", "64", "--configfile",
                    str(ITALY))  # fmt: skip
    elapsed, cpu = time.monotonic() - t0, cpu_seconds_of_children() - c0
    print(
        f"dry run of italy-500m with profiles/leonardo: {elapsed:.1f} s wall, {cpu:.1f} s CPU; "
        f"`snakemake --version`: {t_base:.1f} s wall, {c_base:.1f} s CPU "
        f"(ratio {elapsed / t_base:.2f})"
    )
    assert cpu < 10, f"dry run used {cpu:.1f} s of CPU"
    from climai.config import load_config
    from climai.plan import campaign_jobs
    from climai.sizing import Sizer, read_partitions

    cfg = load_config(REPO / "config" / "config.yaml", ITALY)
    plan = campaign_jobs(cfg, Sizer.load(read_partitions(PARTITIONS), True), strict=False)
    problems = [j.problem for j in plan if j.problem]
    if problems:  # a job that fits no partition stops the run before any submission
        out = res.stdout + res.stderr
        assert res.returncode != 0 and problems[0] in out, out[-3000:]
        return
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = dry_run_jobs(res.stdout)
    assert all(j["slurm_account"] == "IscrB_TEST" for j in jobs.values())
    sizes = {(j.rule, j.method): j.size for j in plan}
    train = jobs["train"]
    assert train["mem_mb"] == str(sizes[("train", "unet")].mem_mb)
    listed = dry_run_job_list(res.stdout)
    infer = {j["method"]: j for j in listed if j["rule"] in ("infer", "infer_block")}
    assert "gres" in infer["unet"] and "gres" not in infer["bicubic"]
    for rule in ("infer", "infer_block"):  # one job, or as many time blocks as planned
        listed_jobs = [j for j in listed if j["rule"] == rule and j.get("method") == "bicubic"]
        planned = [j.jobs for j in plan if (j.rule, j.method) == (rule, "bicubic")]
        assert len(listed_jobs) == (planned[0] if planned else 0), rule
    scoring = [j for j in listed if j["rule"] in ("evaluate", "compare", "export")]
    assert scoring and all(
        int(j["cpus_per_task"]) == sizes[(j["rule"], j.get("method"))].cpus for j in scoring
    )
    assert "italy-500m/prep/dataset.zarr" in res.stdout
    assert not (REPO / "results" / "italy-500m").exists(), "a dry run wrote outputs"


def test_install_profile_makes_profile_name_work(tmp_path):
    config_home = tmp_path / "xdg"
    link = install_profile("leonardo", config_dir=config_home / "snakemake")
    assert link.resolve() == (PROFILES / "leonardo").resolve()
    assert install_profile("leonardo", config_dir=config_home / "snakemake") == link  # idempotent
    # Snakemake finds it by name (platformdirs honours XDG_CONFIG_HOME), from any folder.
    res = snakemake("--profile", "leonardo", "-n", "--cores", "64", cwd=tmp_path,
                    env={"XDG_CONFIG_HOME": str(config_home)})  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert "slurm_account=IscrB_TEST" in res.stdout and "gres=gpu:" in res.stdout
    assert "Using profile leonardo for" in res.stderr  # found by name, not as a path


def test_install_profile_refuses_to_replace_a_folder(tmp_path):
    (tmp_path / "leonardo").mkdir()
    with pytest.raises(FileExistsError, match="exists and is not a link"):
        install_profile("leonardo", config_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="profile 'nope'"):
        install_profile("nope", config_dir=tmp_path)


def _floor(requirement: str) -> str:
    """The lowest version a ``name>=X,<Y`` requirement of pyproject.toml allows, as X.0.0."""
    low = re.search(r">=\s*([0-9.]+)", requirement)
    assert low, f"no lower bound in {requirement!r}"
    parts = ([*low.group(1).split("."), "0", "0"])[:3]
    return ".".join(parts)


@pytest.mark.slow
def test_site_profiles_plan_the_campaign_on_the_lowest_allowed_snakemake(tmp_path):
    """pyproject.toml's floor on Snakemake (and the lock's SLURM plugin) in a fresh venv: it finds
    the profiles by their file name (``config.yaml``: ``profile.yaml`` is read only by recent
    releases) and plans the toy campaign for Leonardo."""
    import sysconfig
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    floor = _floor(next(d for d in deps if re.match(r"snakemake\s*[>=<]", d)))
    lock = (REPO / "requirements" / "lock.txt").read_text()
    plugin = re.search(r"^snakemake-executor-plugin-slurm==\S+", lock, re.M)
    assert plugin, "the lock pins no SLURM executor plugin"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", f"snakemake=={floor}", plugin.group(0)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    # climai and its other dependencies from this interpreter, after the venv's own snakemake
    site = Path(sysconfig.get_paths()["purelib"])
    venv_site = next((venv / "lib").glob("python3*/site-packages"))
    (venv_site / "zz_climai.pth").write_text(f"import site; site.addsitedir({str(site)!r})\n")
    version = subprocess.run(
        [str(py), "-m", "snakemake", "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == floor
    for profile in ("leonardo", "leonardo-debug", "local"):
        run = subprocess.run(
            [
                str(py),
                "-m",
                "snakemake",
                "-n",
                "--profile",
                str(PROFILES / profile),
                "--snakefile",
                str(REPO / "Snakefile"),
                "--directory",
                str(tmp_path / profile),
            ],
            cwd=REPO,
            env=dict(os.environ, SLURM_ACCOUNT="IscrB_TEST"),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert run.returncode == 0, (profile, run.stdout[-1500:], run.stderr[-1500:])
        assert re.search(r"^total\s+\d+", run.stdout + run.stderr, re.M), profile


@pytest.mark.parametrize("profile", ["leonardo", "leonardo-debug"])
def test_a_profile_set_by_snakemake_profile_sizes_jobs_as_with_profile(tmp_path, profile):
    """`export SNAKEMAKE_PROFILE=leonardo` is Snakemake's own way to give the profile. The
    workflow read partitions and QOSes from `--profile` only: with the variable, train asked
    no GPU, every job runtime=1 and no cluster memory (sized for a local run), so SLURM sent
    the U-Net's training to a CPU partition and killed every job after a minute."""
    write_config(tmp_path / "c.yaml")
    args = ["-n", "--cores", "64", "--configfile", str(tmp_path / "c.yaml")]
    env = {"CLIMAI_PARTITIONS": ""}  # as a login shell: nothing inherited from a job
    with_flag = snakemake("--profile", str(PROFILES / profile), *args, cwd=tmp_path, env=env)
    env["SNAKEMAKE_PROFILE"] = str(PROFILES / profile)
    with_env = snakemake(*args, cwd=tmp_path, env=env)
    assert with_flag.returncode == 0 and with_env.returncode == 0, with_env.stderr[-3000:]
    by_flag = {(j["rule"], j.get("method")): j for j in dry_run_job_list(with_flag.stdout)}
    by_env = {(j["rule"], j.get("method")): j for j in dry_run_job_list(with_env.stdout)}
    assert by_env == by_flag
    assert by_env[("train", "unet")]["gres"] == "gpu:1"
    assert int(by_env[("train", "unet")]["runtime"]) >= 10


def test_a_training_too_long_for_qos_normal_runs_with_its_own_partition_and_qos(tmp_path):
    """The stop for a job that fits no partition says "or give the rule its own
    slurm_partition in a profile's set-resources", and README says to raise the rule's runtime
    with qos boost_qos_lprod (4 days) for longer runs: a profile that did so was still refused
    at DAG-build time, as the sizing ignored set-resources. Now the run and `climai plan`
    take the profile's resources; without them the stop stays."""
    write_config(tmp_path / "c.yaml", methods={"unet": {"epochs": 6_000_000_000}})
    args = ["-n", "--cores", "64", "--configfile", str(tmp_path / "c.yaml")]
    refused = snakemake("--profile", str(PROFILES / "leonardo"), *args, cwd=tmp_path)
    assert refused.returncode != 0
    assert "exceeds max_runtime 1440 min" in refused.stdout + refused.stderr
    mine = tmp_path / "lprod"
    mine.mkdir()
    (mine / "partitions.yaml").write_text((PARTITIONS).read_text())
    (mine / "config.yaml").write_text(
        (PROFILES / "leonardo" / "config.yaml").read_text()
        + "set-resources:\n"
        + "  train: {slurm_partition: boost_usr_prod, runtime: 5760, qos: boost_qos_lprod}\n"
    )
    res = snakemake("--profile", str(mine), *args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    (train,) = [j for j in dry_run_job_list(res.stdout) if j["rule"] == "train"]
    assert (train["runtime"], train["qos"], train["slurm_partition"]) == (
        "5760", "boost_qos_lprod", "boost_usr_prod")  # fmt: skip


def test_a_retried_job_asks_twice_the_time_and_memory_of_its_partition(tmp_path):
    """A real run with the site's partitions and retries: 1, whose ingest fails on its first
    attempt (a shim in front of climai): the retry asks 2 × the minutes and memory (it asked the
    same, so a job killed at its time limit was killed again)."""
    shim = tmp_path / "bin" / "climai"
    shim.parent.mkdir()
    marker = tmp_path / "failed-once"
    shim.write_text(
        "#!/bin/bash\n"
        f'if [ "$1" = ingest ] && [ ! -e "{marker}" ]; then touch "{marker}"; exit 1; fi\n'
        f'exec "{Path(sys.executable).parent / "climai"}" "$@"\n'
    )
    shim.chmod(0o755)
    results = tmp_path / "results"
    out = snakemake(
        "--cores", "2", "--retries", "1",
        "--slurm-partition-config", str(REPO / "profiles/leonardo/partitions.yaml"),
        "--config", f"results={results}", "--", str(results / "toy/ingest/target.zarr"),
        env={"PATH": f"{shim.parent}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
                     f"{os.environ['PATH']}"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    asked = [
        (int(m[1]), int(m[2]))
        for m in re.finditer(r"resources: .*?runtime=(\d+), mem_mb=(\d+)", out.stderr)
    ]
    assert len(asked) == 2 and marker.exists(), out.stderr[-3000:]
    assert asked[1] == (2 * asked[0][0], 2 * asked[0][1])


def test_a_retried_job_keeps_every_attempt_in_its_log_and_reports_the_last(tmp_path):
    """Snakemake deletes a job's log before a retry; logs/attempts/<job>.log keeps both
    attempts, each after its start line (the first attempt's lines were lost), and the error
    printed at the end of the run is the last attempt's, with the key it names."""
    shim = tmp_path / "bin" / "climai"
    shim.parent.mkdir()
    count = tmp_path / "attempts"
    shim.write_text(  # the real climai (same --threads, --job-log), failing on a config naming the attempt
        "#!/bin/bash\n"
        f'echo x >> "{count}"; n=$(wc -l < "{count}")\n'
        f'exec "{Path(sys.executable).parent / "climai"}" "$1" '
        '--config-json "{\\"campaign\\": \\"attempt $n\\"}" "${@:4}"\n'
    )
    shim.chmod(0o755)
    results = tmp_path / "results"
    out = snakemake(
        "--cores", "2", "--retries", "1",
        "--config", f"results={results}", "--", str(results / "toy/ingest/target.zarr"),
        env={"PATH": f"{shim.parent}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
                     f"{os.environ['PATH']}"},
    )  # fmt: skip
    assert out.returncode != 0 and count.read_text().count("x") == 2
    log = (results / "toy/logs/ingest.log").read_text()
    assert "'attempt 2' must be" in log and "'attempt 1'" not in log, log
    attempts = (results / "toy/logs/attempts/ingest.log").read_text()
    assert attempts.count("climai ingest started on") == 2, attempts
    first, second = attempts.split("climai ingest started on")[1:]
    assert "campaign name 'attempt 1' must be" in first and "'attempt 2'" in second, attempts
    # the end of the run names the failed key of the last attempt (not only "invalid configuration")
    assert "campaign name 'attempt 2' must be" in out.stderr, out.stderr[-3000:]
    assert "'attempt 1'" not in out.stderr, out.stderr[-3000:]

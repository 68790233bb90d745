"""The site profiles (profiles/leonardo, profiles/leonardo-debug) without a cluster.

Dry runs only: what Snakemake would submit, the errors of bad set-ups, the installed profile.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from climai.hpc import install_profile
from tests.conftest import REPO

pytestmark = [pytest.mark.workflow]

PROFILES = REPO / "profiles"
ITALY = REPO / "config" / "campaigns" / "italy-500m.yaml"
GPU_RULES = {"train", "infer"}
CPU_PARTITIONS = {"lrd_all_serial", "dcgp_usr_prod"}


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
    return yaml.safe_load((PROFILES / name / "profile.yaml").read_text())


@pytest.fixture(scope="module")
def workflow_rules() -> set[str]:
    res = snakemake("--list-rules")
    assert res.returncode == 0, res.stderr[-2000:]
    return {line.strip() for line in res.stdout.splitlines() if re.fullmatch(r"\s*\w+", line)}


def dry_run_jobs(stdout: str) -> dict[str, dict[str, str]]:
    """Rule → {"threads": ..., resource: value} from a dry run's job listing."""
    jobs: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n(?=rule \w+:)", stdout):
        head = re.match(r"rule (\w+):", block)
        if head is None or head[1] == "all":
            continue
        info = jobs.setdefault(head[1], {})
        if m := re.search(r"^\s+threads: (\d+)", block, re.MULTILINE):
            info["threads"] = m[1]
        if m := re.search(r"^\s+resources: (.*)$", block, re.MULTILINE):
            info.update(item.split("=", 1) for item in m[1].split(", "))
    return jobs


@pytest.mark.parametrize("name", ["leonardo", "leonardo-debug"])
def test_profile_names_only_rules_of_the_workflow_and_maps_them_all(name, workflow_rules):
    profile = load(name)
    assert "all" in workflow_rules and "train" in workflow_rules
    for key in ("set-resources", "set-threads"):
        unknown = set(profile[key]) - workflow_rules
        assert not unknown, f"profiles/{name}: {key} names rules the workflow lacks: {unknown}"
    # ...and a new rule must get its partition in the profile (`all` runs on the controller).
    unmapped = workflow_rules - {"all"} - set(profile["set-resources"])
    assert not unmapped, f"profiles/{name}: rules without set-resources: {unmapped}"


@pytest.mark.parametrize("name", ["leonardo", "leonardo-debug"])
def test_gpu_rules_ask_gres_on_the_booster_and_cpu_rules_no_gpu(name):
    profile = load(name)
    assert profile["executor"] == "slurm" and profile["jobs"] >= 1
    for rule, res in profile["set-resources"].items():
        assert "gpus" not in res and "gpu" not in res, f"{rule}: the plugin ignores gpus:"
        if rule in GPU_RULES:
            assert res["slurm_partition"] == "boost_usr_prod", rule
            assert res["gres"] == "gpu:4" and res["cpus_per_task"] == 32, rule
            assert res["qos"] in {"normal", "boost_qos_dbg"}, rule
        else:
            assert res["slurm_partition"] in CPU_PARTITIONS and "gres" not in res, rule
        assert profile["set-threads"][rule] == res["cpus_per_task"], rule
    assert profile["set-resources"]["ingest"]["slurm_partition"] == "lrd_all_serial"
    for rule in ("preprocess", "evaluate"):
        assert profile["set-resources"][rule]["slurm_partition"] == "dcgp_usr_prod"


@pytest.mark.parametrize("name", ["leonardo", "leonardo-debug"])
def test_every_key_of_the_profile_is_commented(name):
    lines = (PROFILES / name / "profile.yaml").read_text().splitlines()
    in_code = False
    for line in lines:
        if re.match(r"^\S", line):
            in_code = line.startswith("__definitions__")
        if in_code and not line.startswith("__definitions__"):
            continue  # Python code of the YTE definitions (documented by its docstring)
        if re.match(r"^\s*[\w-]+:", line):
            assert "#" in line, f"profiles/{name}: key without a comment: {line}"


def test_debug_profile_differs_only_in_lines_marked_debug():
    prod = (PROFILES / "leonardo" / "profile.yaml").read_text().splitlines()
    debug = (PROFILES / "leonardo-debug" / "profile.yaml").read_text().splitlines()

    def body(lines):
        keep = [ln for ln in lines if "debug" not in ln and not ln.startswith("#")]
        return [ln.split(" #")[0].rstrip() for ln in keep]

    changed = {ln.split(":")[0].strip() for ln in set(body(prod)) - set(body(debug))}
    assert changed <= {"jobs", "retries", "runtime", "qos", "slurm-init-seconds-before-status-checks",
                       "slurm-keep-successful-logs"}, changed  # fmt: skip
    assert body(debug) == [ln for ln in body(prod) if ln.split(":")[0].strip() not in changed]
    res = load("leonardo-debug")["set-resources"]
    assert res["train"]["qos"] == res["infer"]["qos"] == "boost_qos_dbg"
    assert all(r["runtime"] <= 30 for r in res.values())


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
    assert res.returncode == 0, res.stderr[-3000:]
    print(
        f"dry run of italy-500m with profiles/leonardo: {elapsed:.1f} s wall, {cpu:.1f} s CPU; "
        f"`snakemake --version`: {t_base:.1f} s wall, {c_base:.1f} s CPU "
        f"(ratio {elapsed / t_base:.2f})"
    )
    assert cpu < 10, f"dry run used {cpu:.1f} s of CPU"
    jobs = dry_run_jobs(res.stdout)
    assert set(jobs) == {
        "ingest",
        "preprocess",
        "train",
        "infer",
        "evaluate",
        "export",
        "compare",
        "manifest",
    }
    assert all(j["slurm_account"] == "IscrB_TEST" for j in jobs.values())
    train = jobs["train"]
    assert (train["slurm_partition"], train["gres"], train["cpus_per_task"]) == (
        "boost_usr_prod", "gpu:4", "32",
    )  # fmt: skip
    assert (train["qos"], train["runtime"], train["mem_mb"], train["threads"]) == (
        "normal", "1440", "480000", "32",
    )  # fmt: skip
    assert jobs["infer"]["gres"] == "gpu:4"
    # Dry runs cap threads at --cores: preprocess asks 112 cores, shows 64.
    pre = jobs["preprocess"]
    assert (pre["slurm_partition"], pre["cpus_per_task"], pre["threads"]) == (
        "dcgp_usr_prod", "112", "64",
    )  # fmt: skip
    assert (
        jobs["ingest"]["slurm_partition"]
        == jobs["compare"]["slurm_partition"]
        == ("lrd_all_serial")
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
    assert "slurm_partition=boost_usr_prod" in res.stdout
    assert "Using profile leonardo for" in res.stderr  # found by name, not as a path


def test_install_profile_refuses_to_replace_a_folder(tmp_path):
    (tmp_path / "leonardo").mkdir()
    with pytest.raises(FileExistsError, match="exists and is not a link"):
        install_profile("leonardo", config_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="profile 'nope'"):
        install_profile("nope", config_dir=tmp_path)

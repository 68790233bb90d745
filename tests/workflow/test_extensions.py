"""Campaigns extend the DAG: extra rule files (lint-clean), and reuse of another campaign's
prepared data without ingest or preprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from climai.testing import write_config
from tests.conftest import REPO, run_snakemake, snakemake_env
from tests.docs.test_docs import example
from tests.workflow.test_toy_dag import planned_jobs

pytestmark = [pytest.mark.workflow]


def write_rule_example(workdir: Path) -> None:
    """The files of docs/add-a-rule.md (a bias correction between preprocess and train)."""
    for rel, text in example("add-a-rule.md").files.items():
        (workdir / rel).parent.mkdir(parents=True, exist_ok=True)
        (workdir / rel).write_text(text)


def lint(workdir: Path, *configfiles: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--lint",
         "--configfile", *configfiles],
        cwd=workdir, env=snakemake_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_lint_is_clean_with_an_extra_rule_and_catches_a_sloppy_one(tmp_path):
    write_rule_example(tmp_path)
    result = lint(tmp_path, "bc.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    (tmp_path / "rules/sloppy.smk").write_text('rule sloppy:\n    output:\n        "x.txt",\n'
                                              '    shell:\n        "touch x.txt"\n')  # fmt: skip
    (tmp_path / "sloppy.yaml").write_text("rules: [rules/bias_correct.smk, rules/sloppy.smk]\n")
    result = lint(tmp_path, "bc.yaml", "sloppy.yaml")
    assert result.returncode != 0 and "Lints for rule sloppy" in result.stdout + result.stderr


def snakemake_in(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Snakemake in ``workdir`` with config files named relative to it."""
    files = [str(workdir / a) if a.endswith(".yaml") else a for a in args]
    return run_snakemake(workdir, *files)


def test_the_extra_rule_sits_between_preprocess_and_train(tmp_path):
    write_rule_example(tmp_path)
    result = snakemake_in(tmp_path, "--configfile", "bc.yaml", "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = planned_jobs(result)
    assert jobs["preprocess"] == jobs["bias_correct"] == jobs["train"] == 1
    train = result.stdout.split("rule train:")[1].split("rule ")[0]
    assert "results/bc/prep-bc/dataset.zarr" in train


def test_a_missing_rule_file_is_named(tmp_path):
    write_config(tmp_path / "c.yaml", rules=["rules/nope.smk"])
    result = snakemake_in(tmp_path, "--configfile", "c.yaml", "-n")
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "config key 'rules': rule file" in out and "nope.smk" in out


@pytest.mark.slow
def test_a_campaign_reuses_another_campaigns_prepared_data(tmp_path):
    write_config(tmp_path / "tiny.yaml")
    result = snakemake_in(tmp_path, "--configfile", "tiny.yaml", "--until", "preprocess")
    assert result.returncode == 0, result.stderr[-3000:]
    (tmp_path / "emulators.yaml").write_text(
        "campaign: tiny-emulators\nprepared: {campaign: tiny}\n"
        "methods: {unet-wide: {type: unet, epochs: 1, patch: 32, batch: 8, channels: [32, 64]}}\n"
    )
    result = snakemake_in(tmp_path, "--configfile", "tiny.yaml", "emulators.yaml", "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = planned_jobs(result)
    assert "ingest" not in jobs and "preprocess" not in jobs
    # bicubic, quantile-mapping, unet (tiny.yaml) and unet-wide: two trained, four scored
    assert jobs["train"] == 2 and jobs["infer"] == 4 and jobs["evaluate"] == 4
    assert "results/tiny/prep/dataset.zarr" in result.stdout.split("rule train:")[1]
    # other data keys than the reused campaign's: refused before any job, naming the key
    (tmp_path / "other.yaml").write_text("split: {train: 0.6, val: 0.2, test: 0.2}\n")
    result = snakemake_in(tmp_path, "--configfile", "tiny.yaml", "emulators.yaml", "other.yaml",
                           "-n")  # fmt: skip
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "prepared.campaign='tiny'" in out and "another configuration" in out

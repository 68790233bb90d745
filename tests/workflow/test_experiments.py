"""Sweeps and fine-tuning through Snakemake on tiny grids (issue 11)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from climai.config import load_config
from climai.parents import parent_model
from climai.testing import write_config
from tests.conftest import REPO, run_snakemake
from tests.workflow.test_toy_dag import planned_jobs

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

SWEEP = {
    "campaign": "tiny-sweep",
    "methods": {
        "quantile-mapping": None,
        "unet": {
            "epochs": 1,
            "patch": 32,
            "batch": 8,
            "threads": 1,
            "sweep": {"lr": [7e-4, 2e-3], "loss": ["mse", "mae"]},
        },
    },
}
VARIANTS = ["unet-lr7e-04-mse", "unet-lr7e-04-mae", "unet-lr2e-03-mse", "unet-lr2e-03-mae"]


def max_concurrent(log: str, rule: str) -> int:
    """The most jobs of ``rule`` running at once, from the order of Snakemake's start and finish
    messages (``rule train:`` ... ``jobid: N`` / ``Finished jobid: N``)."""
    running: set[str] = set()
    most = 0
    events = re.finditer(
        r"^(?:(?:local)?rule (\w+):\n(?:\s+\w+:.*\n)*?\s+jobid: (\d+)|Finished jobid: (\d+))",
        log,
        re.MULTILINE,
    )
    for m in events:
        if m[1] == rule:
            running.add(m[2])
            most = max(most, len(running))
        elif m[3]:
            running.discard(m[3])
    return most


def test_a_sweep_expands_into_one_branch_per_variant(tmp_path: Path):
    cfg_path = write_config(tmp_path / "tiny.yaml", **SWEEP)
    assert load_config(cfg_path).sweeps == {"unet": VARIANTS}
    result = run_snakemake(tmp_path, "--configfile", str(cfg_path), "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = planned_jobs(result)
    assert jobs["train"] == 4 and jobs["sweep"] == 1
    assert jobs["infer"] == jobs["evaluate"] == jobs["export"] == 5  # 4 variants and bicubic


def test_sweep_variants_train_two_at_a_time_and_are_ranked_on_validation(tmp_path: Path):
    """Acceptance 3: 4 variants, --cores 2, train threads 1 → two train jobs at once."""
    cfg_path = write_config(tmp_path / "tiny.yaml", **SWEEP)
    target = "results/tiny-sweep/evaluation/sweep_unet.md"
    # --cores 2 as the acceptance says (also when xdist gives each worker a share of the cores)
    result = run_snakemake(tmp_path, target, "--configfile", str(cfg_path), "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert max_concurrent(result.stderr, "train") == 2, result.stderr[-3000:]
    evaluation = tmp_path / "results/tiny-sweep/evaluation"
    with (evaluation / "sweep_unet.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["method"] for r in rows) == sorted(VARIANTS)
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores) and [int(r["rank"]) for r in rows] == [1, 2, 3, 4]
    assert {r["lr"] for r in rows} == {"0.0007", "0.002"} and {r["loss"] for r in rows} == {
        "mse",
        "mae",
    }
    for row in rows:  # the score is the validation RMSE relative to bicubic, never test
        val = json.loads(
            (tmp_path / f"results/tiny-sweep/models/{row['method']}/validation.json").read_text()
        )
        assert val["split"] == "val"
        ratios = [s["rmse"] / s["bicubic_rmse"] for s in val["variables"].values()]
        assert float(row["score"]) == pytest.approx(sum(ratios) / len(ratios))
    assert not list(evaluation.glob("*/metrics.json"))  # nothing was evaluated on test
    assert (evaluation / "sweep_unet.png").stat().st_size > 10_000
    assert f"| 1 | {rows[0]['method']} |" in (evaluation / "sweep_unet.md").read_text()


def test_fine_tuning_in_the_same_campaign_depends_on_the_parent_and_records_lineage(
    tmp_path: Path,
):
    unet = {"epochs": 1, "patch": 32, "batch": 8}
    cfg_path = write_config(
        tmp_path / "tiny.yaml",
        methods={
            "quantile-mapping": None,
            "unet": unet,
            "unet-ft": {
                **unet,
                "type": "unet",
                "init_from": {"campaign": "tiny", "method": "unet"},
                "freeze": ["encoder"],
            },
        },
    )
    lineage = "results/tiny/evaluation/lineage.html"
    result = run_snakemake(tmp_path, lineage, "--configfile", str(cfg_path))
    assert result.returncode == 0, result.stderr[-3000:]
    page = (tmp_path / lineage).read_text()
    assert "unet-ft" in page and "tiny/unet" in page and "encoder" in page
    val = json.loads((tmp_path / "results/tiny/models/unet-ft/validation.json").read_text())
    assert val["lineage"][0]["path"] == "results/tiny/models/unet/model.pt"
    # a retrained parent makes its child out of date: the parent is an input of the child's train
    parent = "results/tiny/models/unet/model.pt"
    result = run_snakemake(
        tmp_path, lineage, "--dry-run", "--forcerun", parent, "--configfile", str(cfg_path)
    )
    assert planned_jobs(result).get("train") == 2, result.stdout[-2000:]
    assert f"Input files updated by another job: {parent}" in result.stdout


def test_the_campaign_configs_of_issue_11_validate():
    for name in ("toy-sweep", "fmi-finetune"):
        raw = yaml.safe_load((REPO / "config" / "campaigns" / f"{name}.yaml").read_text())
        assert raw["campaign"] == name
        load_config(REPO / "config" / "config.yaml", REPO / "config" / "campaigns" / f"{name}.yaml")
    cfg = load_config(
        REPO / "config" / "config.yaml", REPO / "config" / "campaigns" / "fmi-finetune.yaml"
    )
    assert parent_model(cfg, "unet-ft") == Path("results/knmi/models/unet/model.pt")
    assert parent_model(cfg, "unet") is None

"""``climai verify`` on campaigns made from other campaigns' outputs, and the cause it names when
the reference was made from other input files or another config."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

from climai import cli, verify
from climai.config import load_config, validate_config
from climai.manifest import compare_campaigns
from climai.reuse import check_reused_dataset
from climai.testing import prepare_campaign, write_config


def test_verify_reruns_a_campaign_that_reuses_another_campaigns_prepared_data_and_model(
    tmp_path, monkeypatch
):
    """The rerun goes to a fresh results folder, where the reused campaign's prep/ and parent
    model were missing: the rerun failed at its parse-time check, whatever the reference."""
    config = prepare_campaign(tmp_path)  # campaign tiny: results/tiny/prep
    results = tmp_path / "results"
    (results / "tiny/models/unet").mkdir(parents=True)
    (results / "tiny/models/unet/model.pt").write_bytes(b"parent")
    reuser = write_config(
        tmp_path / "reuser.yaml",
        campaign="reuser",
        results=str(results),
        prepared={"campaign": "tiny"},
        methods={
            "ft": {"type": "unet", "patch": 16, "init_from": {"campaign": "tiny", "method": "unet"}}
        },
    )
    (results / "reuser/evaluation").mkdir(parents=True)  # a reference to compare with
    (results / "reuser/evaluation/summary.csv").write_text("method,rmse\nft,1.0\n")
    seen = {}

    def rerun(configfiles, fresh, cores):  # what the Snakefile checks at parse, then made nothing
        cfg = load_config(*configfiles).model_copy(update={"results": str(fresh)})
        check_reused_dataset(cfg)
        seen["parent"] = (fresh / "tiny/models/unet/model.pt").read_bytes()

    monkeypatch.setattr(verify, "rerun_campaign", rerun)
    monkeypatch.setattr(verify, "compare_campaigns", lambda *args: [])
    monkeypatch.chdir(tmp_path)
    assert cli.main(["verify", "--configfile", str(config), "--configfile", str(reuser)]) == 0
    assert seen["parent"] == b"parent"
    assert (results / "tiny/prep/dataset.zarr").is_dir()  # linked, never moved


def test_a_failed_verify_rerun_is_one_error_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    def rerun(configfiles, fresh, cores):
        raise verify.RerunFailed("the rerun failed (exit 1):\nWorkflowError: boom")

    config = write_config(tmp_path / "c.yaml", results=str(tmp_path / "results"))
    reference = load_config(config).campaign_dir / "evaluation"
    reference.mkdir(parents=True)
    (reference / "summary.csv").write_text("method,rmse\nbicubic,1.0\n")
    monkeypatch.setattr(verify, "rerun_campaign", rerun)
    assert cli.main(["verify", "--configfile", str(config)]) == 1
    assert "climai verify: error: the rerun failed (exit 1)" in capsys.readouterr().err


def _campaign(root: Path, rmse: float, input_sha: str, config_sha: str) -> Path:
    (root / "evaluation/unet").mkdir(parents=True)
    (root / "evaluation/unet/metrics.json").write_text(json.dumps({"tas": {"rmse": rmse}}))
    manifest = {
        "config_sha256": config_sha,
        "inputs": [{"path": "data/a.nc", "size": 3, "sha256": input_sha}],
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_verify_names_a_changed_input_file_not_a_nondeterministic_kernel(tmp_path):
    """The reference was made from another version of an input file (its mtime older than the
    outputs, so Snakemake reran nothing): the manifests' input identities say so."""
    reference = _campaign(tmp_path / "ref", 1.0, "a" * 64, "c" * 64)
    rerun = _campaign(tmp_path / "new", 2.0, "b" * 64, "c" * 64)
    [result] = compare_campaigns(reference, rerun)
    assert not result.ok
    assert "input data/a.nc changed since the reference was made: sha256" in result.detail
    assert "nondeterministic" not in result.detail


def test_verify_names_another_config_hash(tmp_path):
    reference = _campaign(tmp_path / "ref", 1.0, "a" * 64, "c" * 64)
    rerun = _campaign(tmp_path / "new", 2.0, "a" * 64, "d" * 64)
    [result] = compare_campaigns(reference, rerun)
    assert not result.ok and "the reference had another config" in result.detail
    assert "input data/a.nc" not in result.detail
    # the same manifests and the same values: nothing to name
    assert compare_campaigns(reference, reference)[0].detail == "bitwise identical"


def test_a_method_set_to_null_since_it_ran_is_neither_in_the_manifest_nor_verified(tmp_path):
    """Its outputs stay in the folder (Snakemake deletes nothing): the manifest listed them as the
    campaign's, and verify failed them as 'missing in the rerun'."""
    from climai.manifest import build_manifest, campaign_artifacts

    config = json.loads(validate_config({"methods": {"nearest": None}}).model_dump_json())
    root = tmp_path / "ref"
    for method in ("bicubic", "nearest"):
        (root / f"evaluation/{method}").mkdir(parents=True)
        (root / f"evaluation/{method}/metrics.json").write_text('{"tas": {"rmse": 1.0}}')
    (root / "evaluation/summary.csv").write_text("method,rmse\nbicubic,1.0\n")
    manifest = build_manifest(config, "c" * 64, root, [])
    assert sorted(manifest["artifacts"]) == [
        "evaluation/bicubic/metrics.json",
        "evaluation/summary.csv",
    ]
    assert len(campaign_artifacts(root)) == 3  # without a config: every artifact in the folder

    rerun = tmp_path / "new"
    shutil.copytree(root, rerun)
    shutil.rmtree(rerun / "evaluation/nearest")
    (root / "manifest.json").write_text(json.dumps(manifest))
    (rerun / "manifest.json").write_text(json.dumps(manifest))
    results = compare_campaigns(root, rerun)
    assert [r.artifact for r in results] == [
        "evaluation/bicubic/metrics.json",
        "evaluation/summary.csv",
    ]
    assert all(r.ok for r in results)


def test_a_nulled_methods_runtime_record_does_not_loosen_the_summarys_tolerance(tmp_path):
    """runtime/infer_nearest.json outlives methods.nearest: null; only the reference has it, which
    made the summary table's records 'differ' and its comparison take the 5 % tolerance of another
    machine instead of bitwise: a summary 2 % off passed."""
    config = json.loads(validate_config({"methods": {"nearest": None}}).model_dump_json())
    manifest = json.dumps({"config": config, "config_sha256": "c" * 64, "inputs": []})
    for name, value in (("ref", 1.0), ("new", 1.02)):
        root = tmp_path / name
        (root / "runtime").mkdir(parents=True)
        (root / "evaluation").mkdir()
        (root / "evaluation/summary.csv").write_text(f"method,rmse\nbicubic,{value}\n")
        (root / "runtime/infer_bicubic.json").write_text('{"threads": 1}')
        (root / "manifest.json").write_text(manifest)
    (tmp_path / "ref/runtime/infer_nearest.json").write_text('{"threads": 1}')
    [result] = compare_campaigns(tmp_path / "ref", tmp_path / "new")
    assert not result.ok and "bitwise expected" in result.detail


def test_a_reused_dataset_made_with_other_settings_names_the_keys_that_differ(tmp_path):
    """The refusal names each differing key with both campaigns' values, read from the other
    campaign's settings/preprocess.json when its hash is the dataset's; it named only the
    sections to compare (data, variables, scale, ...)."""
    import pytest

    from climai.config import ConfigError, config_sha256, stage_slice
    from climai.io.settings import settings_text

    config = prepare_campaign(tmp_path)  # campaign tiny
    tiny = load_config(config)
    settings = tmp_path / "results/tiny/settings/preprocess.json"
    reuser = write_config(
        tmp_path / "reuser.yaml", campaign="reuser", results=str(tmp_path / "results"),
        prepared={"campaign": "tiny"}, split={"train": 0.6, "val": 0.2, "test": 0.2},
    )  # fmt: skip
    cfg = load_config(config, reuser)
    with pytest.raises(ConfigError, match="another configuration") as plain:
        check_reused_dataset(cfg)  # no record of tiny's settings: the sections only
    assert "differ in" not in str(plain.value)
    settings.parent.mkdir(parents=True)
    settings.write_text(settings_text(stage_slice(tiny, "preprocess")))
    assert json.loads(settings.read_text())["config_sha256"] == config_sha256(
        stage_slice(tiny, "preprocess")
    )
    with pytest.raises(ConfigError, match=r"they differ in split\.train \(tiny: .*, this "
                       r"campaign: 0\.6\)") as named:  # fmt: skip
        check_reused_dataset(cfg)
    assert "split.val" in str(named.value) and "preprocess." not in str(named.value)
    other = dict(json.loads(settings.read_text()), config_sha256="0" * 64)
    settings.write_text(json.dumps(other))  # settings newer than the dataset: not its record
    with pytest.raises(ConfigError) as stale:
        check_reused_dataset(cfg)
    assert "differ in" not in str(stale.value)


_TERMINATED_VERIFY = """
import subprocess, sys
from pathlib import Path
from climai import verify

folder = Path(sys.argv[1])
real = subprocess.Popen


def slow_rerun(cmd, **kwargs):  # a rerun that takes a while: a child that sleeps
    proc = real([sys.executable, "-c", "import time; time.sleep(120)"], **kwargs)
    (folder / "child.pid").write_text(str(proc.pid))
    return proc


verify.subprocess.Popen = slow_rerun
(folder / "ref/evaluation").mkdir(parents=True)
(folder / "ref/evaluation/summary.csv").write_text("method,rmse\\nbicubic,1.0\\n")
verify.verify(folder / "ref", [], "toy", 1, workdir=folder)
"""


def test_a_terminated_verify_stops_its_rerun_and_removes_its_folder(tmp_path):
    """SIGTERM (kill, a SLURM time limit) ended climai verify at once: its Snakemake rerun ran
    on, orphaned, and /tmp/climai-verify-* stayed behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", _TERMINATED_VERIFY, str(tmp_path)])
    pid_file = tmp_path / "child.pid"
    for _ in range(600):
        if (pid_file.exists() and pid_file.read_text()) or proc.poll() is not None:
            break
        time.sleep(0.1)
    child = int(pid_file.read_text())
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        time.sleep(0.5)
        alive = (
            Path(f"/proc/{child}").exists()
            and "Z" not in Path(f"/proc/{child}/stat").read_text().split()[2]
        )
        assert not alive, "the rerun outlived climai verify"
        assert not list(tmp_path.glob("climai-verify-*"))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_verify_of_a_folder_without_artifacts_stops_before_the_rerun(tmp_path, monkeypatch, capsys):
    """A mistyped --reference (or a campaign never run) was found out only after the whole
    campaign had been rerun into the temporary folder."""
    reruns = []
    monkeypatch.setattr(verify, "rerun_campaign", lambda *args: reruns.append(args))
    config = write_config(tmp_path / "c.yaml", results=str(tmp_path / "results"))
    missing = tmp_path / "results/typo"
    assert cli.main(["verify", "--configfile", str(config), "--reference", str(missing)]) == 1
    assert reruns == []
    assert (
        f"climai verify: error: no campaign artifacts under '{missing}'" in capsys.readouterr().err
    )


def test_an_extra_rules_prepared_folder_is_in_the_manifest_and_verified(tmp_path):
    """prepared.folder (docs/add-a-rule.md: a bias correction between preprocess and train) is
    what train, infer and evaluate read: its files were neither checksummed nor compared."""
    from climai.manifest import build_manifest

    raw = {"methods": {"nearest": None}, "prepared": {"folder": "prep-bc"}}
    config = json.loads(validate_config(raw).model_dump_json())
    root = tmp_path / "ref"
    for folder in ("prep", "prep-bc"):
        (root / folder).mkdir(parents=True)
        (root / folder / "stats.json").write_text('{"tas": {"mean": 280.0}}')
    (root / "evaluation/bicubic").mkdir(parents=True)
    (root / "evaluation/bicubic/metrics.json").write_text('{"tas": {"rmse": 1.0}}')
    manifest = build_manifest(config, "c" * 64, root, [])
    assert sorted(manifest["artifacts"]) == [
        "evaluation/bicubic/metrics.json",
        "prep-bc/stats.json",
        "prep/stats.json",
    ]
    rerun = tmp_path / "new"
    shutil.copytree(root, rerun)
    (rerun / "prep-bc/stats.json").write_text('{"tas": {"mean": 281.0}}')  # the rule changed
    for folder in (root, rerun):
        (folder / "manifest.json").write_text(json.dumps(manifest))
    results = {r.artifact: r.ok for r in compare_campaigns(root, rerun)}
    assert results == {
        "prep/stats.json": True,
        "prep-bc/stats.json": False,
        "evaluation/bicubic/metrics.json": True,
    }

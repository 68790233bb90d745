"""``climai verify`` on campaigns made from other campaigns' outputs."""

from __future__ import annotations

from climai import cli, verify
from climai.config import load_config
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
    (results / "reuser").mkdir()
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
    monkeypatch.setattr(verify, "rerun_campaign", rerun)
    assert cli.main(["verify", "--configfile", str(config)]) == 1
    assert "climai verify: error: the rerun failed (exit 1)" in capsys.readouterr().err

"""``climai verify`` on a reference folder that was changed after it was made: an edited model
card, a damaged zarr chunk, an artifact deleted from the reference."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from climai.io import write_store
from climai.io.checkpoints import load_model_file, save_model
from climai.manifest import artifact_checksum, compare_campaigns
from climai.synthetic import toy_world
from climai.testing import model_card_for, toy_feature_spec, trained_like_unet


def _model(path: Path) -> Path:
    spec = toy_feature_spec()
    net = trained_like_unet(spec, [4, 8])
    card = model_card_for(spec, [4, 8])
    card.update(config={**card["config"], "results": "results"}, provenance={"seed": 0})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(path, net.state_dict(), card)
    return path


def _edit_card(path: Path, edit) -> None:
    state, card = load_model_file(path)
    edit(card)
    save_model(path, state, card)


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c["features"]["stats"]["tas"].update(mean=286.0),  # normalisation
        lambda c: c["architecture"].update(constraint="conserve"),
        lambda c: c["provenance"].update(seed=1),  # the ensembles' noise
        lambda c: c["units"].update(pr="kg m-2 s-1"),
    ],
)
def test_an_edited_model_card_changes_the_model_files_checksum(tmp_path, edit):
    """The checksum covered the weights only: a card whose normalisation, constraint, seed or
    units were edited (which changes what `climai downscale` writes) was 'bitwise identical'."""
    path = _model(tmp_path / "model.pt")
    before = artifact_checksum(path)
    _edit_card(path, edit)
    assert artifact_checksum(path) != before


def test_provenance_and_the_results_folder_are_not_the_models_values(tmp_path):
    """The same model written by another checkout into another folder is the same model."""
    path = _model(tmp_path / "model.pt")
    before = artifact_checksum(path)

    def elsewhere(card):
        card["config"]["results"] = "/elsewhere"
        card["provenance"].update(git_commit="abc", climai_version="0.2")
        card["runtime"] = {"threads": 8}

    _edit_card(path, elsewhere)
    assert artifact_checksum(path) == before


def test_verify_fails_a_reference_model_whose_card_was_edited(tmp_path):
    reference = _model(tmp_path / "ref/models/unet/model.pt").parents[2]
    rerun = tmp_path / "new"
    shutil.copytree(reference, rerun)
    _edit_card(
        reference / "models/unet/model.pt",
        lambda c: c["features"]["stats"]["tas"].update(mean=286.0),
    )
    [result] = compare_campaigns(reference, rerun)
    assert result.artifact == "models/unet/model.pt"
    assert not result.ok and "values differ" in result.detail
    # which field: the detail said only "max abs difference inf"
    assert "the model cards differ in features.stats.tas.mean (286.0 → " in result.detail


def _store_campaign(root: Path) -> Path:
    target, _ = toy_world(seed=1, nx=16, ny=16, steps=4)
    write_store(
        target[["tas"]].drop_vars("crs", errors="ignore"), root / "downscaled/unet/test.zarr"
    )
    (root / "evaluation").mkdir(parents=True)
    (root / "evaluation/summary.csv").write_text("method,variable,rmse\nunet,tas,0.5\n")
    return root


def test_a_damaged_chunk_in_the_reference_names_the_artifact_not_a_traceback(tmp_path):
    """A flipped byte in a compressed chunk made blosc raise RuntimeError out of verify (a
    traceback naming no file)."""
    reference = _store_campaign(tmp_path / "ref")
    rerun = tmp_path / "new"
    shutil.copytree(reference, rerun)
    chunk = next(
        p
        for p in sorted((reference / "downscaled/unet/test.zarr/tas").rglob("*"))
        if p.is_file() and p.name != "zarr.json"
    )
    chunk.write_bytes(b"\x02\x01" + chunk.read_bytes()[2:12])  # truncated: undecodable
    results = {r.artifact: r for r in compare_campaigns(reference, rerun)}
    bad = results["downscaled/unet/test.zarr"]
    assert not bad.ok
    assert bad.detail.startswith("unreadable in the reference: ") and str(reference) in bad.detail
    assert results["evaluation/summary.csv"].ok


def test_an_artifact_deleted_from_the_reference_fails_verify(tmp_path):
    """Only the reference's own files were compared: a downscaled store or summary table
    deleted from it (the rerun made it) passed unnoticed. Deleted means listed by the
    reference's manifest.json: a reference made in part (stage by stage, --until, as the GPU
    check makes its reference) is compared on what it has."""
    reference = _store_campaign(tmp_path / "ref")
    rerun = tmp_path / "new"
    shutil.copytree(reference, rerun)
    shutil.rmtree(reference / "downscaled/unet/test.zarr")
    results = {r.artifact: r for r in compare_campaigns(reference, rerun)}
    assert set(results) == {"evaluation/summary.csv"}  # no manifest: made in part
    listed = {"downscaled/unet/test.zarr": "x", "evaluation/summary.csv": "y"}
    (reference / "manifest.json").write_text(json.dumps({"artifacts": listed}))
    results = {r.artifact: r for r in compare_campaigns(reference, rerun)}
    missing = results["downscaled/unet/test.zarr"]
    assert not missing.ok and missing.detail.startswith("missing in the reference (its manifest")
    assert results["evaluation/summary.csv"].ok


def test_a_changed_model_is_not_blamed_on_a_config_change_its_training_did_not_read(tmp_path):
    """With evaluate.wet_threshold changed since the reference, a model file changed by hand was
    reported as 'made from other data or config: config_sha256 ... (the reference had another
    config)', though the training's own slice (the card's config_sha256) was the same."""
    reference = _model(tmp_path / "ref/models/unet/model.pt").parents[2]
    rerun = tmp_path / "new"
    shutil.copytree(reference, rerun)
    for root, sha in ((reference, "a"), (rerun, "b")):  # the whole config's hash differs
        (root / "manifest.json").write_text(json.dumps({"config_sha256": sha * 64, "inputs": []}))
    state, card = load_model_file(reference / "models/unet/model.pt")
    state = {k: v + 1e-3 if v.is_floating_point() else v for k, v in state.items()}
    save_model(reference / "models/unet/model.pt", state, card)
    [result] = compare_campaigns(reference, rerun)
    assert not result.ok and "values differ" in result.detail
    assert "config_sha256" not in result.detail and "file changed since" in result.detail
    # a training slice that differs is still named
    _edit_card(reference / "models/unet/model.pt", lambda c: c.update(config_sha256="1" * 64))
    [result] = compare_campaigns(reference, rerun)
    assert "the reference had another config" in result.detail


def test_verify_names_the_code_and_package_versions_that_differ(tmp_path):
    """The manifests record the code's commits and the package versions, but a rerun from
    another commit or with another numpy that moved a score was put down to 'no recorded item
    differs (a nondeterministic kernel, or a change not recorded)'."""
    for name, commit, numpy, rmse in (
        ("ref", "4c774e6", "2.4.6", 1.0),
        ("new", "d2ffc6a", "2.5.0", 1.1),
    ):
        root = tmp_path / name
        (root / "evaluation/unet").mkdir(parents=True)
        (root / "evaluation/unet/metrics.json").write_text(json.dumps({"tas": {"rmse": rmse}}))
        manifest = {
            "config_sha256": "c" * 64,
            "inputs": [],
            "code": {"package": {"commit": commit, "dirty": False, "path": f"/{name}"}},
            "packages": {"numpy": numpy, "torch": "2.13.0"},
        }
        (root / "manifest.json").write_text(json.dumps(manifest))
    [result] = compare_campaigns(tmp_path / "ref", tmp_path / "new")
    assert not result.ok
    assert "code.package.commit: 4c774e6 → d2ffc6a" in result.detail
    assert "packages.numpy: 2.4.6 → 2.5.0" in result.detail
    assert "torch" not in result.detail and ".path" not in result.detail
    assert "nondeterministic" not in result.detail

"""``climai verify`` on a reference folder that was changed after it was made: an edited model
card, a damaged zarr chunk, an artifact deleted from the reference."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from climai.io.checkpoints import load_model_file, save_model
from climai.manifest import artifact_checksum, compare_campaigns
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

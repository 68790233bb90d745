"""`climai downscale --output P` never destroys a user's files (issue 20, item 1).

Each refusal exits 1 with a message naming the path and the fix, and leaves every file as it was.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from climai.io import open_store, write_store
from climai.io.checkpoints import save_model
from climai.testing import lr_inputs, model_card_for, toy_feature_spec, trained_like_unet
from tests.unit.test_inference import _downscale  # the command on model.pt, lr.zarr, static.zarr


@pytest.fixture(scope="module")
def domain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model file, an LR store and a static store; each test works on its own copy."""
    root = tmp_path_factory.mktemp("safety")
    spec = toy_feature_spec()
    model = trained_like_unet(spec, [8, 16])
    save_model(root / "model.pt", model.state_dict(), model_card_for(spec, [8, 16]))
    lr, static = lr_inputs(32, 32, 2, seed=1)
    write_store(lr, root / "lr.zarr")
    write_store(static, root / "static.zarr")
    assert _downscale(root, root / "done.zarr") == 0  # an earlier climai output
    return root


@pytest.fixture
def work(domain: Path, tmp_path: Path) -> Path:
    shutil.copytree(domain, tmp_path / "w")
    return tmp_path / "w"


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        for p in sorted(root.rglob("*"))
    }


def _user_folder(w: Path) -> Path:
    (w / "mine").mkdir()
    (w / "mine" / "notes.txt").write_text("a user's notes")
    return w / "mine"


def _user_netcdf(w: Path) -> Path:
    xr.Dataset({"a": ("x", np.arange(3.0))}).to_netcdf(w / "obs.nc")
    return w / "obs.nc"


def _foreign_store(w: Path) -> Path:
    xr.Dataset({"a": ("x", np.arange(3.0))}).to_zarr(
        w / "theirs.zarr", zarr_format=3, consolidated=False
    )
    return w / "theirs.zarr"


def _climai_store_with_extra_file(w: Path) -> Path:
    (w / "done.zarr" / "README.txt").write_text("my notes about this run")
    return w / "done.zarr"


# (name, output inside the copy, the message: culprit and fix)
REFUSED = [
    (
        "a folder of a user's files",
        _user_folder,
        r"'.*mine' is a folder holding files "
        r"climai did not write \(notes.txt\).*choose another --output",
    ),
    ("the model file", lambda w: w / "model.pt", r"'.*model.pt' would overwrite the model"),
    ("the input store", lambda w: w / "lr.zarr", r"'.*lr.zarr' would overwrite the input"),
    ("a store inside the input", lambda w: w / "lr.zarr" / "hr.zarr", r"overwrite the input"),
    ("the static store", lambda w: w / "static.zarr", r"would overwrite the static"),
    ("a folder holding the model", lambda w: w, r"would overwrite the model .*contains"),
    ("a user's NetCDF file", _user_netcdf, r"'.*obs.nc' is a file climai did not write"),
    ("a zarr store climai did not write", _foreign_store, r"no 'climai_version' attribute"),
    ("a climai store with a user's file", _climai_store_with_extra_file, r"\(README.txt\)"),
]


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "--overwrite"])
@pytest.mark.parametrize(("name", "output", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_downscale_never_replaces_what_climai_must_not_touch(
    work, capsys, name, output, message, overwrite
):
    target = output(work)
    before = _snapshot(work)
    rc = _downscale(work, target, *(["--overwrite"] if overwrite else []))
    err = capsys.readouterr().err
    assert rc == 1, err
    assert f"climai downscale: error: --output {str(target)!r}" in err
    assert re.search(message, err), err
    assert "not even with --overwrite" in err
    assert _snapshot(work) == before, f"{name}: files changed"


def test_an_earlier_output_needs_overwrite(work, capsys):
    before = _snapshot(work)
    assert _downscale(work, work / "done.zarr") == 1
    err = capsys.readouterr().err
    assert "already exists (an earlier climai output); pass --overwrite to replace it" in err
    assert _snapshot(work) == before
    old = open_store(work / "done.zarr")["tas"].values
    assert _downscale(work, work / "done.zarr", "--overwrite") == 0
    np.testing.assert_array_equal(open_store(work / "done.zarr")["tas"].values, old)
    assert sorted(p.name for p in work.iterdir()) == sorted(
        ["model.pt", "lr.zarr", "static.zarr", "done.zarr"]
    ), "a temporary, lock or set-aside copy was left behind"

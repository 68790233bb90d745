import pickle

import numpy as np
import pytest
import torch
import xarray as xr

from climai.io import atomic_path, open_store, write_json, write_store
from climai.io.checkpoints import load_model_file, save_model
from climai.io.provenance import provenance_attrs
from climai.io.stores import StoreError


def test_atomic_path_leaves_nothing_when_the_write_fails(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("{half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_an_old_store(tmp_path):
    ds = xr.Dataset({"a": (("y", "x"), np.ones((2, 3), np.float32))})
    write_store(ds, tmp_path / "s.zarr")
    write_store(ds * 2, tmp_path / "s.zarr")
    np.testing.assert_array_equal(open_store(tmp_path / "s.zarr")["a"].values, 2.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


def test_missing_store_error_names_it(tmp_path):
    with pytest.raises(StoreError, match="nothere.zarr"):
        open_store(tmp_path / "nothere.zarr")


def test_json_is_written_sorted(tmp_path):
    write_json(tmp_path / "m.json", {"b": 1, "a": 2})
    assert (tmp_path / "m.json").read_text().index('"a"') < (tmp_path / "m.json").read_text().index(
        '"b"'
    )


def test_model_file_round_trip(tmp_path):
    state = {"w": torch.arange(4.0)}
    save_model(tmp_path / "model.pt", state, {"method": "unet", "stats": {"tas": {"mean": 1.0}}})
    loaded, card = load_model_file(tmp_path / "model.pt")
    assert torch.equal(loaded["w"], state["w"]) and card["method"] == "unet"


class _Evil:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_malicious_model_file_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("model.pt", "wb") as fh:
        pickle.dump({"state_dict": {}, "card": _Evil()}, fh, protocol=2)
    with pytest.raises(ValueError, match="not a loadable climai model"):
        load_model_file("model.pt")
    assert not (tmp_path / "PWNED").exists()


def test_provenance_attrs_name_rule_config_and_version():
    attrs = provenance_attrs("abc", "ingest")
    assert attrs["created_by_rule"] == "ingest" and attrs["config_sha256"] == "abc"
    assert {"climai_version", "git_commit"} <= set(attrs)

"""The manifest's checksums of zarr stores read block by block (issue 17): the same sha256 as
over the whole array at once, whatever the block size."""

from __future__ import annotations

import numpy as np
import pytest

from climai import manifest
from climai.io import open_store, write_store
from climai.synthetic import toy_world


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    target, _ = toy_world(seed=2, nx=16, ny=24, steps=10)
    ds = target.drop_vars("crs")
    members = np.stack([ds["pr"].values * k for k in (1.0, 0.5, 2.0)])
    ds["pr_ens"] = (("member", "time", "y", "x"), members)
    ds = ds.chunk({"time": 3, "member": 1})
    path = tmp_path_factory.mktemp("checksum") / "store.zarr"
    write_store(ds, path)
    return path


@pytest.mark.parametrize("block", [1, 2 * 16 * 24 * 4, 5 * 16 * 24 * 4, 10**9])
def test_blockwise_checksum_equals_the_whole_array_one(store, monkeypatch, block):
    monkeypatch.setattr(manifest, "_HASH_BLOCK", 10**12)
    whole = manifest.artifact_checksum(store)
    monkeypatch.setattr(manifest, "_HASH_BLOCK", block)
    assert manifest.artifact_checksum(store) == whole


def test_blockwise_reads_stay_under_the_block(store, monkeypatch):
    block = 2 * 16 * 24 * 4
    monkeypatch.setattr(manifest, "_HASH_BLOCK", block)
    sizes = []
    original = manifest.np.ascontiguousarray

    def spy(values):
        sizes.append(np.asarray(values).nbytes)
        return original(values)

    monkeypatch.setattr(manifest.np, "ascontiguousarray", spy)
    manifest.artifact_checksum(store)
    ds = open_store(store)
    assert max(sizes) <= 3 * 16 * 24 * 4 < ds["pr_ens"].nbytes


def _exported_campaign(root, history: str, scale: float = 1.0, rmse: float = 0.5404):
    """A campaign folder with a NetCDF export of method ``unet-crps`` (its history written at
    ``history``), the summary table and the method's runtime record."""
    target, _ = toy_world(seed=3, nx=8, ny=6, steps=4)
    ds = target[["pr"]].drop_vars("crs", errors="ignore") * scale
    ds.attrs.update(history=f"{history}: climai export", source="climai 0.1 (commit abc)")
    (root / "export").mkdir(parents=True)
    ds.to_netcdf(root / "export" / "unet-crps_pr.nc")
    (root / "evaluation").mkdir()
    (root / "evaluation" / "summary.csv").write_text(
        f"method,variable,rmse,flag\nbicubic,pr,0.61,\nunet-crps,pr,{rmse},worse\n"
    )
    (root / "runtime").mkdir()
    for rule in ("train", "infer"):
        (root / "runtime" / f"{rule}_unet-crps.json").write_text('{"threads": 2}')


def test_verify_covers_the_netcdf_exports_and_the_summary_table(tmp_path):
    """A rerun's export differs only in its history (when it was written): equal; a changed
    value in an export or in the summary table is named, bitwise expected where the runtime
    records match, within the tolerance where they say the runs differ."""
    ref, same, other = tmp_path / "ref", tmp_path / "same", tmp_path / "other"
    _exported_campaign(ref, "2026-12-01T10:00Z")
    _exported_campaign(same, "2026-12-07T13:00Z")
    result = {c.artifact: c for c in manifest.compare_campaigns(ref, same)}
    assert result.keys() == {"export/unet-crps_pr.nc", "evaluation/summary.csv"}
    assert all(c.ok and c.detail == "bitwise identical" for c in result.values())

    _exported_campaign(other, "2026-12-07T13:00Z", scale=1 + 1e-4, rmse=0.5405)
    result = {c.artifact: c for c in manifest.compare_campaigns(ref, other)}
    assert not any(c.ok for c in result.values())
    assert all("bitwise expected" in c.detail for c in result.values())
    (other / "runtime" / "train_unet-crps.json").write_text('{"threads": 1}')
    result = {c.artifact: c for c in manifest.compare_campaigns(ref, other)}
    for c in result.values():
        assert c.ok and "train_unet-crps.threads: 2 → 1" in c.detail, c

    (other / "evaluation" / "summary.csv").write_text(
        "method,variable,rmse,flag\nbicubic,pr,0.61,\nunet-crps,pr,0.5404,\n"
    )  # a flag lost: text differs, whatever the tolerance
    assert not {c.artifact: c for c in manifest.compare_campaigns(ref, other)}[
        "evaluation/summary.csv"
    ].ok

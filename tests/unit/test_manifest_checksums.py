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

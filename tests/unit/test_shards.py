"""The fast shard reader equals zarr bitwise, and declines layouts it does not handle."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec

from climai.io import open_store, write_store
from climai.io.shards import read_shard, shard_dask_array, with_fast_reads
from climai.preprocess.dataset import Layout, with_hr_layout
from climai.testing import create_masked_test_data


def test_fast_reads_equal_zarr_bitwise_with_nan_holes_and_a_partial_last_shard(tmp_path):
    target, _ = create_masked_test_data(nx=32, ny=32, steps=21)  # 21 = 2 × 8 + 5
    store = tmp_path / "target.zarr"
    write_store(with_hr_layout(target, ["tas", "pr"], Layout(time_chunk=8, tile=16)), store)
    ds = open_store(store)
    fast = with_fast_reads(ds, store)
    for name in ("tas", "pr"):
        arr = fast[name].data
        assert arr.name.startswith("read-shard-")  # really the fast path
        assert arr.chunks[0] == (8, 8, 5)
        expected = zarr.open_array(store / name, mode="r")[...]
        got = fast[name].values
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)  # NaN holes included
    assert np.isnan(fast["pr"].values).any()


def test_unwritten_inner_chunks_read_as_the_fill_value(tmp_path):
    arr = zarr.create_array(
        tmp_path / "a",
        shape=(4, 8, 8),
        chunks=(1, 4, 4),
        shards=(2, 8, 8),
        dtype="float32",
        fill_value=np.nan,
        compressors=[BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")],
    )
    arr[0, :4, :4] = 1.5  # one inner chunk of shard 0; shard 1 has no file at all
    darr = shard_dask_array(tmp_path / "a")
    assert darr is not None
    np.testing.assert_array_equal(darr.compute(), arr[...])


def test_other_layouts_are_declined(tmp_path):
    plain = zarr.create_array(tmp_path / "plain", shape=(4, 8, 8), chunks=(1, 8, 8), dtype="f4")
    plain[...] = 1
    assert shard_dask_array(tmp_path / "plain") is None  # not sharded
    tiled = zarr.create_array(
        tmp_path / "tiled", shape=(4, 8, 8), chunks=(1, 4, 4), shards=(2, 4, 4), dtype="f4"
    )
    tiled[...] = 1
    assert shard_dask_array(tmp_path / "tiled") is None  # shards do not span rows and columns
    assert shard_dask_array(tmp_path / "missing") is None


def test_a_corrupt_shard_index_is_an_error_naming_the_file(tmp_path):
    arr = zarr.create_array(
        tmp_path / "a",
        shape=(2, 8, 8),
        chunks=(1, 4, 4),
        shards=(2, 8, 8),
        dtype="float32",
        compressors=[BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")],
    )
    arr[...] = np.arange(128, dtype="f4").reshape(2, 8, 8)
    shard = tmp_path / "a" / "c" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF  # flip a byte of the index
    shard.write_bytes(bytes(data))
    from climai.io.shards import _layout

    with pytest.raises(OSError, match=r"c/0/0/0.*checksum"):
        read_shard(tmp_path / "a", 0, _layout(tmp_path / "a"))


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_the_codec_setting_is_the_written_stores_blosc_codec(tmp_path, codec):
    """preprocess.codec (Layout.codec) is the Blosc cname of every HR array written."""
    target, _ = create_masked_test_data(nx=16, ny=16, steps=4)
    store = tmp_path / "target.zarr"
    write_store(with_hr_layout(target, ["tas", "pr"], Layout(codec=codec, clevel=3)), store)
    for name in ("tas", "pr"):
        codecs = zarr.open_array(store / name, mode="r").compressors
        assert [(c.cname.value, c.clevel) for c in codecs] == [(codec, 3)]
        np.testing.assert_array_equal(open_store(store)[name].values, target[name].values)

"""``infer`` on every GPU of a job: ranks share time chunks and fill one store together.

The fast tests run the shared store with ranks as threads; the slow ones run the real
``climai infer`` under ``torchrun --nproc_per_node=2`` on the CPU (gloo), which is what a 2-GPU
job runs, one device per rank aside.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from climai import cli
from climai.inference.distributed import InferRanks, chunk_seed, chunk_share
from climai.io import SharedStoreError, open_store, shared_streamed_store
from climai.preprocess.splits import SPLITS


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("steps", [1, 5, 10, 24])
def test_chunk_shares_are_whole_contiguous_chunks_covering_every_step_once(world, steps):
    chunk = 3
    shares = [chunk_share(steps, chunk, InferRanks(rank, world)) for rank in range(world)]
    indices = [k for share in shares for k, _ in share]
    assert indices == list(range(-(-steps // chunk)))  # every chunk once, in rank order
    for share in shares:
        for k, times in share:
            assert times.start == k * chunk  # starts on a chunk boundary: no chunk is shared
            assert times.stop == min(steps, (k + 1) * chunk)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_chunk_seeds_are_stable_and_distinct():
    seeds = [chunk_seed(0, k) for k in range(100)]
    assert seeds == [chunk_seed(0, k) for k in range(100)]
    assert len(set(seeds)) == 100
    assert chunk_seed(1, 0) not in seeds  # not seed + chunk: seed 1 chunk 0 ≠ seed 0 chunk 1
    assert all(0 <= s < 2**63 for s in seeds)


class ThreadRanks:
    """Ranks as threads of one process: the collectives of :class:`InferRanks` on a barrier."""

    def __init__(self, rank: int, world: int, box: list, barrier: threading.Barrier) -> None:
        self.rank, self.world, self._box, self._barrier = rank, world, box, barrier

    def broadcast(self, obj):
        if self.rank == 0:
            self._box[0] = obj
        self._barrier.wait()
        out = self._box[0]
        self._barrier.wait()
        return out

    def gather(self, obj):
        self._box[self.rank] = obj
        self._barrier.wait()
        out = list(self._box)
        self._barrier.wait()
        return out


def _template(steps: int = 6, chunk: int = 2) -> xr.Dataset:
    import dask.array as da

    return xr.Dataset(
        {
            "tas": (
                ("time", "y", "x"),
                da.zeros((steps, 4, 4), dtype=np.float32, chunks=(chunk, 4, 4)),
            )
        },
        coords={"time": np.arange(steps), "y": np.arange(4.0), "x": np.arange(4.0)},
    )


def _fill_together(
    target: Path, world: int, fail_rank: int | None = None
) -> dict[int, BaseException]:
    """Every rank writes its chunks (value = its rank + 1) into one shared store; rank
    ``fail_rank`` raises after writing its first chunk. Returns each rank's exception."""
    template = _template()
    box: list = [None] * world
    barrier = threading.Barrier(world, timeout=30)
    errors: dict[int, BaseException] = {}

    def rank_main(rank: int) -> None:
        ranks = ThreadRanks(rank, world, box, barrier)
        try:
            with shared_streamed_store(target, template, ranks) as writer:
                share = chunk_share(template.sizes["time"], 2, InferRanks(rank, world))
                for k, times in share:
                    writer.write("tas", (times,), np.full((2, 4, 4), rank + 1, np.float32))
                    if rank == fail_rank and k == share[0][0]:
                        raise RuntimeError(f"disk full on rank {rank}")
        except BaseException as err:  # collected for the test's assertions
            errors[rank] = err

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return errors


def test_ranks_fill_one_store_that_appears_once_all_are_done(tmp_path):
    target = tmp_path / "out" / "test.zarr"
    assert _fill_together(target, world=3) == {}
    values = open_store(target)["tas"].values
    np.testing.assert_array_equal(values[:, 0, 0], [1, 1, 2, 2, 3, 3])
    assert sorted(p.name for p in target.parent.iterdir()) == ["test.zarr"]


@pytest.mark.parametrize("fail_rank", [0, 1])
def test_a_failing_rank_leaves_no_store_and_every_rank_says_which(tmp_path, fail_rank):
    target = tmp_path / "out" / "test.zarr"
    errors = _fill_together(target, world=2, fail_rank=fail_rank)
    assert set(errors) == {0, 1}
    assert isinstance(errors[fail_rank], RuntimeError)  # the failing rank raises its own error
    other = errors[1 - fail_rank]
    assert isinstance(other, SharedStoreError)
    assert f"rank {fail_rank} of 2 failed: RuntimeError: disk full on rank {fail_rank}" in str(
        other
    )
    assert list(target.parent.iterdir()) == []  # neither the store nor its temporary name


def test_rank_0_failing_to_create_the_store_stops_the_others(tmp_path):
    template = _template().assign_attrs(bad=object())  # cannot be written as zarr metadata
    box: list = [None, None]
    barrier = threading.Barrier(2, timeout=30)
    errors: dict[int, BaseException] = {}

    def rank_main(rank: int) -> None:
        try:
            with shared_streamed_store(
                tmp_path / "t.zarr", template, ThreadRanks(rank, 2, box, barrier)
            ):
                pass
        except BaseException as err:  # collected for the assertions
            errors[rank] = err

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert isinstance(errors[1], SharedStoreError) and "rank 0 could not create" in str(errors[1])
    assert 0 in errors and list(tmp_path.iterdir()) == []


# --- the real command under torchrun --------------------------------------------------------

SMALL = {"epochs": 1, "patch": 16, "batch": 4, "channels": [8, 16]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny campaign with a deterministic (tiled) and an ensemble (chunked) model trained.

    ``infer.time_block: 2`` cuts the 10 test steps into 5 time chunks: 2 ranks get 2 and 3.
    """
    from climai.testing import prepare_campaign

    workdir = tmp_path_factory.mktemp("ranks")
    config = prepare_campaign(
        workdir,
        methods={"bicubic": {}, "unet": SMALL, "unet-crps": {**SMALL, "members": 3}},
        infer={"time_block": 2, "tile": 16, "overlap": 8, "progress": False},
    )
    for method in ("unet", "unet-crps"):
        argv = ["train", "--configfile", str(config), "--method", method, "--threads", "2"]
        assert cli.main(argv) == 0
    return config


def _infer(config: Path, method: str, nproc: int) -> subprocess.CompletedProcess[str]:
    bindir = Path(sys.executable).parent
    launcher = [str(bindir / "torchrun"), "--standalone", f"--nproc_per_node={nproc}"]
    cmd = [
        *(launcher if nproc > 1 else [sys.executable]),
        "-m", "climai.cli", "infer", "--configfile", str(config), "--method", method,
        "--threads", "1",
    ]  # fmt: skip
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)


def _store_bytes(store: Path) -> dict[str, bytes]:
    """Every data chunk file of a store (metadata differ by provenance only in attrs)."""
    return {
        str(p.relative_to(store)): p.read_bytes()
        for p in sorted(store.rglob("*"))
        if p.is_file() and p.name != "zarr.json"
    }


@pytest.mark.slow
@pytest.mark.parametrize("method", ["unet", "unet-crps"])
def test_two_ranks_write_the_same_store_as_one_process(trained, method):
    """Bitwise: each rank runs the same time chunks (same batches, same per-chunk seeds) that
    one process runs, so even the compressed chunk files are identical."""
    out = trained.parent / "results/tiny/downscaled" / method / "test.zarr"
    one = _infer(trained, method, 1)
    assert one.returncode == 0, one.stderr[-3000:]
    single, single_files = open_store(out).load(), _store_bytes(out)
    two = _infer(trained, method, 2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "rank 0 of 2" in two.stderr and "rank 1 of 2" in two.stderr
    both = open_store(out)
    xr.testing.assert_identical(single, both.load())
    assert _store_bytes(out) == single_files
    assert sorted(p.name for p in out.parent.iterdir()) == ["test.zarr"]
    if method == "unet-crps":  # members first, chunked by member, time_block and tile stride
        assert both["tas"].dims == ("member", "time", "y", "x") and both.sizes["member"] == 3
        assert zarr.open_array(str(out / "tas"), mode="r").chunks == (1, 2, 8, 8)
        # members differ from each other, and chunks are not copies of each other
        assert not np.array_equal(both["tas"][0].values, both["tas"][1].values)


@pytest.mark.slow
def test_a_rank_failing_on_corrupt_input_leaves_no_output(trained):
    """A corrupt input chunk that only rank 0 reads makes it fail after rank 1 has written its
    share: rank 1 names rank 0's error, torchrun exits non-zero, and neither the store nor its
    temporary name is left. After repairing the input a rerun writes the store."""
    dataset = trained.parent / "results/tiny/prep/dataset.zarr"
    out = trained.parent / "results/tiny/downscaled/unet/test.zarr"
    shutil.rmtree(out.parent, ignore_errors=True)  # as Snakemake does before a job
    test_steps = np.flatnonzero(open_store(dataset)["split"].values == SPLITS.index("test"))
    (lr_chunk,) = zarr.open_array(str(dataset / "lr_tas"), mode="r").chunks[:1]
    first = test_steps[0] // lr_chunk  # rank 0's first steps (time_block 2: 2 of 5 chunks)
    assert test_steps[4] // lr_chunk > first  # rank 1's steps start in a later input chunk
    chunk = dataset / f"lr_tas/c/{first}/0/0"
    saved = chunk.read_bytes()
    chunk.write_bytes(b"not blosc" * 10)
    try:
        res = _infer(trained, "unet", 2)
    finally:
        chunk.write_bytes(saved)
    assert res.returncode != 0
    assert "climai infer: error: " in res.stderr, res.stderr[-3000:]
    assert "was not written: rank 0 of 2 failed: RuntimeError: error during blosc" in res.stderr
    assert list(out.parent.iterdir()) == []
    assert _infer(trained, "unet", 2).returncode == 0
    assert open_store(out)["tas"].notnull().all()

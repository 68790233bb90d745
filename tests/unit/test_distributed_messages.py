"""The ranks of a multi-GPU inference exchange tensors only: strings travel as UTF-8 bytes in
uint8 tensors, never as pickled objects that a peer on the rendezvous could make a rank run."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from climai.inference.distributed import MAX_MESSAGE, InferRanks, _decode, _encode

PICKLING = {"broadcast_object_list", "all_gather_object", "gather_object", "scatter_object_list",
            "send_object_list", "recv_object_list"}  # fmt: skip


@pytest.mark.parametrize("obj", [None, "", "/scratch/out.zarr", "RuntimeError: ü ✓"])
def test_messages_round_trip_through_tensors(obj):
    assert _decode(_encode(obj)) == obj


def test_a_long_message_is_cut():
    assert len(_decode(_encode("x" * (MAX_MESSAGE + 10))) or "") == MAX_MESSAGE


def test_no_collective_pickles_objects():
    root = Path(__file__).resolve().parents[2] / "climai"
    used = {
        node.attr
        for path in root.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
    }
    assert not used & PICKLING


def _rank(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    ranks = InferRanks(rank, 2, rank)
    got = (
        ranks.broadcast("/out/é.zarr" if rank == 0 else None),
        ranks.gather([None, "boom"][rank]),
    )
    queue.put((rank, got))
    dist.destroy_process_group()


def test_two_ranks_broadcast_and_gather_strings():
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(
        _rank, args=(29000 + os.getpid() % 900, queue), nprocs=2, start_method="spawn"
    )
    results = dict(queue.get() for _ in range(2))
    assert results[0] == results[1] == ("/out/é.zarr", [None, "boom"])

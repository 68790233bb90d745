"""All file I/O of climai: stores, JSON, checkpoints; every write is atomic."""

from climai.io.atomic import atomic_path, read_values, write_json, write_text
from climai.io.provenance import provenance_attrs
from climai.io.regions import (
    RankGroup,
    RegionWriter,
    SharedStoreError,
    shared_streamed_store,
    streamed_store,
)
from climai.io.stores import open_store, write_store

__all__ = [
    "RankGroup",
    "RegionWriter",
    "SharedStoreError",
    "atomic_path",
    "open_store",
    "provenance_attrs",
    "read_values",
    "shared_streamed_store",
    "streamed_store",
    "write_json",
    "write_store",
    "write_text",
]

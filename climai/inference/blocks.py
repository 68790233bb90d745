"""How many time steps the inference engine puts in a block: one rule, used by the engine
(:func:`climai.inference.engine.block_steps`) and by the cost model's memory driver
(:attr:`climai.cost.Workload.band_mb`). No heavy imports: sizing imports it at DAG-build time."""

from __future__ import annotations

#: Float32 bytes of one chunk of a downscaled store at most (with ``infer.time_block`` 0): the
#: time block is cut so that a chunk (steps × chunk rows × chunk columns) stays this size, so
#: that readers of the store (evaluate, export, a user's dask) hold bounded chunks whatever the
#: series' length or the memory budget.
CHUNK_BYTES = 16 << 20


def steps_per_block(time_block: int, memory_mb: int, bytes_per_step: int, chunk_cells: int) -> int:
    """``time_block`` (``infer.time_block``) when set, else as many steps as ``memory_mb`` of band
    buffers allow at ``bytes_per_step``, and as keep a store chunk of ``chunk_cells`` cells a step
    within :data:`CHUNK_BYTES` (at least one)."""
    if time_block:
        return time_block
    budget = int(memory_mb * 2**20 // max(1, bytes_per_step))
    return max(1, min(budget, CHUNK_BYTES // (4 * max(1, chunk_cells))))

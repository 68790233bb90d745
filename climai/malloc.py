"""How this process holds memory: glibc's ``mallopt`` settings for two loads, oneDNN's cache.

:func:`release_large_buffers` (preprocess): freed buffers of 1 MiB and more go back to the OS at
once, so the peak RSS follows the blocks in flight. :func:`keep_freed_buffers` (a CPU inference):
freed memory stays in the heap for the next forward, which allocates the same large activations
again. Both are no-ops (False) where the C library is not glibc. :func:`uncache_primitives` (a
CPU inference): oneDNN keeps no compiled kernels per input shape. No torch import: preprocess
must not pay for it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: glibc's ``mallopt`` parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
#: :func:`release_large_buffers`: freed buffers of at least this size go back to the OS at once.
MMAP_THRESHOLD = 1 << 20
#: :func:`keep_freed_buffers`: free memory at the top of the heap kept for reuse, at most.
KEEP_TOP = 1 << 30
#: :func:`uncache_primitives`: oneDNN's environment variable for its primitive cache's entries.
PRIMITIVE_CACHE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"


def _mallopt(settings: dict[int, int]) -> bool:
    """Set glibc malloc parameters in this process; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(name)
        return all(bool(libc.mallopt(k, v)) for k, v in settings.items())
    except (OSError, AttributeError):
        return False


def release_large_buffers() -> bool:
    """Make glibc return freed buffers ≥ 1 MiB to the OS at once (``M_MMAP_THRESHOLD``), for
    jobs whose peak RSS must follow the data in flight (preprocess).

    By default glibc raises its mmap threshold after each large free (up to 32 MiB), so freed
    shard-sized buffers stay in per-thread arenas: measured 493 → 320 MB peak RSS for a 0.5 GB
    preprocess (BENCHMARKS.md).
    """
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))  # dask worker processes
    return _mallopt({M_MMAP_THRESHOLD: MMAP_THRESHOLD})


def keep_freed_buffers() -> bool:
    """Make glibc keep freed memory for the next allocation instead of returning it to the OS,
    for a loop that allocates the same large tensors again and again (a network's forward over
    tile batches on the CPU).

    Without it every buffer above glibc's mmap threshold (at most 32 MiB: a 16-channel fp32
    activation of four 512² tiles is 64 MiB) is a fresh ``mmap`` whose pages the kernel faults
    in and zeroes on first touch, then unmaps at ``free``: measured at 1.4–2× the forward's time
    at the engine's default batch (BENCHMARKS.md, "Session 41: freed buffers kept"). Here large
    blocks come from the heap (``M_MMAP_MAX`` 0), whose top is kept up to :data:`KEEP_TOP` free
    (``M_TRIM_THRESHOLD``). The peak RSS is the peak of live memory plus the heap's
    fragmentation (+3 to +30 % measured; the cost model's ``Workload.forward_mb`` covers it).
    """
    return _mallopt({M_MMAP_MAX: 0, M_TRIM_THRESHOLD: KEEP_TOP})


def uncache_primitives() -> None:
    """Turn oneDNN's primitive cache off in this process (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``
    0), unless the environment already sets it; read by oneDNN at its first primitive, so call
    it before the first CPU convolution.

    By default oneDNN keeps up to 1,024 compiled primitives (one per layer and input shape, with
    their buffers) for reuse. A CPU inference whose tile parts come in many shapes (a conserving
    rain model computes only the wet part of each tile) filled it: transfer-mrms-conus's ``unet``
    peaked at 2.7 GB against 2.4 GB without the cache, in the same time; whole tiles 1.7 GB
    against 1.45 GB (``benchmarks/primitive_cache.py``; pytorch/pytorch issue 27971). The cost:
    primitives built again for every forward, +6 % time for a 16-member ensemble on a 288² grid,
    none measured on large ones. Training, whose few shapes repeat every step, keeps the cache.
    """
    os.environ.setdefault(PRIMITIVE_CACHE, "0")

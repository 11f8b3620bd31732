"""Keep the process's resident memory close to what it is using.

Arrow's default allocator in the wheels (mimalloc) keeps freed pages for reuse. The
parse step allocates each batch on a scanning thread and frees it on the Parquet writer's
thread, and mimalloc then held on to most of what passed through: on a 0.3 GB report
the parse step peaked at 381 MB with it and at 280 MB with glibc's malloc, at the same
speed (docs/PERFORMANCE.md). engine/__init__.py sets ARROW_DEFAULT_MEMORY_POOL=system
before pyarrow loads, which also covers allocations that set_memory_pool does not reach
(with set_memory_pool alone, 55 MB stayed in mimalloc after a 0.3 GB parse).
"""

import ctypes
import ctypes.util
import functools

import pyarrow as pa

from engine.measure import resident_bytes


def return_freed_memory() -> None:
    """Route Arrow's allocations through the C library's malloc. Idempotent."""
    pa.set_memory_pool(pa.system_memory_pool())


@functools.cache
def _malloc_trim():
    # find_library runs ldconfig in a subprocess (about 2 ms): look it up once
    name = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None


def release_free_memory() -> None:
    """Hand memory that malloc holds free back to the system (glibc's malloc_trim).

    Called when a step has dropped its batches, so that the next step in the same process
    starts from what is really in use, and every few hundred batches during a parse."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class GrowthTrim:
    """malloc_trim, but only once resident memory has grown `slack` bytes past where the
    last trim left it.

    A trim is not free in a busy process: it walks the heap, and what it hands back is
    faulted in again by the next batches. In a catalog import a trim after every batch
    (51 of them) cost 0.12-0.20 s of a 2 s re-import, and one every fourth batch still
    about half that; checking first costs a statm read. With 24 MiB of slack a 500k-row
    re-import still trimmed 10 times, and took 1.36-1.39 s against 1.19-1.29 s with 48 MiB
    (peak 187-190 MB against 193-198 MB; 194-204 MB with no trim at all)."""

    def __init__(self, slack: int = 48 << 20):
        self.slack = slack
        self.floor = resident_bytes()
        self.trims = 0

    def __call__(self) -> None:
        if resident_bytes() > self.floor + self.slack:
            release_free_memory()
            self.trims += 1
            self.floor = resident_bytes()

"""A process's resident memory, sampled: the peak of a run whose steps reset the kernel's
high-water mark to measure themselves (so it cannot be read once at the end). No Dagster
here: the catalog bench samples a process that must not import it."""

import contextlib
import os
import threading
import time
from collections.abc import Iterator

from engine.measure import peak_rss_bytes, resident_bytes

_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_and_file_bytes() -> tuple[int, int]:
    """(resident memory, the part of it that is file pages: shared libraries mapped from the
    page cache) from /proc/self/statm."""
    try:
        with open("/proc/self/statm", "rb") as f:
            fields = f.read().split()
        return int(fields[1]) * _PAGE, int(fields[2]) * _PAGE
    except (OSError, IndexError, ValueError):
        return resident_bytes(), 0


class RssSampler(threading.Thread):
    """Samples this process's RSS every 5 ms until `done` is set; `peak` is the highest, and
    `file_at_peak` the file pages in it then. How many library pages a process has mapped
    depends on how the page cache got them (pages pip has just written are mapped in larger
    pieces than ones a process faulted in: 56 against 89 MB for the same catalog run), so
    the anonymous part is what compares across machines."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.file_at_peak = resident_and_file_bytes()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.005):
            resident, file = resident_and_file_bytes()
            if resident > self.peak:
                self.peak, self.file_at_peak = resident, file


@contextlib.contextmanager
def measured() -> Iterator[dict]:
    """Times the block and samples RSS while it runs. The dict it yields gets `seconds`,
    `peak_rss` (the block's peak, or the process's before it if higher), `file_at_peak`
    (library pages in it) and `rss_before_run` (the process's peak before the block: its
    imports)."""
    figures = {"rss_before_run": peak_rss_bytes()}
    sampler = RssSampler()
    sampler.start()
    started = time.perf_counter()
    try:
        yield figures
    finally:
        figures["seconds"] = time.perf_counter() - started
        sampler.done.set()
        sampler.join()
        figures["peak_rss"] = max(sampler.peak, figures["rss_before_run"])
        figures["file_at_peak"] = sampler.file_at_peak

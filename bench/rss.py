"""A process's resident memory, sampled: the peak of a run whose steps reset the kernel's
high-water mark to measure themselves (so it cannot be read once at the end). No Dagster
here: the catalog bench samples a process that must not import it."""

import contextlib
import threading
import time
from collections.abc import Iterator

from engine.measure import peak_rss_bytes, resident_bytes


class RssSampler(threading.Thread):
    """Samples this process's RSS every 5 ms until `done` is set; `peak` is the highest."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = resident_bytes()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.005):
            self.peak = max(self.peak, resident_bytes())


@contextlib.contextmanager
def measured() -> Iterator[dict]:
    """Times the block and samples RSS while it runs. The dict it yields gets `seconds`,
    `peak_rss` (the block's peak, or the process's before it if higher) and `rss_before_run`
    (the process's peak before the block: its imports)."""
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

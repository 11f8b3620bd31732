"""A process's resident memory, sampled: the peak of a run whose steps reset the kernel's
high-water mark to measure themselves (so it cannot be read once at the end). No Dagster
here: the catalog bench samples a process that must not import it."""

import threading

from engine.measure import resident_bytes


class RssSampler(threading.Thread):
    """Samples this process's RSS every 5 ms until `done` is set; `peak` is the highest."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = resident_bytes()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.005):
            self.peak = max(self.peak, resident_bytes())

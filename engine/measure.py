"""What a step did and what it cost: rows, bytes, seconds, throughput, peak memory."""

from __future__ import annotations

import logging
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> bool:
    """Start a new peak-memory window (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident memory of this process since the last reset (or since it started)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def resident_bytes() -> int:
    """This process's resident memory now (/proc/self/statm: one small read, ~10 µs)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


@dataclass
class Progress:
    """Logs rows done, rate and ETA at most every `interval` seconds.

    `total` and `done` are in whatever unit predicts the end best (bytes of input read)."""

    log: logging.Logger | object
    what: str
    total: int | None = None
    interval: float = 5.0
    unit: str = "rows"  # what `rows` counts; with another unit, `total` counts it too (not bytes)
    started: float = field(default_factory=time.monotonic)
    _last: float = 0.0
    reports: int = 0

    def update(self, rows: int, done: int | None = None, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - (self._last or self.started) < self.interval:
            return
        self._last = now
        self.reports += 1
        elapsed = max(now - self.started, 1e-9)
        message = f"{self.what}: {rows:,} {self.unit}, {rows / elapsed:,.1f} {self.unit}/s"
        if self.total and done is not None and done > 0:
            fraction = min(done / self.total, 1.0)
            eta = elapsed * (1 - fraction) / fraction if fraction else float("inf")
            of = human_bytes(self.total) if self.unit == "rows" else f"{self.total:,} {self.unit}"
            message += f", {fraction:.0%} of {of}, ETA {eta:,.0f}s"
        self.log.info(message)


@dataclass
class StepMeasure:
    """Wall time and peak memory of one step; use as a context manager."""

    seconds: float = 0.0
    peak_rss: int = 0
    start_rss: int = 0  # resident memory when the step began (imports, earlier steps)
    _start: float = 0.0

    def __enter__(self) -> "StepMeasure":
        reset_peak_rss()
        self.start_rss = peak_rss_bytes()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.seconds = time.perf_counter() - self._start
        self.peak_rss = peak_rss_bytes()

    def rate(self, rows: int) -> float:
        return rows / self.seconds if self.seconds > 0 else 0.0

"""What a run's requests did: counts, latency percentiles, retries by cause, dead letters by reason.

Latencies go into a histogram: buckets of 0.1 ms up to 100 ms (an integer division, no
logarithm on the hot path), then 2% wide above, so memory stays the same for a thousand
requests or a billion and percentiles are within 0.1 ms or 2%.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

_STEP = 1e-4  # seconds: the width of the linear buckets
_PER_SECOND = 1 / _STEP
_LINEAR = 1000  # linear buckets: up to 100 ms
_GROWTH = math.log(1.02)


def _bucket_edge(bucket: int) -> float:
    """The upper edge of a bucket, in seconds."""
    if bucket < _LINEAR:
        return (bucket + 1) * _STEP
    return _LINEAR * _STEP * math.exp((bucket - _LINEAR + 1) * _GROWTH)


@dataclass
class LatencyHistogram:
    linear: list[int] = field(default_factory=lambda: [0] * _LINEAR)  # one add: an index and an increment
    slow: Counter = field(default_factory=Counter)  # 100 ms and more, by 2% bucket

    def add(self, seconds: float) -> None:
        bucket = int(seconds * _PER_SECOND)
        if bucket < _LINEAR:
            self.linear[bucket] += 1
        else:
            self.slow[_LINEAR + int(math.log(seconds / (_LINEAR * _STEP)) / _GROWTH)] += 1

    @property
    def count(self) -> int:
        return sum(self.linear) + sum(self.slow.values())

    @property
    def buckets(self) -> Counter:
        return Counter({b: n for b, n in enumerate(self.linear) if n}) + self.slow

    def merge(self, other: "LatencyHistogram") -> None:
        self.linear = [a + b for a, b in zip(self.linear, other.linear)]
        self.slow.update(other.slow)

    def percentile(self, p: float) -> float | None:
        """The p-th percentile (0-100) in seconds: the upper edge of its bucket."""
        count = self.count
        if not count:
            return None
        rank = max(1, math.ceil(count * p / 100))
        seen = 0
        buckets = self.buckets
        for bucket in sorted(buckets):
            seen += buckets[bucket]
            if seen >= rank:
                return _bucket_edge(bucket)
        return None


@dataclass
class RequestStats:
    requests: int = 0  # calls sent (a batch is one)
    records_sent: int = 0  # record-attempts sent
    statuses: Counter = field(default_factory=Counter)  # answer status, or "timeout"/"connection"
    retries: Counter = field(default_factory=Counter)  # by cause: http_429, http_503, timeout, connection
    dead_letters: Counter = field(default_factory=Counter)  # by reason
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    first_send: float | None = None
    last_answer: float | None = None
    limiter_dropped: int = 0
    breaker_openings: int = 0
    breaker_probes: int = 0

    @property
    def sending_seconds(self) -> float:
        if self.first_send is None or self.last_answer is None:
            return 0.0
        return max(self.last_answer - self.first_send, 1e-9)

    @property
    def requests_per_second(self) -> float:
        seconds = self.sending_seconds
        return self.requests / seconds if seconds else 0.0

    def latency_ms(self) -> dict[str, float | None]:
        return {
            f"p{p}": (None if (v := self.latency.percentile(p)) is None else round(v * 1000, 2)) for p in (50, 95, 99)
        }

    def merge(self, other: "RequestStats") -> None:
        self.requests += other.requests
        self.records_sent += other.records_sent
        self.statuses.update(other.statuses)
        self.retries.update(other.retries)
        self.dead_letters.update(other.dead_letters)
        self.latency.merge(other.latency)
        self.limiter_dropped += other.limiter_dropped
        self.breaker_openings += other.breaker_openings
        self.breaker_probes += other.breaker_probes
        if other.first_send is not None:
            self.first_send = other.first_send if self.first_send is None else min(self.first_send, other.first_send)
        if other.last_answer is not None:
            self.last_answer = other.last_answer if self.last_answer is None else max(self.last_answer, other.last_answer)

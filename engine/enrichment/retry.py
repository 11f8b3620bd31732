"""Which answers are retried, and how long a record waits before its next attempt.

Retried: 429, every 5xx, timeouts and connection errors (refused, reset, closed without
an answer). Final: every other 4xx (the record is the problem: sending it again gives the
same answer). The wait before attempt n+1 is "full jitter" exponential backoff,
uniform(0, min(max_backoff, base * 2^(n-1))), so that records failing together do not
come back together; a `Retry-After` (seconds or an HTTP date) is honoured as a minimum,
capped at `max_retry_after` so that one answer cannot park a record for hours.

Why not tenacity: it retries a call by sleeping inside it, which would hold one of the
run's concurrency slots for the whole backoff and could not wait on the circuit breaker
without counting an attempt. Here a failed record goes back to the queue when its wait is
over, and its slot serves other records meanwhile.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RetrySettings:
    max_attempts: int = 8
    backoff_base: float = 0.1
    max_backoff: float = 30.0
    max_retry_after: float = 300.0

    def __post_init__(self):
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")


def retriable_status(status: int) -> bool:
    return status == 429 or status >= 500


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from now: a number of seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def backoff(attempts: int, retry_after: float | None, settings: RetrySettings, rng: random.Random) -> float:
    """Seconds to wait after the `attempts`-th failed attempt."""
    ceiling = min(settings.max_backoff, settings.backoff_base * 2 ** (attempts - 1))
    wait = rng.uniform(0, ceiling)
    if retry_after is not None:
        # at least what the server asked for, plus a little jitter so that the records it
        # turned away do not all return in the same instant
        wait = min(retry_after, settings.max_retry_after) + rng.uniform(0, settings.backoff_base)
    return wait

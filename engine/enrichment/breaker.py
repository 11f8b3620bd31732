"""A circuit breaker that pauses a run while the API fails, instead of burning records.

Closed: requests flow; the outcomes of the last `window` requests are kept, and when at
least `min_calls` of them are in and the share of failures reaches `failure_rate`, it
opens. Open: nobody sends; records keep their place and their attempts (a record is never
a dead letter because the breaker is open). After `open_seconds` one request is let
through (half-open): success closes the breaker with an empty window, failure opens it
again for twice as long (capped at `max_open_seconds`). When the breaker has stayed open
for `max_open_seconds` without a successful probe, `BreakerGaveUp` fails the run; the
records not yet done are not written, so a later run sends them.

Failures are what the retry policy retries (429, 5xx, timeouts, connection errors); a
final 4xx is the record's problem, not the API's, and counts as a success here.

Why its own code: pybreaker and aiobreaker count consecutive failures and reject calls
while open (the caller must then hold or drop the record); this one needs a failure
*rate* over a window and callers that wait, which is a few dozen lines on one event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


@dataclass(frozen=True)
class BreakerSettings:
    failure_rate: float = 0.5
    window: int = 100
    min_calls: int = 20
    open_seconds: float = 2.0  # first wait before a probe; doubles after each failed probe
    max_open_seconds: float = 120.0  # open this long without recovering: the run fails

    def __post_init__(self):
        if not 0 < self.failure_rate <= 1:
            raise ValueError("failure_rate must be in (0, 1]")
        if self.min_calls < 1 or self.window < self.min_calls:
            raise ValueError("need 1 <= min_calls <= window")
        if self.open_seconds <= 0 or self.max_open_seconds < self.open_seconds:
            raise ValueError("need 0 < open_seconds <= max_open_seconds")


class BreakerGaveUp(RuntimeError):
    pass


class CircuitBreaker:
    def __init__(self, settings: BreakerSettings, clock=time.monotonic):
        self.settings = settings
        self._clock = clock
        self.state = CLOSED
        self.openings = 0
        self.probes = 0
        self._outcomes: deque[bool] = deque(maxlen=settings.window)  # True: a failure
        self._failures = 0
        self._opened_at = 0.0  # when this outage began (the first opening since closed)
        self._probe_at = 0.0
        self._wait = settings.open_seconds
        self._changed = asyncio.Event()
        self.last_failure = ""
        self.gave_up: BreakerGaveUp | None = None

    async def admit(self) -> bool:
        """Wait until a request may go; True when it is the half-open probe. Raises BreakerGaveUp."""
        while True:
            if self.state == CLOSED:
                return False
            if self.gave_up is not None:
                raise self.gave_up
            now = self._clock()
            if self.state == OPEN:
                give_up_at = self._opened_at + self.settings.max_open_seconds
                if now >= give_up_at:
                    self.gave_up = BreakerGaveUp(self._give_up_message(now))
                    self._signal()
                    raise self.gave_up
                if now >= self._probe_at:
                    self.state = HALF_OPEN
                    self.probes += 1
                    return True
                timeout = min(self._probe_at, give_up_at) - now
            else:
                timeout = None  # half-open: the probe's outcome decides
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def record(self, failed: bool, probe: bool = False, what: str = "") -> None:
        if failed and what:
            self.last_failure = what
        if probe:
            if failed:
                self._wait = min(self._wait * 2, self.settings.max_open_seconds)
                self._open(reopen=True)
            else:
                self.state = CLOSED
                self._outcomes.clear()
                self._failures = 0
                self._wait = self.settings.open_seconds
                self._signal()
            return
        if self.state != CLOSED:
            return  # answers to requests sent before it opened say nothing new
        if len(self._outcomes) == self._outcomes.maxlen:
            self._failures -= self._outcomes[0]
        self._outcomes.append(failed)
        self._failures += failed
        n = len(self._outcomes)
        if n >= self.settings.min_calls and self._failures >= self.settings.failure_rate * n:
            self._open(reopen=False)

    def _open(self, reopen: bool) -> None:
        now = self._clock()
        if not reopen:
            self.openings += 1
            self._opened_at = now
        self.state = OPEN
        self._probe_at = now + self._wait
        self._signal()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def failure_share(self) -> float:
        return self._failures / len(self._outcomes) if self._outcomes else 0.0

    def _give_up_message(self, now: float) -> str:
        return (
            f"the API kept failing: the circuit breaker opened at a failure rate of at least "
            f"{self.settings.failure_rate:.0%} and no probe succeeded in {now - self._opened_at:.1f}s "
            f"(max_open_seconds {self.settings.max_open_seconds:g}; {self.probes} probes, "
            f"{self.openings} openings); last failure: {self.last_failure or 'unknown'}"
        )

"""Send times at a fixed rate (GCRA), for one process or for every process sharing an API.

GCRA (the generic cell rate algorithm) keeps one number, the theoretical arrival time
(TAT) of the next request. Reserving n sends at time `now` gives the times
`max(now, TAT' + i*T - tau)`, i < n, where T = 1/rate, tau = (burst - 1) * T and
TAT' = max(TAT, now); TAT becomes TAT' + n*T. Idle time is not saved up beyond the burst,
so a client that was idle cannot then send faster than the rate for long.

One pacer task per limiter hands send times to waiting workers in order (a worker awaits
a future; no herd of sleepers re-checking the clock). What it guarantees is about the
moments requests are released, which is what a server counting per second sees:

- in-process: each time is reserved when the previous one is released, so a late wake-up
  delays the schedule instead of bunching it, and any 1-second window holds at most
  rate' + burst releases (rate' the scheduled rate);
- Redis: a process reserves a block of times (5 ms of the rate) per round trip, when it
  has used up the last; a time that has passed by more than `max_lag` before the pacer could release it
  (a busy loop, a stalled process) is dropped, never used late, so the processes together
  release at most rate' * (1 + max_lag) + burst in any window.

Choosing the numbers (defaults at 5,000/s): the schedule runs `headroom` (2%) under the
limit, 4,900/s. The burst is 10 ms of it (49), and at most headroom * rate / 2: it is the
pacer's allowance for waking late. asyncio timers are millisecond-grained, and the event
loop stops now and then (a young-generation garbage collection, a thread holding the GIL
for a Parquet conversion: a few to 15 ms on a loaded 2-core machine, less since the reader
and writer threads pause between pieces of work, gil.py); a time the pacer could not release
within the burst is forfeited. A 5-ms burst forfeited 3-4% of the
schedule at 5,000/s, and 6-8% before run.py kept the collector's long pauses off the loop.
`max_lag` is 5 ms. Worst case in-process 4,900 + 49 = 4,949 releases in a
window, which leaves 51 (10 ms) for arrival jitter on the network and in the server
before its count reaches 5,000; through Redis 4,900 * 1.005 + 49 = 4,973, which leaves 27
(5 ms). A larger burst must fit in the headroom: burst <= headroom * rate / 2.

Why its own code and not a library:
- aiolimiter holds its bucket in one process; the issue needs one budget across runs.
- aiolimiter's `AsyncLimiter(rate, 1)` starts full and refills continuously, so a
  1-second window may see twice the rate; a server counting per second throttles that.
- Redis-backed limiters (the `limits` package and the like) answer "may I send now?" with
  one round trip per request (thousands a second, and polling when the answer is no);
  here one round trip reserves a block, with the same arithmetic in both backends
  (`RESERVE_LUA` is the formula above on Redis's clock).
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

# KEYS[1]: the TAT; ARGV: T (seconds per send), n (sends). Returns, as a string (Redis turns
# Lua numbers into integers), TAT' - now: how far in the future the block's first time is
# before the burst allowance. Redis's clock is the one timeline of every process; the key
# expires a minute after its schedule ends.
RESERVE_LUA = """
local interval = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + n * interval
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 60000)
return string.format('%.6f', tat - now)
"""


@dataclass(frozen=True)
class RateSettings:
    rate: float  # the API's limit, requests per 1-second window
    burst: int | None = None  # None: 10 ms of the scheduled rate, at most headroom * rate / 2 (at least 1)
    headroom: float = 0.02  # share of `rate` left unused: burst, lag and arrival jitter
    max_lag: float = 0.005  # seconds a reserved time may pass before it is dropped (Redis)

    def __post_init__(self):
        if self.rate <= 0:
            raise ValueError("the rate must be positive")
        if not 0 <= self.headroom < 1:
            raise ValueError("headroom must be in [0, 1)")
        if self.burst is not None and self.burst < 1:
            raise ValueError("the burst must be at least 1")
        if self.burst is not None and self.burst > 1 and self.burst > self.headroom * self.rate / 2:
            raise ValueError(
                f"burst {self.burst} could take a 1-second window over the rate of {self.rate:g}: "
                f"keep it at most headroom * rate / 2 = {self.headroom * self.rate / 2:g}, or raise headroom"
            )

    @property
    def schedule_rate(self) -> float:
        return self.rate * (1 - self.headroom)

    @property
    def interval(self) -> float:
        return 1.0 / self.schedule_rate

    @property
    def effective_burst(self) -> int:
        if self.burst is not None:
            return self.burst
        return max(1, int(min(self.schedule_rate * 0.01, self.headroom * self.rate / 2)))

    @property
    def tau(self) -> float:
        return (self.effective_burst - 1) * self.interval


class Limiter(ABC):
    """`await acquire()` returns when this process may send its next request."""

    def __init__(self, settings: RateSettings, block: int):
        self.settings = settings
        self.block = max(1, block)
        self.dropped = 0  # reserved times passed over because they could not be used in time
        self.reservations = 0
        self._waiters: deque[asyncio.Future] = deque()
        self._times: deque[float] = deque()  # reserved, not yet released (monotonic seconds)
        self._wake: asyncio.Event | None = None
        self._pacer: asyncio.Task | None = None
        self._error: BaseException | None = None
        self.drop_late = True

    async def acquire(self) -> None:
        if self._error is not None:
            raise self._error
        if self._pacer is None:
            self._wake = asyncio.Event()
            self._pacer = asyncio.create_task(self._pace())
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._wake.set()
        await future

    async def _pace(self) -> None:
        waiters, times = self._waiters, self._times
        max_lag = self.settings.max_lag
        # The loop's timers are millisecond-grained: a shorter sleep ends at the loop's next
        # iteration, a wake-up (and a loop iteration) per send at thousands a second. Sleeping
        # at least 1 ms releases several sends per wake-up, up to 1 ms late: inside the burst,
        # so nothing is forfeited (and inside max_lag). A burst under 1 ms keeps exact sleeps.
        min_pause = min(0.001, self.settings.tau)
        try:
            while True:
                while waiters and waiters[0].done():  # cancelled waiters need no time
                    waiters.popleft()
                if not waiters:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if len(times) < self.block:
                    await self._reserve_ahead(len(waiters))  # cancelled waiters get no times
                if not times:
                    continue
                now = time.monotonic()
                while self.drop_late and times and now - times[0] > max_lag:
                    times.popleft()
                    self.dropped += 1
                if not times:
                    continue
                if times[0] > now:
                    await asyncio.sleep(max(times[0] - now, min_pause))
                    continue
                while times and times[0] <= now and waiters:
                    future = waiters.popleft()
                    if not future.done():
                        times.popleft()
                        future.set_result(None)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the limiter cannot go on (Redis is gone): every waiter hears
            self._error = exc
            while waiters:
                future = waiters.popleft()
                if not future.done():
                    future.set_exception(exc)

    @abstractmethod
    async def _reserve_ahead(self, wanted: int) -> None:
        """Reserve more times when the ones held run low (in this process, or on Redis)."""

    async def close(self) -> None:
        if self._pacer is not None:
            self._pacer.cancel()
            await asyncio.gather(self._pacer, return_exceptions=True)
        self._pacer = None

    @abstractmethod
    def describe(self) -> str:
        """The limiter as the run's metadata shows it (no secrets)."""


class LocalLimiter(Limiter):
    """The schedule in this process only (no Redis configured): times are reserved at the
    moment they are released, so none is ever late."""

    def __init__(self, settings: RateSettings):
        super().__init__(settings, block=1)
        self.drop_late = False  # its one time is reserved at release: lateness compresses nothing
        self._tat = 0.0

    async def _reserve_ahead(self, wanted: int) -> None:
        # one time, reserved when the previous one was released: GCRA at the moment of sending
        s = self.settings
        now = time.monotonic()
        tat = self._tat if self._tat > now else now
        due = tat - s.tau
        self._times.append(due if due > now else now)
        self._tat = tat + s.interval
        self.reservations += 1

    def describe(self) -> str:
        s = self.settings
        return f"in-process GCRA, {s.schedule_rate:,.0f}/s scheduled of {s.rate:,.0f}/s, burst {s.effective_burst}"


class RedisLimiter(Limiter):
    """The schedule on Redis: every process using the same key shares one budget."""

    def __init__(self, settings: RateSettings, redis_url: str, key: str, block: int | None = None):
        super().__init__(settings, block or max(1, round(settings.schedule_rate * 0.005)))
        import redis.asyncio as redis

        self._url, self.key = redis_url, key
        self._client = redis.Redis.from_url(redis_url)
        self._script = self._client.register_script(RESERVE_LUA)

    async def _reserve_ahead(self, wanted: int) -> None:
        # Just in time: a block is reserved when the last one is used up, so a stall can make
        # at most one block stale. The round trip costs no throughput: the burst allowance
        # lets the new block's first times catch up with it.
        if not self._times:
            await self._reserve()

    async def _reserve(self) -> None:
        s, n = self.settings, self.block
        try:
            delay = float(await self._script(keys=[self.key], args=[repr(s.interval), n]))
        except Exception as exc:  # the URL may hold a password: name it without
            raise LimiterUnavailable(
                f"the rate limiter's Redis at {redacted_url(self._url)} failed: {type(exc).__name__}: {_scrub(str(exc), self._url)}"
            ) from None
        replied = time.monotonic()  # a little after Redis's now: later, never earlier
        for i in range(n):
            offset = delay + i * s.interval - s.tau
            self._times.append(replied + (offset if offset > 0 else 0.0))
        self.reservations += 1

    async def check(self) -> None:
        """Fail early, with a clear message, when Redis cannot be reached."""
        try:
            await self._client.ping()
        except Exception as exc:
            raise LimiterUnavailable(f"the rate limiter's Redis at {redacted_url(self._url)} is unreachable: {type(exc).__name__}") from None

    async def close(self) -> None:
        await super().close()
        await self._client.aclose()

    def describe(self) -> str:
        s = self.settings
        return (
            f"Redis GCRA at {redacted_url(self._url)} key {self.key!r}, {s.schedule_rate:,.0f}/s scheduled of "
            f"{s.rate:,.0f}/s, burst {s.effective_burst}, {self.block} sends per reservation"
        )


class LimiterUnavailable(RuntimeError):
    pass


def redacted_url(url: str) -> str:
    """The URL without its password (redis://user:secret@host → redis://user:***@host)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _scrub(text: str, url: str) -> str:
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text

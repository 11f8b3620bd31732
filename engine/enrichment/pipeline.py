"""Chunks of records through the API with bounded concurrency, on one event loop.

    reader thread ──chunks──► ready queue ──► N workers ──► results per chunk ──► writer thread
                     ▲                        (breaker, limiter, request, answer)        │
                     └──────── at most `max_open_chunks` chunks in memory ◄──────────────┘

- A chunk's records become items (one record, or a batch of them) in a thread, so that
  parsing never stalls the loop that paces the sends.
- `concurrency` workers take items: retries first, then new ones. Each waits for the
  breaker, then for its send time from the limiter, sends, and files the answer.
- A record that failed in a retriable way is put back on the queue when its backoff is
  over; meanwhile its worker serves other records. Attempts count only requests sent.
- When a chunk's last record is resolved (enriched or dead letter), the chunk is written
  on the writer thread, and only then does the reader start another: memory holds at most
  `max_open_chunks` chunks, and a chunk held up by one slow retry does not stop the others.
- When the breaker gives up (or anything else fails), workers stop taking items, chunks
  already resolved are still written, and the error is raised: unresolved records stay
  unwritten for the next run.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from engine.enrichment.breaker import CLOSED, CircuitBreaker
from engine.enrichment.client import ApiClient, Answer
from engine.enrichment.gil import PIECE_ROWS, Pause, no_pause
from engine.enrichment.jsoncodec import dumps_text, loads
from engine.enrichment.limiter import Limiter
from engine.enrichment.output import DeadLetter
from engine.enrichment.readers import Chunk
from engine.enrichment.retry import RetrySettings, backoff, retriable_status, retry_after_seconds
from engine.enrichment.stats import RequestStats
from engine.enrichment.template import RecordError, Request, RequestTemplate, ResponseError

_ERROR_CHARS = 500  # of an answer's body kept in a dead letter's error


class Item:
    """One request's worth of records: a row of a chunk, or a batch of rows. Its request is
    built when it is sent (a few microseconds): bodies of a whole chunk, built ahead, would
    hold several kilobytes each for as long as the chunk waits."""

    __slots__ = ("work", "rows", "attempts")

    def __init__(self, work: "ChunkWork", rows: int | list[int]):
        self.work, self.rows, self.attempts = work, rows, 0

    def request(self, template: RequestTemplate) -> Request:
        records = self.work.chunk.records
        if isinstance(self.rows, int):
            return template.request(records[self.rows])
        return template.batch_request([template.body_of(records[row]) for row in self.rows])


@dataclass
class ChunkWork:
    chunk: Chunk
    results: list[dict[str, Any] | None]
    dead: list[DeadLetter] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    pending: int = 0  # records not resolved yet

    @classmethod
    def build(cls, chunk: Chunk, template: RequestTemplate, id_field: str, pause: Pause = no_pause) -> "ChunkWork":
        """The chunk's items; records the template cannot use are dead letters already.
        `pause()` every PIECE_ROWS records (on the reader thread, gil.py)."""
        records = chunk.records_in_pieces(pause)
        work = cls(chunk, [None] * len(records))
        needed = template.fields_used()
        batch_rows: list[int] = []
        for i, record in enumerate(records):
            if i and i % PIECE_ROWS == 0:
                pause()
            value = record.get(id_field)
            if value is None or value == "":
                work.dead.append(DeadLetter(i, "invalid_record", None, f"row {chunk.first_row + i}: no value for the ID field {id_field!r}", 0))
                continue
            if needed and not needed <= record.keys():
                try:
                    template.request(record)  # raises RecordError, saying which field and where
                except RecordError as exc:
                    work.dead.append(DeadLetter(i, "invalid_record", None, f"row {chunk.first_row + i}: {exc}", 0))
                    continue
            if template.batched:
                batch_rows.append(i)
                if len(batch_rows) == template.batch_size:
                    work.items.append(Item(work, batch_rows))
                    batch_rows = []
            else:
                work.items.append(Item(work, i))
        if batch_rows:
            work.items.append(Item(work, batch_rows))
        work.pending = len(records) - len(work.dead)
        return work


class Pipeline:
    def __init__(
        self,
        client: ApiClient,
        template: RequestTemplate,
        limiter: Limiter | None,
        breaker: CircuitBreaker,
        retry: RetrySettings,
        concurrency: int,
        write_chunk: Callable[[ChunkWork], Any],
        *,
        max_open_chunks: int = 3,
        seed: int | None = None,
    ):
        self.client, self.template, self.limiter, self.breaker = client, template, limiter, breaker
        self.retry = retry
        self.concurrency = concurrency
        self._write_chunk = write_chunk
        self.max_open_chunks = max_open_chunks
        self.stats = RequestStats()
        self.records_read = 0
        self.chunks_read = 0
        self.records_resolved = 0
        self.retries_waiting = 0
        self._rng = random.Random(seed)
        self._ready: deque[Item] = deque()
        self._wake = asyncio.Event()
        self._outstanding = 0  # items queued, in flight or waiting to retry
        self._feeding = True
        self._failure: BaseException | None = None
        self._writes: list[asyncio.Future] = []
        self._open_chunks: asyncio.Semaphore | None = None
        self._reader_pool = ThreadPoolExecutor(1, thread_name_prefix="enrichment-read")
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="enrichment-write")

    # -- the run ------------------------------------------------------------------------------

    async def run(self, chunks: Iterator[ChunkWork | int]) -> None:
        """Process every chunk `chunks` yields (a ChunkWork to send, or an int: that many
        records skipped because an earlier run wrote them). Raises the first failure."""
        self._open_chunks = asyncio.Semaphore(self.max_open_chunks)
        feeder = asyncio.create_task(self._feed(chunks))
        workers = [asyncio.create_task(self._worker()) for _ in range(self.concurrency)]
        try:
            await asyncio.gather(*workers)
            if self._failure is None:
                await feeder
        finally:
            if not feeder.done():
                feeder.cancel()
                await asyncio.gather(feeder, return_exceptions=True)
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            # chunks resolved before a failure are still written: a retry skips them
            results = await asyncio.gather(*self._writes, return_exceptions=True)
            self._reader_pool.shutdown(wait=True, cancel_futures=True)
            self._writer_pool.shutdown(wait=True)
        if self._failure is not None:
            raise self._failure
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self._wake.set()

    async def _feed(self, chunks: Iterator[ChunkWork | int]) -> None:
        loop = asyncio.get_running_loop()
        done = object()
        try:
            while True:
                await self._open_chunks.acquire()
                work = await loop.run_in_executor(self._reader_pool, next, chunks, done)
                while isinstance(work, int):  # chunks written by an earlier run
                    self.records_read += work
                    self.records_resolved += work
                    work = await loop.run_in_executor(self._reader_pool, next, chunks, done)
                if work is done:
                    self._open_chunks.release()
                    break
                self.chunks_read += 1
                self.records_read += work.chunk.rows
                self.records_resolved += len(work.dead)
                if work.pending == 0:
                    self._chunk_resolved(work)
                    continue
                self._outstanding += len(work.items)
                self._ready.extend(work.items)
                work.items = []  # the queue holds them now
                self._wake.set()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a malformed input, a failing store: stop the run
            self._fail(exc)
        finally:
            self._feeding = False
            self._wake.set()

    async def _take(self) -> Item | None:
        while True:
            if self._failure is not None:
                return None
            if self._ready:
                return self._ready.popleft()
            if not self._feeding and self._outstanding == 0:
                self._wake.set()  # let every other worker see the end too
                return None
            self._wake.clear()
            await self._wake.wait()

    async def _worker(self) -> None:
        breaker, limiter, client, stats, template = self.breaker, self.limiter, self.client, self.stats, self.template
        ready, clock = self._ready, time.monotonic
        try:
            while True:
                # the common case without a coroutine call: work queued, breaker closed
                item = ready.popleft() if ready and self._failure is None else await self._take()
                if item is None:
                    return
                while True:
                    probe = False if breaker.state == CLOSED else await breaker.admit()
                    if limiter is not None:
                        await limiter.acquire()
                    if probe or breaker.state == CLOSED:
                        break  # else it opened while this worker waited for its send time
                if self._failure is not None:
                    return
                sent = clock()
                if stats.first_send is None:
                    stats.first_send = sent
                item.attempts += 1
                stats.requests += 1
                stats.records_sent += 1 if isinstance(item.rows, int) else len(item.rows)
                answer = await client.send(item.request(template))
                now = clock()
                stats.last_answer = now
                stats.latency.add(now - sent)
                self._file(item, answer, probe)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # BreakerGaveUp, a limiter that cannot reach Redis
            self._fail(exc)

    # -- answers ------------------------------------------------------------------------------

    def _file(self, item: Item, answer: Answer, probe: bool) -> None:
        status = answer.status
        self.stats.statuses[status if status is not None else answer.cause] += 1
        if status is not None and 200 <= status < 300:
            self.breaker.record(False, probe)
            self._enriched(item, answer.body)
        elif status is not None and not retriable_status(status):
            self.breaker.record(False, probe)  # the record's problem, not the API's
            self._dead(item, f"http_{status}", status, self._body_text(answer.body))
        else:
            what = f"{answer.cause}: {answer.error}" if status is None else f"HTTP {status}: {self._body_text(answer.body)[:120]}"
            self.breaker.record(True, probe, what)
            if item.attempts >= self.retry.max_attempts:
                error = answer.error if status is None else self._body_text(answer.body)
                self._dead(item, "retries_exhausted", status, f"{answer.cause}: {error}" if error else answer.cause)
                return
            self.stats.retries[answer.cause] += 1
            delay = backoff(item.attempts, retry_after_seconds(answer.retry_after), self.retry, self._rng)
            self.retries_waiting += 1
            asyncio.get_running_loop().call_later(delay, self._requeue, item)

    def _requeue(self, item: Item) -> None:
        self.retries_waiting -= 1
        self._ready.appendleft(item)  # retries go first: they hold their chunk open
        self._wake.set()

    def _enriched(self, item: Item, body: bytes) -> None:
        template, results = self.template, item.work.results
        try:
            payload = loads(body)
            if isinstance(item.rows, int):
                results[item.rows] = template.fields_of(payload)
                self._resolved(item, 1)
                return
            answers = template.batch_answers(payload, len(item.rows))
        except (ValueError, ResponseError) as exc:  # JSONDecodeError is a ValueError
            self._dead(item, "bad_response", 200, f"{exc}: {self._body_text(body)[:200]}")
            return
        for row, answer in zip(item.rows, answers):
            if isinstance(answer, dict) and answer.get("error") is not None:
                self._dead_row(item, row, "item_error", 200, self.client.scrub(dumps_text(answer["error"])[:_ERROR_CHARS]))
                continue
            try:
                results[row] = template.fields_of(answer)
            except ResponseError as exc:
                self._dead_row(item, row, "bad_response", 200, str(exc))
        self._resolved(item, len(item.rows))

    def _dead(self, item: Item, reason: str, status: int | None, error: str) -> None:
        rows = [item.rows] if isinstance(item.rows, int) else item.rows
        for row in rows:
            self._dead_row(item, row, reason, status, error)
        self._resolved(item, len(rows))

    def _dead_row(self, item: Item, row: int, reason: str, status: int | None, error: str) -> None:
        item.work.dead.append(DeadLetter(row, reason, status, error, item.attempts))
        self.stats.dead_letters[reason] += 1

    def _resolved(self, item: Item, records: int) -> None:
        work = item.work
        work.pending -= records
        self.records_resolved += records
        self._outstanding -= 1
        if work.pending == 0:
            self._chunk_resolved(work)
        if self._outstanding == 0 and not self._feeding:
            self._wake.set()

    def _chunk_resolved(self, work: ChunkWork) -> None:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._writer_pool, self._write_chunk, work)
        self._writes.append(future)

        def written(f: asyncio.Future) -> None:
            self._open_chunks.release()  # the reader may read the next chunk
            if not f.cancelled() and f.exception() is not None:
                self._fail(f.exception())

        future.add_done_callback(written)

    def _body_text(self, body: bytes) -> str:
        return self.client.scrub(body[:_ERROR_CHARS].decode("utf-8", "replace"))

    # -- what the progress line shows -----------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        s = self.stats
        return {
            "records_read": self.records_read,
            "records_resolved": self.records_resolved,
            "requests": s.requests,
            "retries": sum(s.retries.values()),
            "retries_by_cause": dict(s.retries),
            "dead_letters": sum(s.dead_letters.values()),
            "retries_waiting": self.retries_waiting,
            "breaker": self.breaker.state,
        }

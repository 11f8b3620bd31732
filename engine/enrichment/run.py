"""One input file end to end: read in chunks, skip chunks already written, send the rest,
write each chunk, and account for every record.

`enrich_file` is what the Dagster asset, the CLI (`python -m engine.enrichment.cli`) and
the benchmark call. It returns a `FileResult` (the account and the request statistics),
or raises `EnrichmentFailed` carrying the same account when the run cannot finish (the
breaker gave up, Redis is unreachable, the input is malformed): in both cases
`enriched + dead letters + unfinished = records`, with `records` counted to the end of the
file (a failed run reads the rest of the file, without sending it, to count it).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from engine.enrichment.breaker import CircuitBreaker
from engine.enrichment.client import ApiClient, ApiSettings
from engine.enrichment.gil import no_pause, pause_for
from engine.enrichment.limiter import Limiter, LocalLimiter, RedisLimiter
from engine.enrichment.output import (
    FileAccount,
    OutputLayout,
    account,
    fingerprint,
    read_manifest,
    remove_chunks_from,
    warm_up,
    write_chunk,
    write_summary,
)
from engine.enrichment.pipeline import ChunkWork, Pipeline
from engine.enrichment.readers import read_chunks
from engine.enrichment.stats import RequestStats
from engine.enrichment.template import RequestTemplate
from engine.measure import Progress

log = logging.getLogger(__name__)

_YOUNG_COLLECTION = 20_000  # allocations between collections of the youngest generation (see run_async)
_runs_lock = threading.Lock()
_runs = 0  # runs under _interpreter_for_the_loop now
_saved = (sys.getswitchinterval(), gc.get_threshold())  # what the last of them to end puts back


@dataclass(frozen=True)
class FileSettings:
    id_field: str = "id"
    chunk_rows: int = 10_000
    max_open_chunks: int = 3
    keep_input_fields: bool = True
    progress_interval: float = 5.0


@dataclass
class FileResult:
    account: FileAccount
    stats: RequestStats
    seconds: float
    limiter: str = ""
    cpu_seconds: float = 0.0  # of the whole process (its threads too) while the file ran
    extra: dict[str, Any] = field(default_factory=dict)


class EnrichmentFailed(RuntimeError):
    def __init__(self, message: str, result: FileResult):
        super().__init__(message)
        self.result = result


def run_async(coroutine):
    """Run on uvloop where it is installed (fewer microseconds per request), asyncio otherwise,
    with the interpreter set for a loop that must wake on time (`_interpreter_for_the_loop`)."""
    with _interpreter_for_the_loop():
        try:
            import uvloop
        except ImportError:
            return asyncio.run(coroutine)
        return uvloop.run(coroutine)


@contextlib.contextmanager
def _interpreter_for_the_loop() -> Iterator[None]:
    """While runs last (several may, in threads; the first sets, the last puts back):

    - a thread holding the GIL (the chunk reader, the Parquet writer) gives it back after
      1 ms instead of Python's 5, so the loop that paces the sends wakes on time;
    - the garbage collector leaves alone what existed before the run (`gc.freeze`: the
      imports, Dagster's included, are most of the heap; a full collection walked them all,
      up to 160 ms with the loop stopped) and collects the youngest objects every
      `_YOUNG_COLLECTION` allocations instead of 700. A request's objects live for its
      round trip: at 700 nearly all of them were still alive at a collection and were
      promoted, to be walked again by the older generations' collections.

    Both are process-wide, hence put back afterwards; the unfreeze also gives back to the
    collector what the reader's and writer's pauses froze during the run (gil.py)."""
    global _runs, _saved
    with _runs_lock:
        _runs += 1
        if _runs == 1:
            _saved = sys.getswitchinterval(), gc.get_threshold()
            sys.setswitchinterval(min(_saved[0], 0.001))
            gc.freeze()
            gc.set_threshold(max(_saved[1][0], _YOUNG_COLLECTION), *_saved[1][1:])
    try:
        yield
    finally:
        with _runs_lock:
            _runs -= 1
            if _runs == 0:
                gc.set_threshold(*_saved[1])
                gc.unfreeze()
                sys.setswitchinterval(_saved[0])


def make_limiter(api: ApiSettings) -> Limiter | None:
    if api.rate is None:
        return None
    if api.redis_url:
        return RedisLimiter(api.rate, api.redis_url, api.resolved_limiter_key())
    return LocalLimiter(api.rate)


def enrich_file(*args: Any, **kwargs: Any) -> FileResult:
    """`enrich_file_async`, with the same arguments, run to completion by `run_async`."""
    return run_async(enrich_file_async(*args, **kwargs))


async def enrich_file_async(
    store,
    input_key: str,
    fmt: str,
    output_prefix: str,
    api: ApiSettings,
    template: RequestTemplate,
    settings: FileSettings = FileSettings(),
    *,
    logger: logging.Logger | Any = log,
    seed: int | None = None,
    only_chunks: Callable[[int], bool] | None = None,
    summarize: bool = True,
) -> FileResult:
    """Enrich the file's chunks (those `only_chunks` accepts, when it is given: one worker's
    share, engine/enrichment/spark_stage.py) and, with `summarize`, make the file's account
    and summary (`finish_file`); without it the account covers what is written so far."""
    started, cpu_started = time.perf_counter(), time.process_time()
    info = store.stat(input_key)
    if info is None:
        raise FileNotFoundError(f"no input {store.uri(input_key)}")
    layout = OutputLayout(output_prefix.rstrip("/"))
    print_fingerprint = file_fingerprint(info, fmt, settings, template)
    columns = template.columns()
    name = store.uri(input_key)
    limiter = make_limiter(api)
    breaker = CircuitBreaker(api.breaker)
    chunk_count = 0
    records = 0
    skipped = {"chunks": 0, "records": 0}

    # a limited run's reader and writer threads work in pieces and pause between them, so the
    # loop that paces the sends gets the GIL when it wakes (gil.py); an unlimited one does not
    pause = pause_for() if limiter is not None else no_pause

    with store.open_read(input_key) as stream:
        reader = read_chunks(stream, fmt, name, settings.chunk_rows, pause)
        reader_chunks = iter(reader)

        def chunks() -> Iterator[ChunkWork | int]:
            nonlocal chunk_count, records
            for chunk in reader_chunks:
                chunk_count += 1
                records += chunk.rows
                if only_chunks is not None and not only_chunks(chunk.index):
                    continue  # another worker's: counted, not sent
                manifest = read_manifest(store, layout, chunk.index)
                if manifest is not None and manifest.fingerprint == print_fingerprint and manifest.rows == chunk.rows:
                    skipped["chunks"] += 1
                    skipped["records"] += chunk.rows
                    yield chunk.rows
                    continue
                yield ChunkWork.build(chunk, template, settings.id_field, pause)

        def write(work: ChunkWork):
            return write_chunk(
                store, layout, work.chunk, work.results, work.dead, settings.id_field, columns, print_fingerprint,
                settings.keep_input_fields, pause,
            )

        client = ApiClient(api, template.method)
        client.add_headers(template.headers)
        pipeline = Pipeline(
            client, template, limiter, breaker, api.retry, api.concurrency, write,
            max_open_chunks=settings.max_open_chunks, seed=seed,
        )
        progress = _progress(logger, name, info.size, settings.progress_interval, pipeline, reader)
        failure: BaseException | None = None
        try:
            if isinstance(limiter, RedisLimiter):
                await limiter.check()
            # the process's first Parquet write sets up pyarrow (300 ms of CPU): before the
            # first send, not on the writer thread while the loop keeps the schedule
            await asyncio.get_running_loop().run_in_executor(None, warm_up)
            async with client:
                ticker = asyncio.create_task(_tick(progress, settings.progress_interval))
                try:
                    await pipeline.run(chunks())
                finally:
                    ticker.cancel()
        except Exception as exc:  # noqa: BLE001 - reported with the account below
            failure = exc
        finally:
            if limiter is not None:
                await limiter.close()
        progress()

        if failure is not None:
            # count the rest of the file (no requests) so that the account covers every record;
            # a malformed input stops the count where it stops the reader
            reader.pause = no_pause  # nothing is being sent: read at full speed
            with contextlib.suppress(Exception):
                for chunk in reader_chunks:
                    chunk_count += 1
                    records += chunk.rows

    stats = pipeline.stats
    stats.limiter_dropped = limiter.dropped if limiter is not None else 0
    stats.breaker_openings, stats.breaker_probes = breaker.openings, breaker.probes
    result_account = account(store, layout, input_key, records, chunk_count, print_fingerprint)
    result_account.chunks_resumed = skipped["chunks"]
    result_account.records_resumed = skipped["records"]
    result = FileResult(
        result_account, stats, time.perf_counter() - started, limiter.describe() if limiter else "no limit",
        cpu_seconds=time.process_time() - cpu_started,
    )
    if failure is not None:
        summary = result_account.as_dict()
        message = (
            f"{name}: {failure} — account: {summary['enriched']:,} enriched + {summary['dead_letters']:,} dead letters "
            f"+ {summary['unfinished']:,} unfinished (not written; a retry sends them) = {summary['records']:,} records"
        )
        raise EnrichmentFailed(message, result) from failure
    if not summarize:
        return result
    return _summarized(store, layout, name, result, chunk_count)


def file_fingerprint(info, fmt: str, settings: FileSettings, template: RequestTemplate) -> str:
    """What a chunk's manifest must match to count as written for this input and these
    settings (a changed file or template re-sends everything)."""
    return fingerprint(
        etag=info.etag,
        size=info.size,
        format=fmt,
        chunk_rows=settings.chunk_rows,
        id_field=settings.id_field,
        keep_input_fields=settings.keep_input_fields,
        template={k: v for k, v in template.__dict__.items() if not k.startswith("_")},
    )


def finish_file(
    store, input_key: str, fmt: str, output_prefix: str, template: RequestTemplate, settings: FileSettings,
    records: int, chunks: int, stats: RequestStats, *, seconds: float, limiter: str,
) -> FileResult:
    """The file's account and summary once every worker has written its chunks (Spark's
    driver, engine/enrichment/spark_stage.py); EnrichmentFailed when they do not cover it."""
    info = store.stat(input_key)
    if info is None:
        raise FileNotFoundError(f"no input {store.uri(input_key)}")
    layout = OutputLayout(output_prefix.rstrip("/"))
    result_account = account(store, layout, input_key, records, chunks, file_fingerprint(info, fmt, settings, template))
    result = FileResult(result_account, stats, seconds, limiter)
    return _summarized(store, layout, store.uri(input_key), result, chunks)


def _summarized(store, layout: OutputLayout, name: str, result: FileResult, chunk_count: int) -> FileResult:
    """Check the account, drop results of chunks past the file's end, write the summary."""
    result_account, stats = result.account, result.stats
    removed = remove_chunks_from(store, layout, chunk_count)
    if not result_account.complete or not result_account.balanced:
        raise EnrichmentFailed(f"{name}: the written chunks do not account for every record: {result_account.as_dict()}", result)
    write_summary(
        store, layout, result_account,
        requests=stats.requests, requests_per_second=round(stats.requests_per_second, 1),
        latency_ms=stats.latency_ms(), retries_by_cause=dict(stats.retries), stale_objects_removed=removed,
    )
    return result


def _progress(logger, name: str, size: int, interval: float, pipeline: Pipeline, reader) -> Callable[[], None]:
    """A function that logs records, rate, ETA, requests/s, retries and the breaker's state."""
    suffix = _Suffix(logger, pipeline)
    progress = Progress(suffix, f"enrichment {name}", total=size, interval=0, unit="rows")

    def report() -> None:
        resolved = pipeline.records_resolved
        read = max(pipeline.records_read, 1)
        # bytes per record so far turn resolved records into a share of the file
        done = min(size, int(resolved * reader.bytes_read / read)) if reader.bytes_read else 0
        progress.update(resolved, done, force=True)

    return report


class _Suffix:
    """Progress's logger, with the request side appended to each line."""

    def __init__(self, logger, pipeline: Pipeline):
        self._logger, self._pipeline, self._last = logger, pipeline, (time.monotonic(), 0)

    def info(self, message: str) -> None:
        snap = self._pipeline.snapshot()
        now = time.monotonic()
        then, requests = self._last
        rate = (snap["requests"] - requests) / max(now - then, 1e-9)
        self._last = (now, snap["requests"])
        causes = ", ".join(f"{k} {v:,}" for k, v in sorted(snap["retries_by_cause"].items()))
        self._logger.info(
            f"{message}; {snap['requests']:,} requests, {rate:,.0f} req/s now, retries {snap['retries']:,}"
            + (f" ({causes})" if causes else "")
            + f", {snap['retries_waiting']:,} waiting to retry, dead letters {snap['dead_letters']:,}, breaker {snap['breaker']}"
        )


async def _tick(report: Callable[[], None], interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        report()

"""The S3 report sensor: a new or replaced report under the reports prefix starts one run
for the week its reportSpecification names.

Runs against a real S3 API (moto's server on a loopback port, a fresh bucket per test) and
against a local directory. Covered:

- the cursor across ticks: new reports (plain and gzip) are requested once, an unchanged
  listing requests nothing, a replaced report is requested again under its new ETag, a
  deleted object leaves the cursor;
- the week comes from reportSpecification, whatever the object is called;
- objects that are not reports are logged, not requested, not opened again, and do not
  stop a real report in the same tick;
- only the first bytes of an object are read (never the whole object); when the
  specification is not in them the name's week is used, or nothing is requested;
- a week not over yet is looked at again next tick; one before the first week is refused;
- at most MAX_OPENED_PER_TICK new objects are opened per tick, and the rest are picked up
  by later ticks, each report exactly once;
- week_in_name.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import ClassVar

import dagster as dg
import pytest

from assets.search_terms.report import REPORT_KEY_TAG
from assets.search_terms.settings import SearchTermsSettings
from engine.search_terms import report_head
from engine.search_terms.records import DATA_KEY, SPEC_KEY
from engine.search_terms.sample_report import records, specification, write_report
from local_services.s3_server import TEST_CREDENTIALS, create_bucket
from orchestration import sensors
from orchestration.sensors import search_terms_report_sensor, week_in_name
from resources.object_store import LocalDirectoryObjectStore, ObjectInfo, ObjectStore
from resources.s3_object_store import S3ObjectStore

PREFIX = SearchTermsSettings().reports_prefix  # "search_terms/reports"
W1, W2, W3 = date(2024, 1, 7), date(2024, 1, 14), date(2024, 1, 21)


# --- stores -------------------------------------------------------------------------------


class _Recording:
    """Records every read_head(key, size) and refuses open_read outside read_head: the
    sensor must never stream a whole object. (The local store's read_head opens the file
    through open_read, so that one call is let through.)"""

    heads: ClassVar[list[tuple[str, int]]] = []
    _in_head: ClassVar[bool] = False

    def read_head(self, key: str, size: int) -> bytes:
        type(self).heads.append((key, size))
        _Recording._in_head = True
        try:
            return super().read_head(key, size)
        finally:
            _Recording._in_head = False

    def open_read(self, key: str):
        if not _Recording._in_head:
            raise AssertionError(f"the sensor streamed the whole object {key}")
        return super().open_read(key)


class RecordingLocalStore(_Recording, LocalDirectoryObjectStore):
    pass


class RecordingS3Store(_Recording, S3ObjectStore):
    pass


@pytest.fixture(params=["s3", "local"])
def store(request, tmp_path) -> ObjectStore:
    _Recording.heads.clear()
    if request.param == "local":
        return RecordingLocalStore(root=str(tmp_path / "store"))
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"sensor-{uuid.uuid4().hex[:16]}"
    create_bucket(endpoint, bucket)
    return RecordingS3Store(bucket=bucket, endpoint_url=endpoint, **TEST_CREDENTIALS)


# --- helpers ------------------------------------------------------------------------------


def put(store: ObjectStore, key: str, data: bytes) -> str:
    """Publish data under key; return its ETag."""
    with store.open_write(key) as f:
        f.write(data)
    return store.stat(key).etag


def report_bytes(week: date, *, gz: bool = False, terms: int = 5, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    write_report(buf, week, terms=terms, seed=seed)
    data = buf.getvalue()
    return gzip.compress(data, mtime=0) if gz else data


def put_report(store: ObjectStore, key: str, week: date, *, gz: bool = False, terms: int = 5, seed: int = 0) -> str:
    """A real report for the week under key (relative to the reports prefix); its ETag."""
    return put(store, f"{PREFIX}/{key}", report_bytes(week, gz=gz, terms=terms, seed=seed))


def spec_after_data(week: date, terms: int) -> bytes:
    """A valid report whose data array comes before its reportSpecification."""
    rows = ",\n".join(json.dumps(r) for r in records(week, terms, seed=3))
    return f'{{"{DATA_KEY}":[\n{rows}\n],"{SPEC_KEY}":{json.dumps(specification(week))}}}\n'.encode()


class _Collect(logging.Handler):
    def __init__(self, into: list[str]):
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


def tick(store: ObjectStore, cursor: str | None = None, warned: list[str] | None = None) -> dg.SensorResult:
    """One evaluation of the sensor; its warnings are appended to `warned`. (The sensor's
    logger is Dagster's own and does not propagate to the root logger, so caplog misses it.)"""
    context = dg.build_sensor_context(
        cursor=cursor,
        instance=dg.DagsterInstance.ephemeral(),
        resources={"object_store": store, "search_terms_settings": SearchTermsSettings()},
    )
    if warned is not None:
        context.log.addHandler(_Collect(warned))
    result = search_terms_report_sensor(context)
    assert isinstance(result, dg.SensorResult)
    if result.run_requests:
        assert result.skip_reason is None
    else:
        assert result.skip_reason is not None and result.skip_reason.skip_message
    return result


def requested(result: dg.SensorResult) -> dict[str, tuple[str, str]]:
    """{report key: (partition key, run key)} of the tick's run requests, checking the tag."""
    out = {}
    for request in result.run_requests or []:
        key = request.tags[REPORT_KEY_TAG]
        assert key not in out, f"{key} requested twice in one tick"
        out[key] = (request.partition_key, request.run_key)
    return out


def expected(store: ObjectStore, key: str, week: date) -> tuple[str, str]:
    full = f"{PREFIX}/{key}"
    return week.isoformat(), f"{full}@{store.stat(full).etag}"


# --- tests --------------------------------------------------------------------------------


def test_the_cursor_requests_each_new_or_replaced_report_once(store):
    put_report(store, "2024-01-07.json", W1)
    put_report(store, "2024-01-14.json.gz", W2, gz=True)

    first = tick(store)
    assert requested(first) == {
        f"{PREFIX}/2024-01-07.json": expected(store, "2024-01-07.json", W1),
        f"{PREFIX}/2024-01-14.json.gz": expected(store, "2024-01-14.json.gz", W2),
    }

    second = tick(store, first.cursor)
    assert not second.run_requests
    assert json.loads(second.cursor) == json.loads(first.cursor)

    old_run_key = requested(first)[f"{PREFIX}/2024-01-07.json"][1]
    put_report(store, "2024-01-07.json", W1, terms=7, seed=9)  # Amazon re-publishes the week
    put_report(store, "2024-01-21.json", W3)
    third = tick(store, second.cursor)
    assert requested(third) == {
        f"{PREFIX}/2024-01-07.json": expected(store, "2024-01-07.json", W1),
        f"{PREFIX}/2024-01-21.json": expected(store, "2024-01-21.json", W3),
    }
    assert requested(third)[f"{PREFIX}/2024-01-07.json"][1] != old_run_key

    store.delete(f"{PREFIX}/2024-01-14.json.gz")
    fourth = tick(store, third.cursor)
    assert not fourth.run_requests
    assert set(json.loads(fourth.cursor)) == {f"{PREFIX}/2024-01-07.json", f"{PREFIX}/2024-01-21.json"}


def test_objects_outside_the_prefix_are_not_looked_at(store):
    put(store, "search_terms/2024-01-07/parsed.parquet", b"PAR1")
    put(store, "elsewhere/2024-01-07.json", report_bytes(W1))
    result = tick(store)
    assert not result.run_requests and json.loads(result.cursor) == {}
    assert _Recording.heads == []


def test_an_object_deleted_after_the_listing_is_skipped_and_not_remembered(store, monkeypatch):
    put_report(store, "2024-01-07.json", W1)
    gone = f"{PREFIX}/2024-01-14.json"
    listing = type(store).list

    def list_with_a_deleted_object(self, prefix):
        yield from listing(self, prefix)
        yield ObjectInfo(gone, 1234, "etag-of-a-deleted-object", datetime.now(timezone.utc))

    monkeypatch.setattr(type(store), "list", list_with_a_deleted_object)
    result = tick(store)
    assert requested(result) == {f"{PREFIX}/2024-01-07.json": expected(store, "2024-01-07.json", W1)}
    assert gone not in json.loads(result.cursor)
    assert gone in {key for key, _ in _Recording.heads}  # it was tried: the read found nothing


def test_the_week_comes_from_the_specification_not_the_name(store):
    put_report(store, "amazon-report-12345.json.gz", W2, gz=True)
    put_report(store, "2024-01-07.json", W2)  # misnamed: reports on the week of 2024-01-14
    warned: list[str] = []
    result = tick(store, warned=warned)
    assert requested(result) == {
        f"{PREFIX}/amazon-report-12345.json.gz": expected(store, "amazon-report-12345.json.gz", W2),
        f"{PREFIX}/2024-01-07.json": expected(store, "2024-01-07.json", W2),
    }
    [named_wrongly] = warned
    assert f"{PREFIX}/2024-01-07.json is named for 2024-01-07 but reports on the week of 2024-01-14" in named_wrongly


def test_objects_that_are_not_reports_are_logged_once_and_do_not_stop_the_tick(store):
    other_type = json.loads(report_bytes(W1))
    other_type[SPEC_KEY]["reportType"] = "GET_BRAND_ANALYTICS_MARKET_BASKET_REPORT"
    monthly = json.loads(report_bytes(W1))
    monthly[SPEC_KEY]["reportOptions"]["reportPeriod"] = "MONTH"
    junk = {
        "notes.txt": b"the report for January comes next week\n",
        "market-basket.json": json.dumps(other_type).encode(),
        "monthly.json": json.dumps(monthly).encode(),
        "empty.json": b"",
        "corrupt.json.gz": report_bytes(W1, gz=True)[:20] + b"\x00garbage" * 50,
        "array.json": b"[1, 2, 3]",
        "latin1.json": '{"reportSpecification": "caf\xe9"}'.encode("latin-1"),
    }
    for name, data in junk.items():
        put(store, f"{PREFIX}/{name}", data)
    put_report(store, "2024-01-07.json.gz", W1, gz=True)

    warned: list[str] = []
    first = tick(store, warned=warned)
    assert requested(first) == {f"{PREFIX}/2024-01-07.json.gz": expected(store, "2024-01-07.json.gz", W1)}
    cursor = json.loads(first.cursor)
    assert set(cursor) == {f"{PREFIX}/{name}" for name in junk} | {f"{PREFIX}/2024-01-07.json.gz"}
    assert len(warned) == len(junk)
    for name in junk:
        assert any(f"{PREFIX}/{name}: " in w and "not a Search Terms report" in w for w in warned), name

    _Recording.heads.clear()
    warned.clear()
    second = tick(store, first.cursor, warned)
    assert not second.run_requests
    assert _Recording.heads == []  # nothing is opened again
    assert warned == []


def test_only_the_first_bytes_of_a_large_report_are_read(store):
    data = report_bytes(W1, terms=12_000)  # about 9 MB
    assert len(data) > 4 * report_head.MAX_BYTES
    put(store, f"{PREFIX}/big-export.json", data)
    put(store, f"{PREFIX}/big-export.json.gz", gzip.compress(data, compresslevel=1, mtime=0))
    result = tick(store)
    assert {k: p for k, (p, _) in requested(result).items()} == {
        f"{PREFIX}/big-export.json": "2024-01-07",
        f"{PREFIX}/big-export.json.gz": "2024-01-07",
    }
    assert {key for key, _ in _Recording.heads} == set(requested(result))
    assert all(size <= report_head.FIRST_BYTES for _, size in _Recording.heads)


def test_a_specification_after_the_data_falls_back_to_the_name(store):
    data = spec_after_data(W2, terms=8_000)
    assert len(data) > 2 * report_head.MAX_BYTES
    put(store, f"{PREFIX}/2024-01-14.json", data)
    put(store, f"{PREFIX}/export-from-amazon.json", data)
    put(store, f"{PREFIX}/2024-01-15.json", data)  # a name, but not of a week (a Monday)
    warned: list[str] = []
    result = tick(store, warned=warned)
    assert requested(result) == {f"{PREFIX}/2024-01-14.json": expected(store, "2024-01-14.json", W2)}
    assert set(json.loads(result.cursor)) == {
        f"{PREFIX}/2024-01-14.json",
        f"{PREFIX}/export-from-amazon.json",
        f"{PREFIX}/2024-01-15.json",
    }
    # the data array comes first: the reader stops there, in the first bytes
    assert all(size <= report_head.FIRST_BYTES for _, size in _Recording.heads)
    unnamed = f"{PREFIX}/export-from-amazon.json: its reportSpecification is not in its first bytes"
    assert any(unnamed in w for w in warned)
    assert any(f"{PREFIX}/2024-01-15.json: named for 2024-01-15, which is not a Sunday" in w for w in warned)


def test_a_specification_beyond_the_first_mib_is_not_read_for(store):
    padded = report_bytes(W1).replace(b"{", b'{"padding":"' + b"x" * (2 * report_head.MAX_BYTES) + b'",', 1)
    put(store, f"{PREFIX}/2024-01-07.json", padded)
    put(store, f"{PREFIX}/padded.json", padded)
    warned: list[str] = []
    result = tick(store, warned=warned)
    assert requested(result) == {f"{PREFIX}/2024-01-07.json": expected(store, "2024-01-07.json", W1)}
    sizes: dict[str, list[int]] = {}
    for key, size in _Recording.heads:
        sizes.setdefault(key, []).append(size)
    assert set(sizes) == {f"{PREFIX}/2024-01-07.json", f"{PREFIX}/padded.json"}
    for key, asked in sizes.items():
        assert asked == sorted(asked) and max(asked) == report_head.MAX_BYTES, (key, asked)
    [not_found] = warned
    assert f"{PREFIX}/padded.json: its reportSpecification is not in its first bytes" in not_found


def test_a_week_not_over_yet_waits_and_one_before_the_first_week_is_refused(store):
    today = datetime.now(timezone.utc).date()
    this_week = today - timedelta(days=(today.weekday() + 1) % 7)  # the Sunday that began it
    future = {"this-week.json": this_week, "next-week.json": this_week + timedelta(days=7)}
    for name, week in future.items():
        put_report(store, name, week)
    put_report(store, "before-the-first.json", date(2022, 12, 25))
    put_report(store, "last-week.json", this_week - timedelta(days=7))
    warned: list[str] = []
    result = tick(store, warned=warned)
    assert {k: p for k, (p, _) in requested(result).items()} == {
        f"{PREFIX}/last-week.json": (this_week - timedelta(days=7)).isoformat()
    }
    assert len(warned) == 1 and f"{PREFIX}/before-the-first.json reports on 2022-12-25, before the first week" in warned[0]
    # the weeks not over yet stay out of the cursor, so a later tick looks at them again...
    cursor = json.loads(result.cursor)
    assert f"{PREFIX}/before-the-first.json" in cursor
    assert not any(f"{PREFIX}/{name}" in cursor for name in future)
    _Recording.heads.clear()
    later = tick(store, result.cursor)
    assert later.run_requests == []
    assert {key for key, _ in _Recording.heads} == {f"{PREFIX}/{name}" for name in future}  # ...and only them


def test_at_most_max_opened_per_tick_objects_are_opened_and_the_rest_wait(store, monkeypatch):
    monkeypatch.setattr(sensors, "MAX_OPENED_PER_TICK", 2)
    weeks = [date(2024, 1, 7) + timedelta(weeks=i) for i in range(5)]
    for week in weeks:
        put_report(store, f"{week}.json", week, gz=week.day % 2 == 0)
    put(store, f"{PREFIX}/2024-01-10-notes.txt", b"not a report")  # opened, counts towards the limit

    seen: dict[str, list[str]] = {}
    opened_per_tick = []
    cursor = None
    for _ in range(6):
        _Recording.heads.clear()
        result = tick(store, cursor)
        opened_per_tick.append(len({key for key, _ in _Recording.heads}))
        for key, (partition, run_key) in requested(result).items():
            seen.setdefault(key, []).append(run_key)
            assert partition == key.rsplit("/", 1)[1].split(".")[0]
        cursor = result.cursor
        if not _Recording.heads:
            break
    assert opened_per_tick == [2, 2, 2, 0]  # six objects, two a tick, then nothing new
    assert seen == {f"{PREFIX}/{w}.json": [expected(store, f"{w}.json", w)[1]] for w in weeks}
    assert len(json.loads(cursor)) == len(weeks) + 1


@pytest.mark.parametrize(
    "key, week",
    [
        ("search_terms/reports/2024-01-07.json", date(2024, 1, 7)),
        ("search_terms/reports/2024-01-07.json.gz", date(2024, 1, 7)),
        ("2024-01-07.json", date(2024, 1, 7)),
        ("a/b/2023-12-31.json.gz", date(2023, 12, 31)),
        ("search_terms/reports/2024-01-08.json", date(2024, 1, 8)),  # any date: the sensor checks the partition
        ("search_terms/reports/report-2024-01-07.json", None),
        ("search_terms/reports/2024-01-07.json.bak", None),
        ("search_terms/reports/2024-01-07.jsonl", None),
        ("search_terms/reports/2024-01-07.gz", None),
        ("search_terms/reports/2024-01-07.JSON", None),
        ("search_terms/reports/2024-13-07.json", None),  # not a date
        ("search_terms/reports/2024-02-30.json.gz", None),
        ("search_terms/reports/24-01-07.json", None),
        ("search_terms/reports/2024-01-07/report.json", None),
    ],
)
def test_week_in_name(key, week):
    assert week_in_name(key) == week

"""The product catalog pipeline as Dagster runs it (issue 5): upload → validated rows (+ rejects)
→ products → webhook, on the local defaults (a directory, SQLite) and on PostgreSQL, with a
real webhook receiver that checks signatures and the real Redis for progress.

Covered: a run's metadata and outcome; exactly one accepted upload.completed even when the
receiver answered 500 twice; the rejects file; a re-import of the same rows changes
nothing; too many rejects fails the run with the table exactly as before (SQLite and
PostgreSQL), and the failure sensor sends upload.failed, but not for a run that will be
retried, and upload.completed for a run that died after applying; a failed webhook step
does not re-apply or report a failure; an undelivered outcome parked and redelivered, and
given up (moved aside) after the redelivery window; .xlsx uploads; catalog_products alone
from the validated file; a replaced upload.
"""

import csv
import json
import os
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest

from assets.catalog import ASSETS
from assets.catalog.pipeline import APPLIED_FILE, PRODUCTS, REJECTS_FILE, UPLOAD, VALIDATED, WEBHOOK
from assets.catalog.settings import CatalogSettings
from engine.catalog.sample_catalog import csv_bytes, sample_rows, write_xlsx
from engine.catalog.uploads import upload_id, upload_partition_key
from engine.catalog.webhook import COMPLETED, FAILED
from local_services.webhook_receiver import webhook_receiver
from orchestration.catalog_sensor import WILL_RETRY_TAG, catalog_upload_failed_sensor
from partitions.catalog import catalog_uploads
from resources.catalog_db import PostgresCatalogDatabase, SqliteCatalogDatabase
from resources.object_store import LocalDirectoryObjectStore
from resources.webhook import WebhookSender

SECRET = "pipeline-test-secret"
PREFIX = CatalogSettings().uploads_prefix
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


class Catalog:
    """A local deployment of the pipeline in a temporary directory."""

    def __init__(self, root: Path, database=None, webhook_url: str | None = None, redis_url: str | None = None,
                 **settings):
        self.store = LocalDirectoryObjectStore(root=str(root / "data"))
        self.settings = CatalogSettings(redis_url=redis_url, **settings)
        self.database = database or SqliteCatalogDatabase(path=str(root / "catalog.sqlite"))
        self.webhook = WebhookSender(url=webhook_url, secret=SECRET if webhook_url else None, backoff_seconds=0.01,
                                     timeout_seconds=5)
        self.instance = dg.DagsterInstance.ephemeral()

    def resources(self) -> dict:
        return {"object_store": self.store, "catalog_settings": self.settings, "catalog_database": self.database,
                "catalog_webhook": self.webhook}

    def upload(self, name: str, data: bytes) -> str:
        key = f"{PREFIX}/{name}"
        with self.store.open_write(key) as out:
            out.write(data)
        partition = upload_partition_key(key, self.store.stat(key).etag, PREFIX)
        self.instance.add_dynamic_partitions(catalog_uploads.name, [partition])
        return partition

    def run(self, partition: str, selection=None) -> dg.ExecuteInProcessResult:
        return dg.materialize(ASSETS, resources=self.resources(), partition_key=partition, instance=self.instance,
                              selection=selection, raise_on_error=False)

    def result(self, partition: str, name: str) -> bytes:
        with self.store.open_read(self.settings.result_key(partition, name)) as f:
            return f.read()

    def notify_failure(self, result: dg.ExecuteInProcessResult, failure: dg.DagsterEvent | None = None) -> None:
        """What the run-failure sensor does for this failed run (its tags as the instance has them now)."""
        context = dg.build_run_status_sensor_context(
            sensor_name="catalog_upload_failed_sensor",
            dagster_instance=self.instance,
            dagster_run=self.instance.get_run_by_id(result.run_id),
            dagster_event=failure or result.get_run_failure_event(),
            resources=self.resources(),
        ).for_run_failure()
        catalog_upload_failed_sensor(context)


def metadata(result, key: dg.AssetKey) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def rows_text(rows: list[list]) -> bytes:
    return csv_bytes(rows)


def postgres_or_skip() -> str:
    import psycopg

    from conftest import require_service

    url = os.environ.get("FLOODGATE_TEST_POSTGRES_URL", "host=127.0.0.1 port=5432 dbname=test")
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        require_service(f"PostgreSQL is not reachable ({type(exc).__name__}): start it or set FLOODGATE_TEST_POSTGRES_URL")
    return url


def redis_or_none():
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        return REDIS_URL
    except redis.RedisError:
        from conftest import require_service

        require_service("Redis is not reachable: start redis-server or set REDIS_URL")


@pytest.fixture
def board():
    """The real Redis; the keys a test's uploads write are removed afterwards."""
    import redis

    url = redis_or_none()
    client = redis.Redis.from_url(url)
    prefix = f"test:{uuid.uuid4().hex}:"
    yield SimpleNamespace(client=client, url=url, prefix=prefix)
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
    client.close()


def test_a_run_applies_the_upload_reports_it_and_sends_one_signed_webhook(tmp_path, board):
    rows = list(sample_rows(300))
    bad = ["BAD-1", "Broken", "", "12,50", "3", "true", "red"]  # a decimal comma: refused
    repeated = list(rows[10])
    repeated[1] = "Renamed at the end"
    data = rows_text(rows[:150] + [bad] + rows[150:] + [repeated])
    with webhook_receiver(SECRET, script=[500, 500]) as receiver:
        catalog = Catalog(tmp_path, webhook_url=receiver.url, redis_url=board.url, progress_key_prefix=board.prefix)
        partition = catalog.upload("m1/spring catalog.csv", data)
        progress_key = board.prefix + upload_id(partition)
        result = catalog.run(partition)
        assert result.success
        assert receiver.wait_for(1)
    assert [a.status for a in receiver.attempts] == [500, 500, 200]
    (delivery,) = receiver.accepted
    assert delivery.event == COMPLETED and delivery.signature_valid
    assert delivery.idempotency_key == f"{COMPLETED}:{upload_id(partition)}"
    assert delivery.body["upload"]["partition"] == partition
    assert {k: delivery.body["data"][k] for k in ("rows", "inserted", "updated", "unchanged", "rejected", "superseded")} == {
        "rows": 302, "inserted": 300, "updated": 0, "unchanged": 0, "rejected": 1, "superseded": 1}

    products = metadata(result, PRODUCTS)
    assert (products["inserted"], products["updated"], products["unchanged"], products["rejected"]) == (300, 0, 0, 1)
    assert products["rows_in"] == 302 and products["seconds"] > 0 and products["rows_per_second"] > 0
    assert products["peak_rss_mb"] > 0
    validated = metadata(result, VALIDATED)
    assert validated["rejects"] == 1 and validated["superseded"] == 1 and validated["encoding"] == "ascii"
    assert metadata(result, WEBHOOK)["attempts"] == 3 and SECRET not in json.dumps(metadata(result, WEBHOOK), default=str)

    assert catalog.database.count() == 300
    assert catalog.database.rows([rows[10][0]])[0]["name"] == "Renamed at the end"  # the last occurrence wins
    rejects = list(csv.DictReader(catalog.result(partition, REJECTS_FILE).decode("utf-8-sig").splitlines()))
    assert [(r["row"], r["reasons"]) for r in rejects] == [
        ("152", "price '12,50' is not a number like 1234.5 or 1,234.50"),
        ("12", f"superseded: sku '{rows[10][0]}' appears again at row 303, which is kept"),
    ]
    progress = {k.decode(): v.decode() for k, v in board.client.hgetall(progress_key).items()}
    assert progress["state"] == "completed" and progress["inserted"] == "300" and progress["rejected"] == "1"
    assert any("applying its rows" in entry.user_message for entry in catalog.instance.all_logs(result.run_id))


def test_the_same_rows_uploaded_again_change_nothing(tmp_path):
    catalog = Catalog(tmp_path)
    data = rows_text(list(sample_rows(500)))
    assert catalog.run(catalog.upload("a.csv", data)).success
    before = catalog.database.rows()
    second = catalog.run(catalog.upload("a-again.csv", data))
    products = metadata(second, PRODUCTS)
    assert (products["inserted"], products["updated"], products["unchanged"]) == (0, 0, 500)
    assert catalog.database.rows() == before  # updated_at included


def test_too_many_rejects_fail_the_run_apply_nothing_and_send_upload_failed(tmp_path):
    with webhook_receiver(SECRET) as receiver:
        catalog = Catalog(tmp_path, webhook_url=receiver.url)
        assert catalog.run(catalog.upload("first.csv", rows_text(list(sample_rows(200))))).success
        before = catalog.database.rows()
        rows = [list(r) for r in sample_rows(200, price_shift=7)]  # every price changed
        for r in rows[100:103]:
            r[4] = "-1"  # 3 of 200 rejected: 1.5%, over the 1% limit; they come after 100 good rows
        partition = catalog.upload("second.csv", rows_text(rows))
        result = catalog.run(partition)
        assert not result.success
        assert catalog.database.rows() == before  # not one of the 197 good rows applied
        rejects = catalog.result(partition, REJECTS_FILE).decode("utf-8-sig")
        assert rejects.count("stock '-1' is negative") == 3
        catalog.notify_failure(result)
        assert receiver.wait_for(2)
    failed = receiver.accepted[1]
    assert failed.event == FAILED and failed.signature_valid and failed.idempotency_key == f"{FAILED}:{upload_id(partition)}"
    assert "3 of 200 rows rejected (1.50%), over the 1.00% limit; nothing applied" in failed.body["data"]["reason"]
    assert failed.body["data"]["failed_steps"] == ["catalog_import"]
    assert failed.body["data"]["rejects_uri"].endswith(REJECTS_FILE)


def test_a_failed_webhook_step_is_followed_by_upload_completed_from_the_sensor_not_a_reapply(tmp_path):
    with webhook_receiver(SECRET, script=[400]) as receiver:
        catalog = Catalog(tmp_path, webhook_url=receiver.url)
        partition = catalog.upload("a.csv", rows_text(list(sample_rows(50))))
        result = catalog.run(partition)
        assert not result.success and metadata(result, PRODUCTS)["inserted"] == 50
        catalog.notify_failure(result)  # the upload was applied: upload.completed, not upload.failed
        assert receiver.wait_for(1) and len(receiver.attempts) == 2
        retried = catalog.run(partition, selection=[WEBHOOK])  # a re-run of the webhook step alone
        assert retried.success
    assert [e.event for e in receiver.accepted] == [COMPLETED]  # the re-run's delivery had the same key
    assert len(receiver.attempts) == 3 and receiver.attempts[2].idempotency_key == receiver.accepted[0].idempotency_key
    assert catalog.database.count() == 50
    assert not [e for e in retried.get_asset_materialization_events() if e.asset_key == PRODUCTS]


def test_an_outcome_the_receiver_does_not_take_is_parked_and_redelivered_once_it_does(tmp_path):
    """The receiver is down through the run's and the failure sensor's retries: the
    upload.failed is parked in the object store, and the redelivery sensor sends it, the
    same signed bytes, once the receiver answers; a tick while it is still down keeps it."""
    from orchestration.webhook_outbox import catalog_webhook_redelivery_sensor, outbox_key

    attempts = Catalog(tmp_path).webhook.max_attempts
    with webhook_receiver(SECRET, script=[503] * (attempts + 1)) as receiver:
        catalog = Catalog(tmp_path, webhook_url=receiver.url)
        rows = [list(r) for r in sample_rows(100)]
        rows[5][4] = rows[6][4] = "-1"  # 2% rejected: the run fails
        partition = catalog.upload("a.csv", rows_text(rows))
        result = catalog.run(partition)
        catalog.notify_failure(result)
        assert len(receiver.attempts) == attempts and receiver.accepted == []
        parked_key = outbox_key(catalog.settings, upload_id(partition), FAILED)
        with catalog.store.open_read(parked_key) as f:
            parked = json.loads(f.read())
        assert parked["attempts"] == attempts and parked["last_status"] == 503 and SECRET not in json.dumps(parked)

        def tick():
            context = dg.build_sensor_context(instance=catalog.instance, resources=catalog.resources())
            return catalog_webhook_redelivery_sensor(context)

        tick()  # the receiver's last 503
        assert receiver.accepted == [] and catalog.store.exists(parked_key)
        skip = tick()
        assert receiver.wait_for(1) and "1 of 1" in skip.skip_message
        assert not catalog.store.exists(parked_key)
        assert tick().skip_message == "no undelivered webhook"
    (delivered,) = receiver.accepted
    assert delivered.event == FAILED and delivered.signature_valid
    assert delivered.idempotency_key == f"{FAILED}:{upload_id(partition)}"
    assert json.dumps(delivered.body, sort_keys=True, separators=(",", ":")) == parked["body"]  # the bytes first signed
    assert len(receiver.attempts) == attempts + 2


def _park_aged(catalog: Catalog, upload: str, hours: float) -> tuple[str, bytes]:
    """An undelivered upload.completed for `upload`, parked `hours` ago: (its key, its body)."""
    from engine.catalog.webhook import Delivery, event_body, idempotency_key
    from orchestration.webhook_outbox import outbox_key, park

    body = event_body(COMPLETED, {"id": upload}, {"rows": 1})
    park(catalog.store, catalog.settings, f"{upload}.csv@1", upload, COMPLETED,
         Delivery(False, 6, 503, "HTTP 503", idempotency_key(COMPLETED, upload), 1.0, body))
    key = outbox_key(catalog.settings, upload, COMPLETED)
    with catalog.store.open_read(key) as f:
        entry = json.loads(f.read())
    entry["parked_at"] = (datetime.now(timezone.utc) - timedelta(hours=hours)).isoformat()
    with catalog.store.open_write(key) as out:
        out.write(json.dumps(entry).encode())
    return key, body


def _redelivery_tick(catalog: Catalog) -> dg.SkipReason:
    from orchestration.webhook_outbox import catalog_webhook_redelivery_sensor

    return catalog_webhook_redelivery_sensor(dg.build_sensor_context(instance=catalog.instance, resources=catalog.resources()))


def test_a_parked_webhook_older_than_the_redelivery_window_is_moved_aside_not_sent(tmp_path):
    """An event parked longer than webhook_redelivery_hours is not sent again: the tick
    moves it, whole, under the expired prefix, and still delivers the younger ones."""
    from engine.catalog.webhook import idempotency_key
    from orchestration.webhook_outbox import expired_key

    with webhook_receiver(SECRET) as receiver:
        catalog = Catalog(tmp_path, webhook_url=receiver.url, webhook_redelivery_hours=72)
        old_key, old_body = _park_aged(catalog, "old", hours=73)
        young_key, _ = _park_aged(catalog, "young", hours=71)
        skip = _redelivery_tick(catalog)
        assert receiver.wait_for(1)
    assert "1 of 2 undelivered webhooks delivered, 1 given up" in skip.skip_message
    assert [e.idempotency_key for e in receiver.attempts] == [idempotency_key(COMPLETED, "young")]
    assert not catalog.store.exists(old_key) and not catalog.store.exists(young_key)
    with catalog.store.open_read(expired_key(catalog.settings, old_key)) as f:
        expired = json.loads(f.read())
    assert expired["idempotency_key"] == idempotency_key(COMPLETED, "old") and expired["attempts"] == 6
    assert expired["body"] == old_body.decode() and "expired_at" in expired


def test_a_redelivery_window_of_zero_never_gives_up(tmp_path):
    with webhook_receiver(SECRET) as receiver:
        catalog = Catalog(tmp_path, webhook_url=receiver.url, webhook_redelivery_hours=0)
        key, _ = _park_aged(catalog, "u", hours=24 * 365)
        assert _redelivery_tick(catalog).skip_message == "1 of 1 undelivered webhooks delivered"
        assert receiver.wait_for(1) and not catalog.store.exists(key)


def test_a_run_that_will_be_retried_sends_nothing_and_its_last_failure_sends_upload_failed(tmp_path):
    with webhook_receiver(SECRET) as receiver:
        catalog = Catalog(tmp_path, webhook_url=receiver.url)
        rows = [list(r) for r in sample_rows(100)]
        rows[5][4] = rows[6][4] = "-1"  # 2% rejected: the run fails
        result = catalog.run(catalog.upload("a.csv", rows_text(rows)))
        assert not result.success
        catalog.instance.add_run_tags(result.run_id, {WILL_RETRY_TAG: "true"})  # as Dagster tags it with run retries on
        catalog.notify_failure(result)
        assert receiver.attempts == []  # the retry will report the upload
        catalog.instance.add_run_tags(result.run_id, {WILL_RETRY_TAG: "false"})  # the last attempt
        catalog.notify_failure(result)
        assert receiver.wait_for(1)
    assert [e.event for e in receiver.accepted] == [FAILED]


def test_a_run_that_died_after_applying_sends_upload_completed_not_failed(tmp_path, board):
    with webhook_receiver(SECRET) as receiver:
        catalog = Catalog(tmp_path, webhook_url=receiver.url, redis_url=board.url, progress_key_prefix=board.prefix)
        partition = catalog.upload("a.csv", rows_text(list(sample_rows(40))))
        applied = catalog.run(partition, selection=[UPLOAD, VALIDATED, PRODUCTS])  # the webhook step never ran
        assert applied.success and receiver.attempts == []
        # the run's process lost before its webhook step, as run monitoring reports it: no step failed
        died = catalog.instance.report_run_failed(applied.dagster_run, "the run worker's process exited")
        catalog.notify_failure(applied, died)
        assert receiver.wait_for(1)
    (event,) = receiver.accepted
    assert event.event == COMPLETED and event.signature_valid and event.body["data"]["inserted"] == 40
    assert event.idempotency_key == f"{COMPLETED}:{upload_id(partition)}" and catalog.database.count() == 40
    assert board.client.hget(board.prefix + upload_id(partition), "state") == b"completed"


def test_a_run_that_died_while_importing_sends_upload_failed_and_marks_its_progress_failed(tmp_path, board):
    from engine.catalog.progress import RedisProgress

    with webhook_receiver(SECRET) as receiver:
        catalog = Catalog(tmp_path, webhook_url=receiver.url, redis_url=board.url, progress_key_prefix=board.prefix)
        partition = catalog.upload("a.csv", rows_text(list(sample_rows(40))))
        started = catalog.run(partition, selection=[UPLOAD])
        key = board.prefix + upload_id(partition)
        RedisProgress(board.url, partition, upload_id(partition), prefix=board.prefix).publish("importing", rows=20)
        died = catalog.instance.report_run_failed(started.dagster_run, "the run worker's process exited")
        catalog.notify_failure(started, died)
        assert receiver.wait_for(1)
    (event,) = receiver.accepted
    assert event.event == FAILED and "the run worker's process exited" in event.body["data"]["reason"]
    assert board.client.hget(key, "state") == b"failed" and catalog.database.count() == 0


def test_an_xlsx_upload(tmp_path):
    catalog = Catalog(tmp_path)
    path = write_xlsx(tmp_path / "catalog.xlsx", sample_rows(1000))
    result = catalog.run(catalog.upload("m2/catalog.xlsx", path.read_bytes()))
    assert result.success and metadata(result, PRODUCTS)["inserted"] == 1000
    assert metadata(result, VALIDATED)["sheet"] == "Products"
    first = next(iter(sample_rows(1)))
    (row,) = catalog.database.rows([first[0]])
    assert row["price"] == first[3] and row["stock"] == first[4] and row["attributes"] == {"Color": first[6]}


def test_products_alone_apply_the_validated_rows_of_an_earlier_run(tmp_path):
    catalog = Catalog(tmp_path)
    partition = catalog.upload("a.csv", rows_text(list(sample_rows(80))))
    assert catalog.run(partition, selection=[VALIDATED]).success
    assert not os.path.exists(catalog.database.path)  # validating alone never opened the database
    result = catalog.run(partition, selection=[PRODUCTS])
    assert result.success and metadata(result, PRODUCTS)["inserted"] == 80
    assert json.loads(catalog.result(partition, APPLIED_FILE))["inserted"] == 80


def test_an_upload_replaced_before_its_run_is_not_applied(tmp_path):
    catalog = Catalog(tmp_path)
    partition = catalog.upload("a.csv", rows_text(list(sample_rows(5))))
    catalog.upload("a.csv", rows_text(list(sample_rows(6))))  # the same name, new content: a new upload
    result = catalog.run(partition)
    assert not result.success and catalog.database.count() == 0
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "was replaced after this upload was registered" in failure.event_specific_data.error.message


def test_a_run_against_postgresql(tmp_path):
    import psycopg

    url = postgres_or_skip()
    schema = f"test_pipeline_{uuid.uuid4().hex[:12]}"
    try:
        catalog = Catalog(tmp_path, database=PostgresCatalogDatabase(url=url, db_schema=schema))
        rows = list(sample_rows(2000))
        assert metadata(catalog.run(catalog.upload("a.csv", rows_text(rows))), PRODUCTS)["inserted"] == 2000
        rows[5][3] = Decimal("1.25")
        products = metadata(catalog.run(catalog.upload("b.csv", rows_text(rows))), PRODUCTS)
        assert (products["inserted"], products["updated"], products["unchanged"]) == (0, 1, 1999)
        assert products["staged"] == 1  # the other rows were known unchanged by their fingerprints
        assert catalog.database.rows([rows[5][0]])[0]["price"] == Decimal("1.25")
        assert products["table"].startswith("postgresql:") and "public" not in products["table"]
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.parametrize("alone", [False, True], ids=["in-one-run", "products-alone"])
def test_a_postgresql_upload_listing_every_sku_twice_applies_each_last_row(tmp_path, alone):
    """40k rows, the second half repeating the first half's SKUs with other values, across
    the reader's batches: the last rows are applied and 20k earlier ones reported, in the
    run that validates and, from the validated file, in a run of catalog_products alone."""
    import psycopg

    url = postgres_or_skip()
    schema = f"test_pipeline_{uuid.uuid4().hex[:12]}"
    try:
        catalog = Catalog(tmp_path, database=PostgresCatalogDatabase(url=url, db_schema=schema))
        first, last = list(sample_rows(20_000, seed=1)), list(sample_rows(20_000, seed=2))
        partition = catalog.upload("twice.csv", rows_text(first + last))
        if alone:
            assert catalog.run(partition, selection=[VALIDATED]).success
            result = catalog.run(partition, selection=[PRODUCTS])
        else:
            result = catalog.run(partition)
        assert result.success
        products = metadata(result, PRODUCTS)
        assert (products["inserted"], products["updated"], products["unchanged"]) == (20_000, 0, 0)
        stored = {r["sku"]: r for r in catalog.database.rows()}
        assert len(stored) == 20_000
        assert all(stored[sku]["name"] == name and stored[sku]["price"] == price for sku, name, _, price, *_ in last)
        rejects = list(csv.DictReader(catalog.result(partition, REJECTS_FILE).decode("utf-8-sig").splitlines()))
        assert [int(r["row"]) for r in rejects] == list(range(2, 20_002))
        assert rejects[-1]["reasons"] == f"superseded: sku '{first[-1][0]}' appears again at row 40001, which is kept"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_too_many_rejects_leave_a_postgresql_table_exactly_as_before(tmp_path):
    import psycopg

    url = postgres_or_skip()
    schema = f"test_pipeline_{uuid.uuid4().hex[:12]}"
    try:
        catalog = Catalog(tmp_path, database=PostgresCatalogDatabase(url=url, db_schema=schema))
        assert catalog.run(catalog.upload("a.csv", rows_text(list(sample_rows(500))))).success
        before = catalog.database.rows()
        rows = [list(r) for r in sample_rows(500, price_shift=3)]  # every price changed
        for r in rows[400:406]:
            r[3] = "free"  # 6 of 500 rejected (1.2%), after 400 good rows were staged
        result = catalog.run(catalog.upload("b.csv", rows_text(rows)))
        (failure,) = [e for e in result.all_events if e.is_step_failure]
        assert "6 of 500 rows rejected (1.20%), over the 1.00% limit" in failure.event_specific_data.error.message
        assert catalog.database.rows() == before  # the same rows, prices and timestamps
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.parametrize("encoding", ["utf-8-sig", "cp1252"])
def test_encoded_uploads_keep_their_text(tmp_path, encoding):
    catalog = Catalog(tmp_path)
    data = "SKU;Name;Price\nA1;Crème brûlée – “fine”;1234.50\nA2;Thé;3\n".encode(encoding)
    result = catalog.run(catalog.upload("fr.csv", data))
    assert result.success and metadata(result, VALIDATED)["delimiter"] == "semicolon"
    assert catalog.database.rows(["A1"])[0]["name"] == "Crème brûlée – “fine”"

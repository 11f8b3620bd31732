"""The catalog uploads sensor (issue 5, item 1), against a real S3 API (moto's server, a bucket
per test) and a local directory: one dynamic partition and one run per upload, keyed by
object key and ETag; the cursor across ticks; files that are not catalogs; files still
settling; the per-tick limit. And the definitions load with the catalog's resources."""

import json
import uuid
from pathlib import Path

import dagster as dg
import pytest

from assets.catalog import defs as catalog_defs
from assets.catalog.resources import catalog_local_resources
from assets.catalog.settings import CatalogSettings
from engine.catalog.uploads import parse_upload_partition_key
from local_services.s3_server import TEST_CREDENTIALS, create_bucket
from orchestration import catalog_sensor
from orchestration.catalog_sensor import UPLOAD_KEY_TAG, catalog_uploads_sensor
from partitions.catalog import catalog_uploads
from resources.object_store import LocalDirectoryObjectStore, ObjectStore
from resources.s3_object_store import S3ObjectStore

PREFIX = CatalogSettings().uploads_prefix


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ObjectStore:
    if request.param == "local":
        return LocalDirectoryObjectStore(root=str(tmp_path / "store"))
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"catalog-{uuid.uuid4().hex[:16]}"
    create_bucket(endpoint, bucket)
    return S3ObjectStore(bucket=bucket, endpoint_url=endpoint, **TEST_CREDENTIALS)


def put(store: ObjectStore, key: str, data: bytes = b"sku,name\nA1,Lamp\n") -> str:
    with store.open_write(key) as f:
        f.write(data)
    return store.stat(key).etag


class Ticks:
    """Sensor evaluations against one instance, as the daemon would run them."""

    def __init__(self, store: ObjectStore, settle_seconds: float = 0.0):
        self.store = store
        self.settings = CatalogSettings(settle_seconds=settle_seconds)
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursor = None
        self.warnings: list[str] = []

    def tick(self) -> dg.SensorResult:
        context = dg.build_sensor_context(
            cursor=self.cursor, instance=self.instance,
            resources={"object_store": self.store, "catalog_settings": self.settings},
        )
        result = catalog_uploads_sensor(context)
        self.cursor = result.cursor
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(catalog_uploads.name, list(request.partition_keys))
        if result.run_requests:
            assert result.skip_reason is None
        else:
            assert result.skip_reason is not None
        return result


def requested(result: dg.SensorResult) -> dict[str, str]:
    """{object key: partition key} of a tick's run requests, checking each is well formed."""
    out = {}
    for request in result.run_requests or []:
        assert request.run_key == request.partition_key
        key, etag = parse_upload_partition_key(request.partition_key, PREFIX)
        assert request.tags[UPLOAD_KEY_TAG] == key
        out[key] = request.partition_key
    return out


def test_each_new_or_replaced_upload_gets_one_partition_and_one_run(store):
    e1 = put(store, f"{PREFIX}/m1/spring, 2024.csv")
    put(store, f"{PREFIX}/m2/catalog.xlsx", b"PK\x03\x04...")
    ticks = Ticks(store)
    first = ticks.tick()
    assert set(requested(first)) == {f"{PREFIX}/m1/spring, 2024.csv", f"{PREFIX}/m2/catalog.xlsx"}
    partition = requested(first)[f"{PREFIX}/m1/spring, 2024.csv"]
    assert "," not in partition and parse_upload_partition_key(partition, PREFIX)[1] == e1
    assert set(ticks.instance.get_dynamic_partitions(catalog_uploads.name)) == set(requested(first).values())

    assert not ticks.tick().run_requests  # nothing new

    e2 = put(store, f"{PREFIX}/m1/spring, 2024.csv", b"sku,name\nA1,Lamp\nA2,Chair\n")  # replaced
    third = ticks.tick()
    assert list(requested(third)) == [f"{PREFIX}/m1/spring, 2024.csv"]
    new_partition = requested(third)[f"{PREFIX}/m1/spring, 2024.csv"]
    assert e2 != e1 and new_partition != partition and parse_upload_partition_key(new_partition, PREFIX)[1] == e2
    assert len(ticks.instance.get_dynamic_partitions(catalog_uploads.name)) == 3  # the old upload keeps its partition

    store.delete(f"{PREFIX}/m2/catalog.xlsx")
    assert not ticks.tick().run_requests
    assert set(json.loads(ticks.cursor)) == {f"{PREFIX}/m1/spring, 2024.csv"}


def test_files_that_are_not_catalogs_or_not_under_the_prefix_are_left_alone(store):
    put(store, f"{PREFIX}/notes.pdf", b"%PDF")
    put(store, f"{PREFIX}/.partial-upload.csv")
    put(store, "elsewhere/products.csv")
    ticks = Ticks(store)
    assert not ticks.tick().run_requests
    assert set(json.loads(ticks.cursor)) == {f"{PREFIX}/notes.pdf", f"{PREFIX}/.partial-upload.csv"}
    assert not ticks.tick().run_requests


def test_a_file_still_settling_waits_for_a_later_tick(tmp_path):
    store = LocalDirectoryObjectStore(root=str(tmp_path / "store"))
    put(store, f"{PREFIX}/a.csv")
    ticks = Ticks(store, settle_seconds=3600)
    assert not ticks.tick().run_requests and json.loads(ticks.cursor) == {}
    ticks.settings = CatalogSettings(settle_seconds=0)
    assert list(requested(ticks.tick())) == [f"{PREFIX}/a.csv"]


def test_at_most_the_tick_limit_is_requested_and_the_rest_follow(store, monkeypatch):
    monkeypatch.setattr(catalog_sensor, "MAX_RUNS_PER_TICK", 2)
    keys = {f"{PREFIX}/u{i}.csv" for i in range(5)}
    for key in keys:
        put(store, key)
    ticks = Ticks(store)
    seen: list[str] = []
    for _ in range(4):
        result = ticks.tick()
        assert len(result.run_requests or []) <= 2
        seen += list(requested(result))
    assert sorted(seen) == sorted(keys)  # each exactly once


def test_the_catalog_definitions_load_with_their_local_resources(tmp_path):
    resources = {**catalog_local_resources(Path(tmp_path)), "object_store": LocalDirectoryObjectStore(root=str(tmp_path))}
    defs = dg.Definitions.merge(catalog_defs, dg.Definitions(resources=resources))
    job = defs.resolve_job_def("product_catalog")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} >= {
        "catalog_upload", "catalog_validated_rows", "catalog_products", "catalog_upload_webhook"}
    assert {s.name for s in defs.sensors} == {
        "catalog_uploads_sensor", "catalog_upload_failed_sensor", "catalog_webhook_redelivery_sensor"}


def test_production_resources_come_from_the_environment_and_hide_their_values(tmp_path, monkeypatch):
    from assets.catalog.resources import catalog_prod_resources
    from resources.catalog_db import PostgresCatalogDatabase, SqliteCatalogDatabase
    from resources.webhook import WebhookSender

    assert isinstance(catalog_prod_resources(Path(tmp_path))["catalog_database"], SqliteCatalogDatabase)  # nothing set
    monkeypatch.setenv("FLOODGATE_CATALOG_DATABASE_URL", "postgresql://u:hunter2@db:5432/catalog")
    monkeypatch.setenv("FLOODGATE_WEBHOOK_URL", "https://hooks.example/in")
    monkeypatch.setenv("FLOODGATE_WEBHOOK_SECRET", "whsec")
    monkeypatch.setenv("REDIS_URL", "redis://:pw@cache:6379/0")
    monkeypatch.setenv("CATALOG_MAX_REJECT_FRACTION", "0.05")
    chosen = catalog_prod_resources(Path(tmp_path))
    assert isinstance(chosen["catalog_database"], PostgresCatalogDatabase)
    assert isinstance(chosen["catalog_webhook"], WebhookSender)
    assert chosen["catalog_settings"].max_reject_fraction == 0.05
    shown = json.dumps({k: getattr(v, "_get_non_default_public_field_values", lambda: {})() for k, v in chosen.items()},
                       default=str)
    assert "hunter2" not in shown and "whsec" not in shown and ":pw@" not in shown
    defs = dg.Definitions.merge(
        catalog_defs, dg.Definitions(resources={**chosen, "object_store": LocalDirectoryObjectStore(root=str(tmp_path))})
    )
    assert defs.resolve_job_def("product_catalog") is not None

"""Issue 7, item 4: enriched_records on Spark (local mode, two tasks) launched through Dagster
Pipes writes the same output as the single-process path on the same input, and the two
tasks, sharing one Redis-backed budget, never take the local API server over its limit."""

from __future__ import annotations

import json
import os
import shutil
import uuid

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assets.enrichment.pipeline import enrichment_input
from assets.enrichment.settings import EnrichmentSettings
from assets.enrichment.spark import SPARK_TASKS_VARIABLE, enriched_records_on_spark
from conftest import require_service
from engine.enrichment.limiter import redacted_url
from engine.enrichment.run import enrich_file
from enrichment_api_fixtures import api, server  # noqa: F401 - pytest fixtures
from local_services.enrichment_api_server import expected_fields
from partitions.enrichment import enrichment_files
from resources.enrichment_api import EnrichmentApi
from resources.object_store import LocalDirectoryObjectStore

RATE = 1000.0
RECORDS = 3000


@pytest.fixture
def redis_url(monkeypatch):
    import redis

    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means there is no Redis to use
        require_service(f"Redis at {redacted_url(url)} is not reachable ({type(exc).__name__}): start redis-server or set REDIS_URL")
    monkeypatch.setenv("REDIS_URL", url)  # the Spark stage reads it from its environment, as in production
    return url


def rows_under(store, prefix: str) -> list[dict]:
    """Every row of the Parquet files under `prefix`, by record ID."""
    tables = [pq.read_table(store.uri(info.key)) for info in store.list(prefix) if info.key.endswith(".parquet")]
    return sorted(pa.concat_tables(tables).to_pylist(), key=lambda r: r["id"]) if tables else []


def test_the_spark_stage_writes_what_the_single_process_path_writes_under_one_budget(api, redis_url, tmp_path, monkeypatch):
    if shutil.which("java") is None:
        require_service("no java on PATH: Spark needs Java 17 or later (apt-get install openjdk-17-jre-headless)")
    monkeypatch.setenv(SPARK_TASKS_VARIABLE, "2")
    store = LocalDirectoryObjectStore(root=str(tmp_path / "data"))
    with store.open_write("enrichment/input/batch.ndjson") as f:
        f.write(b"".join(json.dumps({"id": f"r{i:05d}", "n": i}).encode() + b"\n" for i in range(RECORDS)))
    api.configure(rate_limit=RATE)
    settings = EnrichmentSettings(chunk_rows=250, progress_interval_seconds=60)
    enrichment_api = EnrichmentApi(
        base_url=api.url, rate=RATE, redis_url=redis_url, limiter_key=f"floodgate-test:{uuid.uuid4().hex}:rate",
        concurrency=32, backoff_base=0.01, max_backoff=0.2,
    )
    resources = {
        "object_store": store, "enrichment_settings": settings, "enrichment_api": enrichment_api,
        "enrichment_spark": dg.PipesSubprocessClient(),
    }
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(enrichment_files.name, ["batch.ndjson"])
    result = dg.materialize(
        [enrichment_input, enriched_records_on_spark], partition_key="batch.ndjson", instance=instance, resources=resources,
    )
    assert result.success
    (materialization,) = [
        e.step_materialization_data.materialization for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("enriched_records")
    ]
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert (metadata["rows_in"], metadata["rows_out"], metadata["rejects"], metadata["requests"]) == (RECORDS, RECORDS, 0, RECORDS)
    assert all(check.passed for check in result.get_asset_check_evaluations())

    # the single-process path on the same input, into another prefix
    single = enrich_file(
        store, "enrichment/input/batch.ndjson", "ndjson", "single/batch.ndjson",
        enrichment_api.settings(), enrichment_api.template(), settings.file_settings(),
    )
    assert single.account.complete and single.account.enriched == RECORDS

    on_spark = rows_under(store, "enrichment/output/batch.ndjson/enriched/")
    assert on_spark == rows_under(store, "single/batch.ndjson/enriched/")
    assert len(on_spark) == RECORDS and all({k: r[k] for k in ("score", "label")} == expected_fields(r["id"]) for r in on_spark)
    assert rows_under(store, "enrichment/output/batch.ndjson/dead_letters/") == []
    with store.open_read("enrichment/output/batch.ndjson/summary.json") as f:
        summary = json.loads(f.read())
    assert summary["balanced"] and summary["complete"] and summary["chunks_written"] == RECORDS // 250

    served = api.stats()
    assert served["requests"] == 2 * RECORDS
    assert served["over_limit"] == 0 and served["max_window"] <= RATE

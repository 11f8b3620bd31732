"""DAGSTER_DEPLOYMENT=prod end to end against real APIs on loopback: reports land in S3 (a
moto server), the sensor requests a run, the run loads the week into BigQuery (the
local-bigquery emulator). The same resources, sensor and job the code location serves."""

import gzip
import io
import json
import uuid
from datetime import date

import dagster as dg
import pytest

import orchestration.deployment as deployment
from assets import search_terms
from assets.search_terms.report import REPORT_KEY_TAG
from engine.search_terms.sample_report import write_report
from local_services.s3_server import TEST_CREDENTIALS, create_bucket
from orchestration.sensors import search_terms_report_sensor
from resources.bigquery_warehouse import BigQueryClientResource, BigQueryWarehouse
from resources.s3_object_store import S3ObjectStore

W1, W2 = date(2024, 1, 7), date(2024, 1, 14)


@pytest.fixture
def prod(monkeypatch, s3_endpoint, bigquery_endpoint):
    """The prod resource set, as the code location builds it from the environment."""
    bucket = f"reports-{uuid.uuid4().hex[:8]}"
    create_bucket(s3_endpoint, bucket)
    environment = {
        "DAGSTER_DEPLOYMENT": "prod",
        "FLOODGATE_S3_BUCKET": bucket,
        "FLOODGATE_S3_PREFIX": "floodgate/",
        "FLOODGATE_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_REGION": TEST_CREDENTIALS["region_name"],
        "AWS_ACCESS_KEY_ID": TEST_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": TEST_CREDENTIALS["aws_secret_access_key"],
        "FLOODGATE_BIGQUERY_PROJECT": "local",
        "FLOODGATE_BIGQUERY_DATASET": f"brand_analytics_{uuid.uuid4().hex[:8]}",
        "FLOODGATE_BIGQUERY_ENDPOINT": bigquery_endpoint,
        "FLOODGATE_BIGQUERY_ANONYMOUS": "true",
        "FLOODGATE_PROGRESS_SECONDS": "60",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    resources = deployment.resources()  # settings are dg.EnvVar: resolved by Dagster at run time
    defs = dg.Definitions.merge(search_terms.defs, dg.Definitions(resources=resources))
    # the test's own view of the same S3 bucket and BigQuery dataset, with values, not EnvVars
    store = S3ObjectStore(bucket=bucket, prefix="floodgate/", endpoint_url=s3_endpoint, **TEST_CREDENTIALS)
    client = BigQueryClientResource(project="local", api_endpoint=bigquery_endpoint, anonymous=True)
    warehouse = BigQueryWarehouse(bigquery=client, dataset=environment["FLOODGATE_BIGQUERY_DATASET"])
    return resources, defs, store, warehouse


def put_report(store, key: str, week: date, terms: int, seed: int) -> set[tuple[str, str]]:
    """Upload a gzip report; return its (department, search term) pairs."""
    raw = io.BytesIO()
    write_report(raw, week, terms=terms, seed=seed)
    with store.open_write(key) as out:
        out.write(gzip.compress(raw.getvalue()))
    rows = json.loads(raw.getvalue())["dataByDepartmentAndSearchTerm"]
    return {(r["departmentName"], r["searchTerm"]) for r in rows}


def tick(resources, instance, cursor):
    with dg.build_sensor_context(cursor=cursor, instance=instance, resources=resources) as context:
        return search_terms_report_sensor(context)


def run_requested(defs, instance, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def(request.job_name or "search_terms_weekly")
    result = job.execute_in_process(instance=instance, partition_key=request.partition_key, tags=request.tags)
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]
    return result


def table_rows(warehouse, week: date) -> set[tuple[str, str]]:
    table = warehouse.table_ref("search_terms_top3")
    return set(warehouse.query(f"SELECT department_name, search_term FROM {table} WHERE week_start = ?", [week]))


def test_a_gzip_report_in_s3_reaches_bigquery_through_the_sensor_and_a_replaced_one_reloads(prod):
    resources, defs, store, warehouse = prod
    instance = dg.DagsterInstance.ephemeral()

    # another week already in the table, which reloading W1 must leave alone
    other = put_report(store, "search_terms/reports/2024-01-14.json.gz", W2, terms=150, seed=2)
    first = tick(resources, instance, None)
    assert [r.partition_key for r in first.run_requests] == [W2.isoformat()]
    run_requested(defs, instance, first.run_requests[0])

    # a report named by Amazon's report ID, not by its week: the week comes from its header
    key = "search_terms/reports/GET_BRAND_ANALYTICS_SEARCH_TERMS_REPORT-50012.json.gz"
    original = put_report(store, key, W1, terms=300, seed=1)
    second = tick(resources, instance, first.cursor)
    (request,) = second.run_requests
    assert request.partition_key == W1.isoformat()
    assert request.tags[REPORT_KEY_TAG] == key
    assert request.run_key == f"{key}@{store.stat(key).etag}"
    run_requested(defs, instance, request)
    assert table_rows(warehouse, W1) == original
    assert table_rows(warehouse, W2) == other

    # a repeated tick starts nothing
    assert tick(resources, instance, second.cursor).run_requests == []

    # the same key, new content: a new run key, and the week holds the new rows only
    replacement = put_report(store, key, W1, terms=200, seed=7)
    assert replacement != original
    third = tick(resources, instance, second.cursor)
    (again,) = third.run_requests
    assert again.partition_key == W1.isoformat() and again.run_key != request.run_key
    run_requested(defs, instance, again)
    assert table_rows(warehouse, W1) == replacement
    (count,) = warehouse.query(
        f"SELECT COUNT(*) FROM {warehouse.table_ref('search_terms_top3')} WHERE week_start = ?", [W1]
    )[0]
    assert count == len(replacement)  # one row per term: no duplicates from the first load
    assert table_rows(warehouse, W2) == other

    # the parsed and top-3 files went to S3, under the configured prefix
    assert store.uri("search_terms/2024-01-07/top3.parquet").startswith(f"s3://{store.bucket}/floodgate/")
    assert store.stat("search_terms/2024-01-07/top3.parquet") is not None

"""Issue 7, item 4: enriched_records on Spark through Dagster Pipes writes the same output as
the single-process path on the same input, and its two tasks, sharing one Redis-backed
budget, never take the local API server over its limit. Launched two ways:

- as a local subprocess with Spark in local mode (LocalSparkStage);
- as production launches it, a Glue job run through dagster-aws' PipesGlueClient with the
  Pipes context and messages in S3 (GlueSparkStage), against the moto S3 server, with
  Glue's job runner played by `LocalGlue`: the job's script run to completion with the run's
  arguments on its command line, as Glue runs a Python shell or Spark job's script.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

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
from local_services.s3_server import TEST_CREDENTIALS, create_bucket
from partitions.enrichment import enrichment_files
from resources.enrichment_api import EnrichmentApi
from resources.object_store import LocalDirectoryObjectStore
from resources.s3_object_store import S3ObjectStore
from resources.spark_stage import STAGE_MODULE, GlueSparkStage, LocalSparkStage

ROOT = Path(__file__).resolve().parents[2]
RATE = 1000.0
RECORDS, CHUNK_ROWS = 3000, 250
INPUT = "enrichment/input/batch.ndjson"


@pytest.fixture
def redis_url(monkeypatch):
    import redis

    if shutil.which("java") is None:
        require_service("no java on PATH: Spark needs Java 17 or later (apt-get install openjdk-17-jre-headless)")
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means there is no Redis to use
        require_service(f"Redis at {redacted_url(url)} is not reachable ({type(exc).__name__}): start redis-server or set REDIS_URL")
    monkeypatch.setenv("REDIS_URL", url)  # the Spark stage reads it from its environment, as in production
    monkeypatch.setenv(SPARK_TASKS_VARIABLE, "2")
    return url


def rows_under(store, prefix: str) -> list[dict]:
    """Every row of the Parquet files under `prefix`, by record ID."""
    tables = []
    for info in store.list(prefix):
        if info.key.endswith(".parquet"):
            with store.open_read(info.key) as f:
                tables.append(pq.read_table(pa.BufferReader(f.read())))
    return sorted(pa.concat_tables(tables).to_pylist(), key=lambda r: r["id"]) if tables else []


def enrich_on_spark_and_alone(store, api, redis_url: str, stage) -> None:
    """The Spark stage's run, then the single-process path on the same input: same output,
    nothing over the server's limit."""
    with store.open_write(INPUT) as f:
        f.write(b"".join(json.dumps({"id": f"r{i:05d}", "n": i}).encode() + b"\n" for i in range(RECORDS)))
    api.configure(rate_limit=RATE)
    settings = EnrichmentSettings(chunk_rows=CHUNK_ROWS, progress_interval_seconds=60)
    enrichment_api = EnrichmentApi(
        base_url=api.url, rate=RATE, redis_url=redis_url, limiter_key=f"floodgate-test:{uuid.uuid4().hex}:rate",
        concurrency=32, backoff_base=0.01, max_backoff=0.2,
    )
    resources = {"object_store": store, "enrichment_settings": settings, "enrichment_api": enrichment_api,
                 "enrichment_spark": stage}
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
    assert metadata["limiter"].startswith("2 Spark tasks, each: Redis GCRA")  # one budget, shared

    single = enrich_file(
        store, INPUT, "ndjson", "single/batch.ndjson", enrichment_api.settings(), enrichment_api.template(),
        settings.file_settings(),
    )
    assert single.account.complete and single.account.enriched == RECORDS

    on_spark = rows_under(store, "enrichment/output/batch.ndjson/enriched/")
    assert on_spark == rows_under(store, "single/batch.ndjson/enriched/")
    assert len(on_spark) == RECORDS and all({k: r[k] for k in ("score", "label")} == expected_fields(r["id"]) for r in on_spark)
    assert rows_under(store, "enrichment/output/batch.ndjson/dead_letters/") == []
    with store.open_read("enrichment/output/batch.ndjson/summary.json") as f:
        summary = json.loads(f.read())
    assert summary["balanced"] and summary["complete"] and summary["chunks_written"] == RECORDS // CHUNK_ROWS

    served = api.stats()
    assert served["requests"] == 2 * RECORDS
    assert served["over_limit"] == 0 and served["max_window"] <= RATE


def test_the_spark_stage_in_a_local_subprocess(api, redis_url, tmp_path):
    enrich_on_spark_and_alone(LocalDirectoryObjectStore(root=str(tmp_path / "data")), api, redis_url, LocalSparkStage())


class LocalGlue:
    """Glue's job runner, played locally: `start_job_run` runs the job's script with the run's
    arguments on its command line (`--name value`, as Glue passes them) to completion, in an
    environment like the job's (credentials, the S3 endpoint), and `get_job_run` says how
    it ended."""

    def __init__(self, environment: dict[str, str]):
        self.environment = environment
        self.runs: dict[str, dict] = {}
        self.meta = SimpleNamespace(region_name=TEST_CREDENTIALS["region_name"])

    def start_job_run(self, JobName: str, Arguments: dict[str, str]) -> dict:  # noqa: N803 - boto3's names
        argv = [sys.executable, "-m", STAGE_MODULE, *(part for item in Arguments.items() for part in item)]
        done = subprocess.run(argv, cwd=ROOT, env=self.environment, capture_output=True, text=True, timeout=600, check=False)
        run_id = f"jr_{uuid.uuid4().hex}"
        self.runs[run_id] = {
            "Id": run_id, "JobName": JobName, "Arguments": Arguments,
            "JobRunState": "SUCCEEDED" if done.returncode == 0 else "FAILED", "ErrorMessage": done.stderr[-3000:],
        }
        return {"JobRunId": run_id}

    def get_job_run(self, JobName: str, RunId: str) -> dict:  # noqa: N803
        return {"JobRun": self.runs[RunId]}


def test_the_spark_stage_as_a_glue_job_run_with_pipes_through_s3(api, redis_url, s3_endpoint, monkeypatch):
    bucket = f"enrichment-{uuid.uuid4().hex[:8]}"
    create_bucket(s3_endpoint, bucket)
    store = S3ObjectStore(bucket=bucket, prefix="floodgate/", endpoint_url=s3_endpoint, **TEST_CREDENTIALS)
    # the job's environment: AWS credentials, and the S3 endpoint boto3 reads (AWS_ENDPOINT_URL_S3)
    job_environment = {
        **os.environ, "AWS_ACCESS_KEY_ID": TEST_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": TEST_CREDENTIALS["aws_secret_access_key"], "AWS_REGION": TEST_CREDENTIALS["region_name"],
        "AWS_DEFAULT_REGION": TEST_CREDENTIALS["region_name"], "AWS_ENDPOINT_URL_S3": s3_endpoint,
        "PYSPARK_PYTHON": sys.executable, "PYTHONPATH": str(ROOT),
    }
    glue = LocalGlue(job_environment)

    class GlueHere(GlueSparkStage):
        def glue_client(self):
            return glue

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # the step's own S3 client (Pipes' bucket)
        monkeypatch.setenv(name, job_environment[name])
    stage = GlueHere(job_name="floodgate-enrichment", pipes_bucket=bucket, region_name=TEST_CREDENTIALS["region_name"],
                     s3_endpoint_url=s3_endpoint, poll_seconds=0.5)
    enrich_on_spark_and_alone(store, api, redis_url, stage)
    (run,) = glue.runs.values()
    assert run["JobName"] == "floodgate-enrichment" and run["JobRunState"] == "SUCCEEDED"
    assert {"--dagster-pipes-context", "--dagster-pipes-messages"} <= set(run["Arguments"])

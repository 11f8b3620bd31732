"""The enrichment assets in Dagster: the sensor registers a file, a run enriches it and
records the request side; a failing API fails the run with every record accounted for,
and the retried run sends only what was not written; several files in one run; the API
key from the environment stays out of metadata and logs; the definitions load."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from assets import enrichment
from assets.enrichment.settings import EnrichmentSettings
from enrichment_api_fixtures import api, server  # noqa: F401 - pytest fixtures
from local_services.enrichment_api_server import expected_fields
from orchestration.enrichment_sensor import enrichment_files_sensor
from partitions.enrichment import enrichment_files
from resources.enrichment_api import EnrichmentApi
from resources.object_store import LocalDirectoryObjectStore

REQUEST_METADATA = {
    "rows_in", "rows_out", "rejects", "seconds", "rows_per_second", "peak_rss_mb",
    "requests", "requests_per_second", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
    "retries", "retries_by_cause", "breaker_openings", "dead_letters_by_reason",
}


@pytest.fixture
def store(tmp_path):
    return LocalDirectoryObjectStore(root=str(tmp_path / "data"))


def resources_for(store, api, **api_settings) -> dict:
    return {
        "object_store": store,
        "enrichment_settings": EnrichmentSettings(chunk_rows=200, progress_interval_seconds=60),
        "enrichment_api": EnrichmentApi(
            base_url=api.url, rate=0, concurrency=32, backoff_base=0.01, max_backoff=0.2,
            breaker_open_seconds=0.1, breaker_max_open_seconds=1.0, **api_settings,
        ),
    }


def put_ndjson(store, path: str, n: int, prefix: str = "r") -> list[str]:
    ids = [f"{prefix}{i}" for i in range(n)]
    with store.open_write(f"enrichment/input/{path}") as f:
        f.write(b"".join(json.dumps({"id": i, "n": k}).encode() + b"\n" for k, i in enumerate(ids)))
    return ids


def register(instance, resources) -> dg.SensorResult:
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        result = enrichment_files_sensor(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(enrichment_files.name, list(request.partition_keys))
    return result


def run_job(instance, resources, partition_key: str | None = None, keys: list[str] | None = None, raise_on_error=True):
    defs = dg.Definitions(assets=enrichment.ASSETS, jobs=[enrichment.enrichment_job], resources=resources)
    job = defs.resolve_job_def("enrichment")
    tags = {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]} if keys else None
    return job.execute_in_process(instance=instance, partition_key=partition_key, tags=tags, raise_on_error=raise_on_error)


def materialization(result, name: str) -> dict:
    for event in result.get_asset_materialization_events():
        m = event.step_materialization_data.materialization
        if m.asset_key.path[-1] == name:
            return {k: v.value for k, v in m.metadata.items()}
    raise AssertionError(f"no materialization of {name}")


def test_sensor_and_run_enrich_a_file_and_record_the_request_side(api, store):
    ids = put_ndjson(store, "2024/06/a,b.ndjson", 1000)
    api.configure(p_503=0.02, reject_ids=["r17"])
    resources = resources_for(store, api)
    instance = dg.DagsterInstance.ephemeral()
    tick = register(instance, resources)
    assert [r.partition_key for r in tick.run_requests] == ["2024/06/a%2Cb.ndjson"]

    result = run_job(instance, resources, partition_key="2024/06/a%2Cb.ndjson")
    assert result.success
    meta = materialization(result, "enriched_records")
    assert REQUEST_METADATA <= set(meta)
    assert (meta["rows_in"], meta["rows_out"], meta["rejects"]) == (1000, 999, 1)
    assert meta["requests"] == api.stats()["requests"] > 1000  # the 503s were retried
    assert meta["retries_by_cause"] == {"http_503": meta["requests"] - 1000}
    assert meta["dead_letters_by_reason"] == {"http_400": 1} and meta["breaker_openings"] == 0
    assert meta["latency_p50_ms"] <= meta["latency_p95_ms"] <= meta["latency_p99_ms"]
    assert materialization(result, "enrichment_dead_letters")["dead_letters"] == 1
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"every_record_accounted_for": True, "dead_letters_within_limit": True}
    assert instance.get_materialized_partitions(dg.AssetKey("enriched_records")) == {"2024/06/a%2Cb.ndjson"}

    out = Path(store.uri("enrichment/output/2024/06/a%2Cb.ndjson"))
    enriched = [r for p in sorted(out.glob("enriched/*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert [r["id"] for r in enriched] == [i for i in ids if i != "r17"]
    assert all(r["score"] == expected_fields(r["id"])["score"] for r in enriched)
    assert json.loads((out / "summary.json").read_text())["balanced"] is True


def test_a_failing_api_fails_the_run_with_every_record_accounted_and_the_retry_sends_only_the_rest(api, store):
    ids = put_ndjson(store, "f.ndjson", 2000)
    api.configure(fail_status=503, fail_after=700)  # the API breaks after 700 requests
    resources = resources_for(store, api)
    instance = dg.DagsterInstance.ephemeral()
    register(instance, resources)

    failed = run_job(instance, resources, partition_key="f.ndjson", raise_on_error=False)
    assert not failed.success
    failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data
    meta = {k: v.value for k, v in failure.user_failure_data.metadata.items()}
    assert meta["records"] == 2000 and meta["balanced"] is True and meta["breaker_openings"] == 1
    assert meta["enriched"] + meta["dead_letters"] + meta["unfinished"] == 2000
    assert meta["dead_letters"] == 0 and meta["unfinished"] >= 2000 - 700
    assert meta["chunks_written"] >= 1 and meta["enriched"] == 200 * meta["chunks_written"]
    assert "circuit breaker" in failure.user_failure_data.description

    chunks_dir = Path(store.uri("enrichment/output/f.ndjson/chunks"))
    written = {int(p.name.split(".")[0]) for p in chunks_dir.glob("*.json")}
    assert len(written) == meta["chunks_written"]

    api.configure(fail_status=None)
    api.reset()
    retried = run_job(instance, resources, partition_key="f.ndjson")
    assert retried.success
    resumed = materialization(retried, "enriched_records")
    assert resumed["chunks_resumed"] == meta["chunks_written"] and resumed["rows_out"] == 2000
    sent = api.stats(ids=True)["ids"]
    unwritten = {i for k, i in enumerate(ids) if k // 200 not in written}
    assert set(sent) == unwritten and resumed["requests"] == len(unwritten)  # only what was not written


def test_several_files_in_one_run(api, store):
    for name in ("a", "b", "c"):
        put_ndjson(store, f"{name}.ndjson", 300, prefix=name)
    resources = resources_for(store, api)
    instance = dg.DagsterInstance.ephemeral()
    register(instance, resources)
    keys = sorted(instance.get_dynamic_partitions(enrichment_files.name))
    result = run_job(instance, resources, keys=keys)
    meta = materialization(result, "enriched_records")
    assert (meta["files"], meta["rows_in"], meta["rows_out"]) == (3, 900, 900)
    assert instance.get_materialized_partitions(dg.AssetKey("enriched_records")) == set(keys)


def test_the_api_key_from_the_environment_stays_out_of_metadata_and_logs(api, store, monkeypatch):
    secret = f"key-{uuid.uuid4().hex}"
    monkeypatch.setenv("TEST_ENRICHMENT_KEY", secret)
    api.configure(api_key=secret)
    put_ndjson(store, "f.ndjson", 100)
    resources = resources_for(store, api, api_key=dg.EnvVar("TEST_ENRICHMENT_KEY"))
    instance = dg.DagsterInstance.ephemeral()
    register(instance, resources)
    result = run_job(instance, resources, partition_key="f.ndjson")
    assert materialization(result, "enriched_records")["rows_out"] == 100  # the key was sent
    logged = "\n".join(entry.user_message for entry in instance.all_logs(result.run_id))
    assert "API key set" in logged  # the log says there is one...
    everything = logged + " ".join(str(e) for e in result.all_events) + repr(resources["enrichment_api"])
    assert secret not in everything  # ...and nothing shows it


def test_enrichment_definitions_load_with_an_object_store(tmp_path):
    defs = dg.Definitions.merge(
        enrichment.defs, dg.Definitions(resources={"object_store": LocalDirectoryObjectStore(root=str(tmp_path))})
    )
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("enrichment").partitions_def == enrichment_files
    assert defs.resolve_sensor_def("enrichment_files_sensor") is not None
    assert {k.path[-1] for k in defs.resolve_asset_graph().get_all_asset_keys()} == {
        "enrichment_input", "enriched_records", "enrichment_dead_letters",
    }


def test_a_malformed_input_fails_its_check_naming_file_and_line(api, store):
    with store.open_write("enrichment/input/bad.csv") as f:
        f.write(b"id,name\nr1,a,extra\n")
    resources = resources_for(store, api)
    instance = dg.DagsterInstance.ephemeral()
    register(instance, resources)
    result = run_job(instance, resources, partition_key="bad.csv", raise_on_error=False)
    assert not result.success and api.stats()["requests"] == 0
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "enrichment_input"
    assert "bad.csv: line 2: 3 fields where the header has 2" in failure.step_failure_data.user_failure_data.description


def test_the_code_location_loads_with_the_enrichment_definitions_merged_in():
    """What orchestration/definitions.py is to add: its Definitions merged with these."""
    import orchestration.definitions as location

    defs = dg.Definitions.merge(location.defs, enrichment.defs)
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("enrichment").name == "enrichment"
    assert defs.resolve_sensor_def("enrichment_files_sensor") is not None

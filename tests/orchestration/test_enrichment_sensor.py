"""The enrichment sensor, against a local directory and a real S3 API (moto on loopback):
one partition per input file, one run per new or replaced file (once per version), deleted
files lose their partition, other objects are ignored, and at most MAX_RUNS_PER_TICK runs
are requested per tick with the rest picked up by later ticks."""

from __future__ import annotations

import json
import uuid

import dagster as dg
import pytest

from assets.enrichment.settings import EnrichmentSettings
from local_services.s3_server import TEST_CREDENTIALS, create_bucket
from orchestration import enrichment_sensor
from orchestration.enrichment_sensor import enrichment_files_sensor
from partitions.enrichment import enrichment_files
from resources.object_store import LocalDirectoryObjectStore
from resources.s3_object_store import S3ObjectStore

PREFIX = EnrichmentSettings().input_prefix


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalDirectoryObjectStore(root=str(tmp_path / "store"))
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"enrichment-{uuid.uuid4().hex[:16]}"
    create_bucket(endpoint, bucket)
    return S3ObjectStore(bucket=bucket, endpoint_url=endpoint, **TEST_CREDENTIALS)


class Ticks:
    """Sensor ticks on one instance, carrying the cursor and applying partition requests."""

    def __init__(self, store):
        self.instance = dg.DagsterInstance.ephemeral()
        self.resources = {"object_store": store, "enrichment_settings": EnrichmentSettings()}
        self.cursor = None

    def tick(self) -> dg.SensorResult:
        with dg.build_sensor_context(instance=self.instance, resources=self.resources, cursor=self.cursor) as context:
            result = enrichment_files_sensor(context)
        for request in result.dynamic_partitions_requests or []:
            if isinstance(request, dg.AddDynamicPartitionsRequest):
                self.instance.add_dynamic_partitions(enrichment_files.name, list(request.partition_keys))
            else:
                for key in request.partition_keys:
                    self.instance.delete_dynamic_partition(enrichment_files.name, key)
        self.cursor = result.cursor if result.cursor is not None else self.cursor
        return result

    @property
    def partitions(self) -> set[str]:
        return set(self.instance.get_dynamic_partitions(enrichment_files.name))


def put(store, path: str, data: bytes = b'{"id": 1}\n') -> str:
    with store.open_write(f"{PREFIX}/{path}") as f:
        f.write(data)
    return store.stat(f"{PREFIX}/{path}").etag


def runs(result: dg.SensorResult) -> dict[str, str]:
    return {r.partition_key: r.run_key for r in result.run_requests or []}


def test_new_files_get_a_partition_and_one_run_each_and_other_objects_are_ignored(store):
    a = put(store, "a.csv", b"id\n1\n")
    b = put(store, "2024/b,c.json", b"[]")
    put(store, "notes.txt")
    put(store, ".upload.csv")
    ticks = Ticks(store)
    first = ticks.tick()
    assert ticks.partitions == {"a.csv", "2024/b%2Cc.json"}
    assert runs(first) == {"a.csv": f"a.csv@{a}", "2024/b%2Cc.json": f"2024/b%2Cc.json@{b}"}
    assert json.loads(ticks.cursor) == {"a.csv": a, "2024/b%2Cc.json": b}

    again = ticks.tick()  # nothing new
    assert not again.run_requests and not again.dynamic_partitions_requests and again.skip_reason is not None


def test_a_replaced_file_is_enriched_again_and_a_deleted_one_loses_its_partition(store):
    put(store, "a.ndjson")
    put(store, "b.parquet", b"PAR1")
    ticks = Ticks(store)
    ticks.tick()
    replaced = put(store, "a.ndjson", b'{"id": 2}\n{"id": 3}\n')
    store.delete(f"{PREFIX}/b.parquet")
    result = ticks.tick()
    assert runs(result) == {"a.ndjson": f"a.ndjson@{replaced}"}
    assert ticks.partitions == {"a.ndjson"}
    assert set(json.loads(ticks.cursor)) == {"a.ndjson"}  # the deleted file left the cursor


def test_at_most_max_runs_per_tick_and_the_rest_later(store, monkeypatch):
    monkeypatch.setattr(enrichment_sensor, "MAX_RUNS_PER_TICK", 2)
    for i in range(5):
        put(store, f"f{i}.jsonl")
    ticks = Ticks(store)
    requested = []
    for _ in range(4):
        requested += list(runs(ticks.tick()))
    assert ticks.partitions == {f"f{i}.jsonl" for i in range(5)}  # all registered on the first tick
    assert sorted(requested) == [f"f{i}.jsonl" for i in range(5)]  # each requested exactly once

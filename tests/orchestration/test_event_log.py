"""BatchingSqliteEventLogStorage: the local instance's event log writes a run's asset events
in batches, and what it stores reads back the same as Dagster's own SQLite event log."""

import dagster as dg
import pytest
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from orchestration.event_log import BatchingSqliteEventLogStorage

parts = dg.DynamicPartitionsDefinition(name="things")
KEYS = [f"thing-{i:03d}" for i in range(120)]


@dg.asset(partitions_def=parts, backfill_policy=dg.BackfillPolicy.multi_run(200))
def first(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"keys": len(context.partition_keys)})


@dg.asset(partitions_def=parts, deps=[first], backfill_policy=dg.BackfillPolicy.multi_run(200))
def second(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"keys": len(context.partition_keys)})


def instance_in(home, batching: bool) -> dg.DagsterInstance:
    if batching:
        (home / "dagster.yaml").write_text(
            "event_log_storage:\n  module: orchestration.event_log\n  class: BatchingSqliteEventLogStorage\n"
            f"  config:\n    base_dir: {home}\n"
        )
    return dg.DagsterInstance.from_config(str(home)) if batching else dg.DagsterInstance.local_temp(str(home))


def run_range(instance: dg.DagsterInstance) -> None:
    instance.add_dynamic_partitions(parts.name, KEYS)
    job = dg.Definitions(assets=[first, second], jobs=[dg.define_asset_job("both", executor_def=dg.in_process_executor)])
    result = job.resolve_job_def("both").execute_in_process(
        instance=instance, tags={ASSET_PARTITION_RANGE_START_TAG: KEYS[0], ASSET_PARTITION_RANGE_END_TAG: KEYS[-1]}
    )
    assert result.success


def stored(instance: dg.DagsterInstance) -> dict:
    """What the UI and the backfill daemon read back: partitions, counts, latest events."""
    out = {}
    (run,) = instance.get_runs()
    for key in (dg.AssetKey("first"), dg.AssetKey("second")):
        records = instance.fetch_materializations(key, limit=1000).records
        (entry,) = [r.asset_entry for r in instance.get_asset_records([key])]  # the asset_keys row
        out[key] = {
            "materialized": instance.get_materialized_partitions(key),
            "events": sorted(r.partition_key for r in records),
            "latest": instance.get_latest_materialization_event(key).asset_materialization.metadata["keys"].value,
            "row's last materialization": entry.last_materialization_record.partition_key,
            "row's last materialization is the latest": entry.last_materialization_record.storage_id
            == max(r.storage_id for r in records),
            "row's last run is the run": entry.last_run_id == run.run_id,
            "planned in the run": instance.get_latest_planned_materialization_info(key, KEYS[7]).run_id == run.run_id,
        }
    return out


def test_batched_writes_store_what_single_writes_store(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")
    single_calls = []
    original = SqliteEventLogStorage.store_event

    def counting(self, event):
        single_calls.append(event.dagster_event_type if event.is_dagster_event else None)
        return original(self, event)

    monkeypatch.setattr(SqliteEventLogStorage, "store_event", counting)
    (tmp_path / "plain").mkdir()
    (tmp_path / "batched").mkdir()
    plain = instance_in(tmp_path / "plain", batching=False)
    run_range(plain)
    plain_asset_writes = sum(1 for kind in single_calls if kind is not None and "ASSET" in kind.value)
    single_calls.clear()

    batched = instance_in(tmp_path / "batched", batching=True)
    assert isinstance(batched.event_log_storage, BatchingSqliteEventLogStorage)
    run_range(batched)
    batched_asset_writes = sum(1 for kind in single_calls if kind is not None and "ASSET" in kind.value)

    assert plain_asset_writes >= 4 * len(KEYS)  # planned and materialized, per partition and asset
    assert batched_asset_writes == 0  # all of them went through store_event_batch
    assert stored(batched) == stored(plain)
    assert stored(batched)[dg.AssetKey("second")]["materialized"] == set(KEYS)
    for figures in stored(batched).values():
        assert figures["row's last materialization is the latest"] and figures["row's last run is the run"]
        assert figures["planned in the run"]


def test_other_events_still_go_one_by_one(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")
    instance = instance_in(tmp_path, batching=True)
    run_range(instance)
    (run,) = instance.get_runs()
    kinds = {e.dagster_event_type.value for e in instance.all_logs(run.run_id) if e.is_dagster_event}
    assert {"STEP_START", "STEP_SUCCESS", "ASSET_MATERIALIZATION", "ASSET_MATERIALIZATION_PLANNED"} <= kinds
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.SUCCESS

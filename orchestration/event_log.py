"""The local instance's event log: Dagster's SQLite event log, writing batches at once.

A run over a range of partitions records, per partition and asset, a planned and a
materialization event. Dagster's SQLite store writes each alone: a new SQLAlchemy engine
and two SQLite connections (the run's shard and the index) for every event, about 9 ms
on this machine, which made the books pipeline's event log cost more than its work
(docs/PERFORMANCE.md). Dagster hands such events over in batches when
DAGSTER_EVENT_BATCH_SIZE is set, but the SQLite store only loops over them; this one
writes a batch of asset events with one statement per shard (each event serialized once),
and each asset's row in asset_keys once per kind of event rather than once per event: the
same rows in the same tables.

Used by dagster.yaml (local work). Production instances use Postgres (dagster-postgres).
"""

import os
from collections import defaultdict
from collections.abc import Sequence

from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS, EVENT_TYPE_TO_PIPELINE_RUN_STATUS
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.schema import AssetKeyTable, SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

# Events Dagster may hold back and hand over together (read by Dagster in every process
# that records events: run workers here, the webserver and daemon through `make dev`).
EVENT_BATCH_SIZE = "1000"


def enable_event_batches() -> None:
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", EVENT_BATCH_SIZE)


def _plain_asset_event(event: EventLogEntry) -> bool:
    """An asset event that needs nothing but its rows (no check or run-status side effects)."""
    kind = event.dagster_event_type if event.is_dagster_event else None
    return (
        kind in ASSET_EVENTS
        and bool(event.dagster_event.asset_key)
        and kind not in ASSET_CHECK_EVENTS
        and kind not in EVENT_TYPE_TO_PIPELINE_RUN_STATUS
    )


class BatchingSqliteEventLogStorage(SqliteEventLogStorage):
    """SqliteEventLogStorage whose store_event_batch writes asset events together.

    Config: `base_dir`, the instance's home (`{env: DAGSTER_HOME}`); events go to
    <base_dir>/history/runs, where Dagster's default SQLite storage keeps them."""

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(os.path.join(config_value["base_dir"], "history", "runs"), inst_data=inst_data)

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        if not events or not all(_plain_asset_event(e) for e in events):
            super().store_event_batch(events)  # one at a time, as Dagster does
            return
        rows = [self._event_to_row(event) for event in events]  # serialized once, for both shards
        by_run: dict[str, list[dict]] = defaultdict(list)
        for row in rows:
            by_run[row["run_id"]].append(row)
        for run_id, run_rows in by_run.items():
            with self.run_connection(run_id) as conn:  # one executemany in one transaction per run shard
                conn.execute(SqlEventLogStorageTable.insert(), run_rows)
        with self.index_transaction() as conn:  # and one transaction for the cross-run index
            inserted = conn.execute(
                SqlEventLogStorageTable.insert().returning(SqlEventLogStorageTable.c.id, sort_by_parameter_order=True),
                rows,
            )
            ids = [row.id for row in inserted]
            self._store_asset_event_tags(conn, list(events), ids)
            has_index_cols = self._has_asset_key_index_cols_on_connection(conn)
            for event, event_id in _latest_per_asset_and_kind(events, ids):
                values = self._get_asset_entry_values(event, event_id, has_index_cols)
                if values:
                    self._upsert_asset_key(conn, event.dagster_event.asset_key.to_string(), values)

    @staticmethod
    def _upsert_asset_key(conn, asset_key: str, values: dict) -> None:
        """What SqlEventLogStorage._store_asset_event writes, given the values."""
        updated = conn.execute(AssetKeyTable.update().values(**values).where(AssetKeyTable.c.asset_key == asset_key))
        if updated.rowcount == 0:
            conn.execute(AssetKeyTable.insert().values(asset_key=asset_key, **values))


def _latest_per_asset_and_kind(events: Sequence[EventLogEntry], ids: Sequence[int]) -> list[tuple[EventLogEntry, int]]:
    """The events whose asset-key row updates survive the batch, in their order.

    Each column of an asset's row in the asset_keys table takes its value from the latest
    event of certain kinds (last_materialization from materializations; last_run_id from
    materializations and planned events; the timestamp from any). Applying, in order, the
    latest event of each kind for each asset therefore leaves the row as applying all of
    them would, with one or two writes per asset instead of one per event."""
    latest: dict[tuple[str, object], int] = {}
    for position, event in enumerate(events):
        latest[(event.dagster_event.asset_key.to_string(), event.dagster_event_type)] = position
    return [(events[p], ids[p]) for p in sorted(latest.values())]

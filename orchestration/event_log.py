"""The local instance's event log: Dagster's SQLite event log, writing batches at once.

A run over a range of partitions records, per partition and asset, a planned and a
materialization event. Dagster's SQLite store writes each alone: a new SQLAlchemy engine
and two SQLite connections (the run's shard and the index) for every event, about 9 ms
on this machine, which made the books pipeline's event log cost more than its work
(docs/PERFORMANCE.md). Dagster hands such events over in batches when
DAGSTER_EVENT_BATCH_SIZE is set, but the SQLite store only loops over them; this one
writes a batch of asset events in one connection per shard and one index transaction,
the same rows in the same tables.

Used by dagster.yaml (local work). Production instances use Postgres (dagster-postgres).
"""

import os
from collections import defaultdict
from collections.abc import Sequence

from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS, EVENT_TYPE_TO_PIPELINE_RUN_STATUS
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sqlalchemy_compat import db_result

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
        by_run: dict[str, list[EventLogEntry]] = defaultdict(list)
        for event in events:
            by_run[event.run_id].append(event)
        for run_id, run_events in by_run.items():
            with self.run_connection(run_id) as conn:  # one transaction for the run's shard
                for event in run_events:
                    conn.execute(self.prepare_insert_event(event))
        with self.index_transaction() as conn:  # and one for the cross-run index
            ids = []
            for event in events:
                with db_result(conn, self.prepare_insert_event(event)) as result:
                    ids.append(result.inserted_primary_key[0])
            self._store_asset_event_tags(conn, list(events), ids)
            for event, event_id in zip(events, ids):
                self._store_asset_event(conn, event, event_id)

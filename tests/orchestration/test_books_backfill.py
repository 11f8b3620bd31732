"""A backfill of the books through Dagster's own backfill machinery: the daemon's backfill
iteration, run in this process over the code location as it is served
(orchestration.definitions), on a SQLite instance with the local event log
(orchestration/event_log.py) and a synchronous run launcher.

It shows BackfillPolicy.multi_run at work: N books become ceil(N / BOOKS_PARTITIONS_PER_RUN)
runs, and a second backfill of the same books calls no model. BOOKS_BACKFILL_TEST_BOOKS
sets N (default 300)."""

import importlib
import logging
import math
import os
import time
import uuid

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.instance_for_test import instance_for_test
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.backfill import execute_backfill_iteration

from engine.books.sample_books import write_books
from partitions.books import books

BOOKS = int(os.environ.get("BOOKS_BACKFILL_TEST_BOOKS", "300"))
PER_RUN = 100
ASSETS = [dg.AssetKey(name) for name in ("book_text", "book_summary", "book_embedding", "book_search_index")]


@pytest.fixture
def code_location(tmp_path, monkeypatch):
    """The code location's definitions, loaded fresh for a home in tmp_path."""
    monkeypatch.setenv("FLOODGATE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BOOKS_WORKERS", "1")
    monkeypatch.setenv("FLOODGATE_PROGRESS_SECONDS", "600")
    import assets.books.settings
    import orchestration.definitions

    assert assets.books.settings.PARTITIONS_PER_RUN == PER_RUN
    importlib.reload(orchestration.definitions)
    yield tmp_path / "home"
    monkeypatch.undo()
    importlib.reload(orchestration.definitions)


def backfill(instance, context, keys: list[str]) -> list:
    """Request a backfill of the books assets over `keys`, iterate the daemon until it is
    done, and return its runs."""
    backfill_id = uuid.uuid4().hex[:8]
    instance.add_backfill(
        PartitionBackfill.from_asset_partitions(
            backfill_id=backfill_id,
            asset_graph=context.create_request_context().asset_graph,
            partition_names=keys,
            asset_selection=ASSETS,
            backfill_timestamp=time.time(),
            tags={},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title="books",
            description=None,
            run_config=None,
        )
    )
    for _ in range(20):  # each iteration submits the runs it can; runs here finish as submitted
        list(execute_backfill_iteration(context, logging.getLogger("backfill")))
        if instance.get_backfill(backfill_id).status != BulkActionStatus.REQUESTED:
            break
    assert instance.get_backfill(backfill_id).status == BulkActionStatus.COMPLETED_SUCCESS
    return instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))


def model_calls(instance, runs, asset: str) -> int:
    """Model calls a backfill's runs made for one asset (each run records its batch's count
    on every partition it materialized: count it once per run)."""
    total = 0
    for run in runs:
        for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
            materialization = entry.asset_materialization
            if materialization.asset_key == dg.AssetKey(asset):
                total += materialization.metadata["model_calls"].value
                break
    return total


def test_a_backfill_runs_in_batches_and_a_second_one_calls_no_model(code_location, monkeypatch):
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")
    keys = sorted(book.book_id for book in write_books(code_location / "data", BOOKS, words=60, seed=4))
    # the local instance's event log (dagster.yaml), as `make dev` runs backfills
    event_log = {
        "module": "orchestration.event_log",
        "class": "BatchingSqliteEventLogStorage",
        "config": {"base_dir": str(code_location.parent / "dagster")},
    }
    with instance_for_test(
        overrides={"event_log_storage": event_log}, synchronous_run_coordinator=True, synchronous_run_launcher=True
    ) as instance:
        assert type(instance.event_log_storage).__name__ == "BatchingSqliteEventLogStorage"
        origin = InProcessCodeLocationOrigin(
            LoadableTargetOrigin(module_name="orchestration.definitions", attribute="defs", working_directory=os.getcwd())
        )
        with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as context:
            instance.add_dynamic_partitions(books.name, keys)

            first = backfill(instance, context, keys)
            assert len(first) == math.ceil(BOOKS / PER_RUN)
            assert {run.status for run in first} == {DagsterRunStatus.SUCCESS}
            for asset in ASSETS:
                assert instance.get_materialized_partitions(asset) == set(keys)
            assert model_calls(instance, first, "book_summary") == BOOKS
            assert model_calls(instance, first, "book_embedding") == BOOKS

            second = backfill(instance, context, keys)
            assert len(second) == math.ceil(BOOKS / PER_RUN)
            assert model_calls(instance, second, "book_summary") == 0
            assert model_calls(instance, second, "book_embedding") == 0

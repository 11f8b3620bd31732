"""The books pipeline end to end on the embedded defaults: generated books in a directory,
the real extractive summarizer and all-MiniLM-L6-v2, the DuckDB index. Runs cover ranges
of dynamic partitions, as a multi_run backfill launches them."""

import gzip
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from assets import books as books_assets
from assets.books.settings import BooksSettings
from engine.books.sample_books import write_books
from orchestration.books_sensor import books_partitions_sensor
from orchestration.cli import main, search
from partitions.books import books
from resources.book_models import LocalEmbedder, LocalSummarizer
from resources.object_store import LocalDirectoryObjectStore
from resources.search_index import DuckDBSearchIndex

STEPS = ["book_text", "book_summary", "book_embedding", "book_search_index"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def resources_for(home: Path, **settings) -> dict:
    return {
        "object_store": LocalDirectoryObjectStore(root=str(home / "data")),
        "summarizer": LocalSummarizer(),
        "embedder": LocalEmbedder(),
        "search_index": DuckDBSearchIndex(path=str(home / "books_index.duckdb")),
        "books_settings": BooksSettings(progress_interval_seconds=60, **settings),
    }


def register(instance: dg.DagsterInstance, resources: dict) -> list[str]:
    """One tick of the books sensor: the partitions it adds, applied to the instance."""
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        result = books_partitions_sensor(context)
    for request in result.dynamic_partitions_requests or []:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(books.name, list(request.partition_keys))
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(books.name, key)
    return instance.get_dynamic_partitions(books.name)


def run_range(instance, resources, keys: list[str]) -> dg.ExecuteInProcessResult:
    """One run over a range of book partitions, as a multi_run backfill starts it."""
    defs = dg.Definitions.merge(books_assets.defs, dg.Definitions(resources=resources))
    job = defs.resolve_job_def("books")
    result = job.execute_in_process(
        instance=instance,
        tags={ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]},
    )
    assert result.success
    return result


def step_metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    out = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        out.setdefault(materialization.asset_key.path[-1], materialization.metadata)
    return out


def value(metadata, name):
    return metadata[name].value


def test_a_range_run_processes_every_book_and_a_second_run_calls_no_model(home):
    sample = write_books(home / "data", 24, words=400, seed=1)
    resources = resources_for(home, workers=2)
    instance = dg.DagsterInstance.ephemeral()
    keys = register(instance, resources)
    assert sorted(keys) == sorted(b.book_id for b in sample)

    first = run_range(instance, resources, keys)
    metadata = step_metadata(first)
    for step in STEPS:
        assert value(metadata[step], "books") == 24, step  # the whole range ran in this one run
        assert value(metadata[step], "failed") == 0, step
    assert value(metadata["book_summary"], "model_calls") == 24
    assert value(metadata["book_embedding"], "model_calls") == 24
    for step in STEPS:
        materialized = instance.get_materialized_partitions(dg.AssetKey(step))
        assert materialized == set(keys), step
    assert resources["search_index"].count() == 24

    again = step_metadata(run_range(instance, resources, keys))
    assert value(again["book_summary"], "model_calls") == 0
    assert value(again["book_embedding"], "model_calls") == 0
    assert value(again["book_summary"], "skipped_unchanged") == 24

    # one book changes: only it is summarized and embedded again
    changed = home / "data" / "books" / "texts" / f"{sample[0].book_id}.txt"
    changed.write_text(changed.read_text() + "\n\nAn epilogue about lighthouses and storms, long after.\n")
    third = step_metadata(run_range(instance, resources, keys))
    assert value(third["book_summary"], "model_calls") == 1
    assert value(third["book_text"], "done") == 1

    # another summarizer setting is another model version: every book is summarized again
    resources["summarizer"] = LocalSummarizer(max_words=120)
    fourth = step_metadata(run_range(instance, resources, keys))
    assert value(fourth["book_summary"], "model_calls") == 24


def test_search_finds_the_book_a_query_was_written_from(home, monkeypatch, capsys):
    sample = write_books(home / "data", 40, words=500, seed=2)
    resources = resources_for(home, workers=1)
    instance = dg.DagsterInstance.ephemeral()
    keys = register(instance, resources)
    run_range(instance, resources, keys)
    monkeypatch.setenv("FLOODGATE_HOME", str(home))
    found = 0
    for book in sample[:10]:
        top = [hit[0] for hit in search(book.query(), k=3, mode="hybrid")]
        found += book.book_id in top
    assert found >= 9
    for mode in ("vector", "keyword"):
        hits = search(sample[0].query(), k=3, mode=mode)
        assert hits and len(hits) <= 3
    # the command prints rank, score, book and title
    assert main(["search", sample[4].query(), "--k", "2"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert sample[4].book_id in first and sample[4].title in first


def test_bad_books_fail_alone_and_deleted_books_leave_the_index(home):
    sample = write_books(home / "data", 30, words=300, seed=3, gzip_every=0)
    texts = home / "data" / "books" / "texts"
    (texts / f"{sample[0].book_id}.txt").write_bytes(b"")  # empty
    latin1 = (texts / f"{sample[1].book_id}.txt").read_text() + " Caf\xe9 cr\xe8me."
    (texts / f"{sample[1].book_id}.txt").write_bytes(latin1.encode("latin-1"))  # not UTF-8
    (texts / f"{sample[2].book_id}.json").write_text("{not json")  # a broken sidecar
    resources = resources_for(home, workers=1)
    instance = dg.DagsterInstance.ephemeral()
    keys = register(instance, resources)
    metadata = step_metadata(run_range(instance, resources, keys))
    assert value(metadata["book_text"], "failed") == 1  # the empty one, and only it
    assert "is empty" in metadata["book_text"]["failures"].value
    assert value(metadata["book_text"], "bytes_not_utf8") == 2
    assert value(metadata["book_search_index"], "documents_written") == 29
    assert resources["search_index"].titles([sample[2].book_id]) == {sample[2].book_id: None}  # no metadata

    # more failures than the threshold fail the run, naming the books
    for book in sample[3:8]:
        (texts / f"{book.book_id}.txt").write_bytes(gzip.compress(b"")[:5])  # truncated gzip
    defs = dg.Definitions.merge(books_assets.defs, dg.Definitions(resources=resources))
    result = defs.resolve_job_def("books").execute_in_process(
        instance=instance,
        tags={ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]},
        raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error.message
    assert "6 of 30 books failed" in failure and sample[3].book_id in failure

    # deleted texts: the sensor removes their partitions and their documents
    for book in sample[10:12]:
        (texts / f"{book.book_id}.txt").unlink()
    remaining = register(instance, resources)
    assert len(remaining) == 28 and sample[10].book_id not in remaining
    assert resources["search_index"].titles([sample[10].book_id, sample[11].book_id]) == {}


def test_new_books_are_requested_by_automation_as_one_backfill(home):
    from assets.books import books_automation_sensor

    write_books(home / "data", 150, words=60, seed=6)
    resources = resources_for(home)
    instance = dg.DagsterInstance.ephemeral()
    defs = dg.Definitions.merge(books_assets.defs, dg.Definitions(resources=resources))
    nothing = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert nothing.total_requested == 0
    keys = register(instance, resources)
    ticked = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=nothing.cursor)
    assert ticked.total_requested == 4 * len(keys)  # every step of every new book
    assert books_automation_sensor.emit_backfills  # one backfill, batched by BackfillPolicy.multi_run
    assert dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=ticked.cursor).total_requested == 0

"""The books sensor: keeps one dynamic partition per book text in the object store.

It registers new books and removes deleted ones (with their index documents and per-book
results); it requests no runs. Runs come in batches from a backfill over the partitions
(BackfillPolicy.multi_run: one run per PARTITIONS_PER_RUN books), launched from the UI or
by `floodgate`-side automation, never one run per book.
"""

import dagster as dg

from assets.books.settings import BooksSettings
from engine.books.source import book_id
from partitions.books import books
from resources.object_store import ObjectStore
from resources.search_index import SearchIndex

_RESULTS = ("book", "summary", "embedding")


@dg.sensor(
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds a books partition for each new book text and removes those of deleted books.",
)
def books_partitions_sensor(
    context: dg.SensorEvaluationContext,
    object_store: ObjectStore,
    books_settings: BooksSettings,
    search_index: SearchIndex,
) -> dg.SensorResult:
    prefix = books_settings.texts_prefix.rstrip("/") + "/"
    present = {b for info in object_store.list(prefix) if (b := book_id(info.key, prefix)) is not None}
    known = set(context.instance.get_dynamic_partitions(books.name))
    new, gone = sorted(present - known), sorted(known - present)
    if gone:
        removed = search_index.delete(gone)
        layout = books_settings.layout()
        for book in gone:
            for name in _RESULTS:
                object_store.delete(layout.result(book, name))
        context.log.info(f"{len(gone)} books deleted from {object_store.uri(prefix)}: {removed} index documents removed")
    if new:
        context.log.info(f"{len(new)} new books under {object_store.uri(prefix)}")
    requests = []
    if new:
        requests.append(books.build_add_request(new))
    if gone:
        requests.append(books.build_delete_request(gone))
    if not requests:
        return dg.SensorResult(skip_reason=dg.SkipReason(f"no new or deleted books under {object_store.uri(prefix)}"))
    return dg.SensorResult(dynamic_partitions_requests=requests)

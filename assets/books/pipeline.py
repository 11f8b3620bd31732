"""book_text → book_summary → book_embedding → book_search_index, one dynamic partition per
book, many books per run.

A backfill over N books runs ceil(N / PARTITIONS_PER_RUN) runs (BackfillPolicy.multi_run);
each step loops over its run's `context.partition_keys`. Per-book results live under
deterministic keys (engine/books/records.py), so a retried or repeated run skips every book
whose inputs and models are unchanged, without a model call.
"""

import dagster as dg

from assets.books.batch import batch_result, collect
from assets.books.settings import PARTITIONS_PER_RUN, BooksSettings
from engine.books.stages import DONE, FAILED, BookOutcome, book_document, embed_books, examine_text, text_sizes
from engine.books.workers import in_threads, summarize_in_workers
from engine.measure import StepMeasure
from partitions.books import books
from resources.book_models import Embedder, LocalSummarizer, Summarizer
from resources.object_store import ObjectStore
from resources.search_index import SearchIndex

GROUP = "books"
_BATCHED = dict(
    partitions_def=books,
    group_name=GROUP,
    backfill_policy=dg.BackfillPolicy.multi_run(PARTITIONS_PER_RUN),
    # a newly registered book (a new partition, missing) is materialized by the automation
    # sensor, which emits a backfill: batched by the policy above, never a run per book
    automation_condition=dg.AutomationCondition.eager(),
)


@dg.asset(
    **_BATCHED,
    kinds={"s3"},
    description=(
        "Each book's text as it is in the object store (<texts_prefix>/<id>.txt or .txt.gz, UTF-8, "
        "with an optional <id>.json of title, author, language and year): its content hash, size, "
        "bytes that were not UTF-8 (read as U+FFFD and counted) and metadata, in "
        "<results_prefix>/<id>/book.json. An unchanged object (same ETag) is not read again."
    ),
)
def book_text(context: dg.AssetExecutionContext, object_store: ObjectStore, books_settings: BooksSettings) -> dg.MaterializeResult:
    settings, keys = books_settings, context.partition_keys
    layout = settings.layout()
    with StepMeasure() as measure:
        work = in_threads(lambda book: examine_text(object_store, layout, book), keys, settings.workers)
        outcomes = collect(context, "book_text", work, len(keys), settings.progress_interval_seconds)
    return batch_result(
        "book_text",
        measure,
        outcomes,
        settings.max_failure_fraction,
        text_bytes=dg.MetadataValue.int(sum(o.bytes for o in outcomes)),
        bytes_not_utf8=dg.MetadataValue.int(sum(o.bad_bytes for o in outcomes)),
    )


@dg.asset(
    **_BATCHED,
    deps=[book_text],
    description=(
        "A summary of each book (<results_prefix>/<id>/summary.json), from the summarizer resource: "
        "extractive locally, Amazon Bedrock in production. Skipped without a model call when the "
        "text's hash and the summarizer's name and version are those of the existing summary."
    ),
)
def book_summary(
    context: dg.AssetExecutionContext, object_store: ObjectStore, books_settings: BooksSettings, summarizer: Summarizer
) -> dg.MaterializeResult:
    settings, keys = books_settings, context.partition_keys
    layout = settings.layout()
    with StepMeasure() as measure:
        # a remote model waits on the network, not the CPU: worth its workers whatever the size
        text_bytes = sum(text_sizes(object_store, layout, keys)) if isinstance(summarizer, LocalSummarizer) else None
        work = summarize_in_workers(object_store, summarizer, layout, keys, settings.workers, text_bytes)
        outcomes = collect(context, "book_summary", work, len(keys), settings.progress_interval_seconds)
    return batch_result(
        "book_summary",
        measure,
        outcomes,
        settings.max_failure_fraction,
        input_tokens=dg.MetadataValue.int(sum(o.input_tokens for o in outcomes)),
        output_tokens=dg.MetadataValue.int(sum(o.output_tokens for o in outcomes)),
        cost_usd=dg.MetadataValue.float(round(sum(o.cost_usd for o in outcomes), 6)),
    )


@dg.asset(
    **_BATCHED,
    deps=[book_summary],
    description=(
        "An embedding of each book's summary (<results_prefix>/<id>/embedding.json), in batches: "
        "all-MiniLM-L6-v2 locally (384 dimensions), Bedrock Titan in production. Skipped when the "
        "summary and the embedder's name and version are unchanged."
    ),
)
def book_embedding(
    context: dg.AssetExecutionContext, object_store: ObjectStore, books_settings: BooksSettings, embedder: Embedder
) -> dg.MaterializeResult:
    settings, keys = books_settings, context.partition_keys
    layout = settings.layout()
    with StepMeasure() as measure:
        model = embedder.build(threads=settings.workers)  # loaded once per process and kept; a copy per thread

        def batches():
            for start in range(0, len(keys), settings.embed_batch):
                yield from embed_books(object_store, layout, model, keys[start : start + settings.embed_batch])

        outcomes = collect(context, "book_embedding", batches(), len(keys), settings.progress_interval_seconds)
    return batch_result(
        "book_embedding", measure, outcomes, settings.max_failure_fraction, embedder=f"{model.name}@{model.version}"
    )


@dg.asset(
    **_BATCHED,
    deps=[book_embedding],
    pool="search_index",
    kinds={"duckdb", "opensearch"},
    description=(
        "The search index (embedded DuckDB locally, OpenSearch in production): one document per "
        "book, keyed by its ID, with title, author, language, year, summary and embedding; "
        "vector, keyword and hybrid queries (`floodgate-search`)."
    ),
)
def book_search_index(
    context: dg.AssetExecutionContext, object_store: ObjectStore, books_settings: BooksSettings, search_index: SearchIndex
) -> dg.MaterializeResult:
    settings, keys = books_settings, context.partition_keys
    layout = settings.layout()
    with StepMeasure() as measure:
        documents, outcomes = [], []
        for book in keys:
            document = book_document(object_store, layout, book)
            if document is None:
                outcomes.append(BookOutcome(book, FAILED, "no complete text, summary and embedding to index"))
            else:
                documents.append(document)
        written, failures = search_index.upsert(documents)
        failed = dict(failures)
        outcomes += [
            BookOutcome(d.book_id, FAILED, f"index: {failed[d.book_id]}") if d.book_id in failed else BookOutcome(d.book_id, DONE)
            for d in documents
        ]
        outcomes = collect(context, "book_search_index", outcomes, len(keys), settings.progress_interval_seconds)
    return batch_result(
        "book_search_index",
        measure,
        outcomes,
        settings.max_failure_fraction,
        index=search_index.describe(),
        documents_written=dg.MetadataValue.int(written),
    )

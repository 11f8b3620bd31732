"""The books pipeline: book texts → summaries → embeddings → a search index."""

import dagster as dg

from assets.books.pipeline import GROUP, book_embedding, book_search_index, book_summary, book_text

ASSETS = [book_text, book_summary, book_embedding, book_search_index]

books_job = dg.define_asset_job(
    "books",
    selection=dg.AssetSelection.groups(GROUP),
    description="Summarize, embed and index a batch of books (one run per batch of partitions).",
)

# Materializes new books as they are registered (AutomationCondition.eager on each asset);
# emit_backfills turns a tick's requests into one backfill, split into runs by the assets'
# BackfillPolicy.multi_run.
books_automation_sensor = dg.AutomationConditionSensorDefinition(
    "books_automation",
    target=dg.AssetSelection.groups(GROUP),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=300,
    emit_backfills=True,
)

defs = dg.Definitions(assets=ASSETS, jobs=[books_job], sensors=[books_automation_sensor])

"""The books pipeline: book texts → summaries → embeddings → a search index."""

import dagster as dg

from assets.books.pipeline import GROUP, book_embedding, book_search_index, book_summary, book_text

ASSETS = [book_text, book_summary, book_embedding, book_search_index]

books_job = dg.define_asset_job(
    "books",
    selection=dg.AssetSelection.groups(GROUP),
    executor_def=dg.in_process_executor,  # steps share the run's process; workers are spawned per step
    description="Summarize, embed and index a batch of books (one run per batch of partitions).",
)

defs = dg.Definitions(assets=ASSETS, jobs=[books_job])

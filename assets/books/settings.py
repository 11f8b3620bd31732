"""Settings of the books pipeline."""

import os

import dagster as dg

from engine.books.stages import BooksLayout

# Books per run of a backfill (BackfillPolicy.multi_run): fixed when the code location
# loads, since Dagster plans a backfill's runs from the asset definitions.
PARTITIONS_PER_RUN = int(os.environ.get("BOOKS_PARTITIONS_PER_RUN", "100"))


class BooksSettings(dg.ConfigurableResource):
    """Every setting has a default; orchestration/deployment.py reads overrides from the environment."""

    texts_prefix: str = "books/texts"  # <prefix>/<path>.txt[.gz] and <prefix>/<path>.json
    results_prefix: str = "books/results"  # <prefix>/<book id>/{book,summary,embedding}.json
    # Each run's pool: processes summarizing at once (for a batch whose text pays for
    # starting them, or a remote model) and model copies embedding in threads. 1 locally:
    # there, the parallel work is runs at once (dagster.yaml runs two, one per core), which
    # scaled better than a pool inside one run (docs/PERFORMANCE.md). With Bedrock, raise
    # it (BOOKS_WORKERS) to the number of model calls a run may have in flight.
    workers: int = 1
    embed_batch: int = 256  # books per embedder call
    max_failure_fraction: float = 0.05  # a batch with more failed books than this fails its run
    max_book_mb: float = 1024.0
    progress_interval_seconds: float = 5.0

    def layout(self) -> BooksLayout:
        return BooksLayout(self.texts_prefix, self.results_prefix, self.max_book_mb)

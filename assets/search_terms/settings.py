"""Settings of the search-terms pipeline and the object keys it reads and writes."""

from datetime import date
from typing import Literal

import dagster as dg


class SearchTermsSettings(dg.ConfigurableResource):
    """Every setting has a default; orchestration/deployment.py reads overrides from the environment."""

    reports_prefix: str = "search_terms/reports"  # where weekly reports land: <prefix>/<week>.json[.gz]
    output_prefix: str = "search_terms"  # parsed, rejects and top-3 files: <prefix>/<week>/...
    warehouse_table: str = "search_terms_top3"
    max_reject_fraction: float = 0.001  # a run fails when more records than this are rejected
    total_share_tolerance: float = 1e-6  # how far above 1 a three-product total may round
    chunk_mb: float = 1.5  # MB of the report scanned per task (memory against per-range overhead)
    scan_workers: int = 2  # threads scanning the report at once
    # Parquet codec of the parsed and top-3 files: none is fastest (compression took a third
    # of the parse step's CPU, docs/PERFORMANCE.md); snappy, lz4 or zstd trade speed for size.
    parquet_compression: Literal["none", "snappy", "lz4", "zstd"] = "none"
    progress_interval_seconds: float = 5.0
    publication_lag_days: int = 3  # days after a week ends before the schedule expects its report
    duckdb_memory_limit: str = "512MB"  # for the rare report whose rows are not grouped by term

    def report_candidates(self, week: date) -> list[str]:
        base = f"{self.reports_prefix.rstrip('/')}/{week.isoformat()}"
        return [f"{base}.json", f"{base}.json.gz"]

    def parsed_key(self, week: date) -> str:
        return f"{self.output_prefix.rstrip('/')}/{week.isoformat()}/parsed.parquet"

    def rejects_key(self, week: date) -> str:
        return f"{self.output_prefix.rstrip('/')}/{week.isoformat()}/rejects.ndjson"

    def top3_key(self, week: date) -> str:
        return f"{self.output_prefix.rstrip('/')}/{week.isoformat()}/top3.parquet"

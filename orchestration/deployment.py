"""The environment switch: DAGSTER_DEPLOYMENT=local|prod chooses the resource set, once.

local (the default) needs nothing started: a directory as the object store and a DuckDB
file as the warehouse, both under FLOODGATE_HOME (default ./.floodgate). prod reads every
endpoint and secret from the environment through dg.EnvVar.
"""

from __future__ import annotations

import os
from pathlib import Path

from assets.search_terms.settings import SearchTermsSettings
from resources.object_store import LocalDirectoryObjectStore
from resources.warehouse import DuckDBWarehouse

LOCAL, PROD = "local", "prod"


class DeploymentError(ValueError):
    pass


def deployment() -> str:
    value = os.environ.get("DAGSTER_DEPLOYMENT", LOCAL).strip().lower() or LOCAL
    if value not in (LOCAL, PROD):
        raise DeploymentError(f"DAGSTER_DEPLOYMENT must be '{LOCAL}' or '{PROD}', not {value!r}")
    return value


def floodgate_home() -> Path:
    return Path(os.environ.get("FLOODGATE_HOME", ".floodgate")).resolve()


def search_terms_settings() -> SearchTermsSettings:
    """Settings from SEARCH_TERMS_* variables, each falling back to its default."""
    env = os.environ
    defaults = SearchTermsSettings()
    return SearchTermsSettings(
        reports_prefix=env.get("SEARCH_TERMS_REPORTS_PREFIX", defaults.reports_prefix),
        output_prefix=env.get("SEARCH_TERMS_OUTPUT_PREFIX", defaults.output_prefix),
        warehouse_table=env.get("SEARCH_TERMS_TABLE", defaults.warehouse_table),
        max_reject_fraction=float(env.get("SEARCH_TERMS_MAX_REJECT_FRACTION", defaults.max_reject_fraction)),
        total_share_tolerance=float(env.get("SEARCH_TERMS_TOTAL_SHARE_TOLERANCE", defaults.total_share_tolerance)),
        chunk_mb=int(env.get("SEARCH_TERMS_CHUNK_MB", defaults.chunk_mb)),
        scan_workers=int(env.get("SEARCH_TERMS_SCAN_WORKERS", defaults.scan_workers)),
        progress_interval_seconds=float(env.get("FLOODGATE_PROGRESS_SECONDS", defaults.progress_interval_seconds)),
        duckdb_memory_limit=env.get("SEARCH_TERMS_DUCKDB_MEMORY_LIMIT", defaults.duckdb_memory_limit),
    )


def local_resources(home: Path | None = None) -> dict:
    home = home or floodgate_home()
    return {
        "object_store": LocalDirectoryObjectStore(root=str(home / "data")),
        "warehouse": DuckDBWarehouse(path=str(home / "warehouse.duckdb")),
        "search_terms_settings": search_terms_settings(),
    }


def prod_resources() -> dict:
    raise DeploymentError(
        "DAGSTER_DEPLOYMENT=prod needs the S3 object store and the BigQuery warehouse, which this "
        "build does not have yet; use DAGSTER_DEPLOYMENT=local"
    )


def resources() -> dict:
    return prod_resources() if deployment() == PROD else local_resources()

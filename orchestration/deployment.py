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


# setting → the variable that overrides it
SEARCH_TERMS_VARIABLES = {
    "reports_prefix": "SEARCH_TERMS_REPORTS_PREFIX",
    "output_prefix": "SEARCH_TERMS_OUTPUT_PREFIX",
    "warehouse_table": "SEARCH_TERMS_TABLE",
    "max_reject_fraction": "SEARCH_TERMS_MAX_REJECT_FRACTION",
    "total_share_tolerance": "SEARCH_TERMS_TOTAL_SHARE_TOLERANCE",
    "chunk_mb": "SEARCH_TERMS_CHUNK_MB",
    "scan_workers": "SEARCH_TERMS_SCAN_WORKERS",
    "parquet_compression": "SEARCH_TERMS_PARQUET_COMPRESSION",
    "progress_interval_seconds": "FLOODGATE_PROGRESS_SECONDS",
    "duckdb_memory_limit": "SEARCH_TERMS_DUCKDB_MEMORY_LIMIT",
    "publication_lag_days": "SEARCH_TERMS_PUBLICATION_LAG_DAYS",
}


def search_terms_settings() -> SearchTermsSettings:
    """Settings from the variables of SEARCH_TERMS_VARIABLES, each falling back to its default."""
    overrides = {
        setting: os.environ[variable] for setting, variable in SEARCH_TERMS_VARIABLES.items() if variable in os.environ
    }
    try:
        return SearchTermsSettings(**overrides)
    except ValueError as exc:  # pydantic names the setting; say which variable it came from
        names = ", ".join(f"{SEARCH_TERMS_VARIABLES[k]}={v!r}" for k, v in overrides.items())
        raise DeploymentError(f"invalid search-terms setting from the environment ({names}): {exc}") from None


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

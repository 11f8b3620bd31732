"""The environment switch: DAGSTER_DEPLOYMENT=local|prod chooses the resource set, once.

local (the default) needs nothing started: a directory as the object store and a DuckDB
file as the warehouse, both under FLOODGATE_HOME (default ./.floodgate). prod puts the
object store on S3 and the warehouse on BigQuery, and reads every endpoint and secret from
the environment through dg.EnvVar; endpoints are settings, so prod also runs against local
test servers (moto, the BigQuery emulator).
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from assets.books.settings import BooksSettings
from assets.catalog.resources import catalog_local_resources, catalog_prod_resources
from assets.search_terms.settings import SearchTermsSettings
from resources.bigquery_warehouse import BigQueryClientResource, BigQueryWarehouse
from resources.object_store import LocalDirectoryObjectStore
from resources.book_models import BedrockConnection, BedrockEmbedder, BedrockSummarizer, LocalEmbedder, LocalSummarizer
from resources.s3_object_store import S3ObjectStore
from resources.search_index import DuckDBSearchIndex, OpenSearchIndex
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


def _settings_from_environment(cls, variables: dict[str, str], what: str):
    """cls with each setting of `variables` whose variable is set taken from it, the rest at
    their defaults; a DeploymentError naming the variables when a value does not fit."""
    overrides = {setting: os.environ[v] for setting, v in variables.items() if v in os.environ}
    try:
        return cls(**overrides)
    except ValueError as exc:  # pydantic names the setting; say which variable it came from
        names = ", ".join(f"{variables[k]}={v!r}" for k, v in overrides.items())
        raise DeploymentError(f"invalid {what} setting from the environment ({names}): {exc}") from None


def search_terms_settings() -> SearchTermsSettings:
    """Settings from the variables of SEARCH_TERMS_VARIABLES, each falling back to its default."""
    return _settings_from_environment(SearchTermsSettings, SEARCH_TERMS_VARIABLES, "search-terms")


BOOKS_VARIABLES = {
    "texts_prefix": "BOOKS_TEXTS_PREFIX",
    "results_prefix": "BOOKS_RESULTS_PREFIX",
    "workers": "BOOKS_WORKERS",
    "embed_batch": "BOOKS_EMBED_BATCH",
    "max_failure_fraction": "BOOKS_MAX_FAILURE_FRACTION",
    "max_book_mb": "BOOKS_MAX_BOOK_MB",
    "progress_interval_seconds": "FLOODGATE_PROGRESS_SECONDS",
}


def books_settings() -> BooksSettings:
    return _settings_from_environment(BooksSettings, BOOKS_VARIABLES, "books")


def books_resources(home: Path) -> dict:
    """The books pipeline's models and index: local ones (nothing to start) unless prod names
    Bedrock models or an OpenSearch URL (see books_prod_resources)."""
    return {
        "summarizer": LocalSummarizer(),
        "embedder": LocalEmbedder(),
        "search_index": DuckDBSearchIndex(path=str(home / "books_index.duckdb")),
        "books_settings": books_settings(),
    }


BEDROCK_VARIABLES = {
    "region_name": "FLOODGATE_BEDROCK_REGION",
    "endpoint_url": "FLOODGATE_BEDROCK_ENDPOINT_URL",
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "aws_session_token": "AWS_SESSION_TOKEN",
}
OPENSEARCH_VARIABLES = {
    "url": "OPENSEARCH_URL",
    "index": "FLOODGATE_OPENSEARCH_INDEX",
    "username": "OPENSEARCH_USERNAME",
    "password": "OPENSEARCH_PASSWORD",
}
SUMMARY_MODEL = "FLOODGATE_BEDROCK_SUMMARY_MODEL"  # set: summaries from Bedrock
EMBEDDING_MODEL = "FLOODGATE_BEDROCK_EMBEDDING_MODEL"  # set: embeddings from Bedrock Titan
EMBEDDING_DIMENSIONS = "FLOODGATE_BEDROCK_EMBEDDING_DIMENSIONS"  # 256, 512 or 1024


def books_prod_resources(home: Path) -> dict:
    """Bedrock for the models named by FLOODGATE_BEDROCK_*_MODEL, OpenSearch when
    OPENSEARCH_URL is set; whatever is not named stays local."""
    chosen = books_resources(home)
    bedrock = BedrockConnection(**_from_environment(BEDROCK_VARIABLES))
    dimensions = 384
    if os.environ.get(SUMMARY_MODEL):
        chosen["summarizer"] = BedrockSummarizer(bedrock=bedrock, model_id=os.environ[SUMMARY_MODEL])
    if os.environ.get(EMBEDDING_MODEL):
        dimensions = int(os.environ.get(EMBEDDING_DIMENSIONS, "1024"))
        chosen["embedder"] = BedrockEmbedder(bedrock=bedrock, model_id=os.environ[EMBEDDING_MODEL], dimensions=dimensions)
    if os.environ.get("OPENSEARCH_URL"):
        verify = os.environ.get("OPENSEARCH_VERIFY_CERTS", "true").strip().lower() not in ("0", "false", "no")
        chosen["search_index"] = OpenSearchIndex(
            dimensions=dimensions, verify_certs=verify, **_from_environment(OPENSEARCH_VARIABLES)
        )
    elif dimensions != 384:
        chosen["search_index"] = DuckDBSearchIndex(path=str(home / "books_index.duckdb"), dimensions=dimensions)
    return chosen


def local_resources(home: Path | None = None) -> dict:
    home = home or floodgate_home()
    return {
        "object_store": LocalDirectoryObjectStore(root=str(home / "data")),
        "warehouse": DuckDBWarehouse(path=str(home / "warehouse.duckdb")),
        "search_terms_settings": search_terms_settings(),
        **books_resources(home),
        **catalog_local_resources(home),
    }


# prod: S3ObjectStore and BigQueryWarehouse settings → the variable each is read from.
# Required ones must be set; an optional one left unset keeps its default (for credentials:
# boto3's and Google's default chains, such as an instance role or workload identity).
S3_VARIABLES = {
    "bucket": "FLOODGATE_S3_BUCKET",
    "prefix": "FLOODGATE_S3_PREFIX",
    "endpoint_url": "FLOODGATE_S3_ENDPOINT_URL",
    "region_name": "AWS_REGION",
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "aws_session_token": "AWS_SESSION_TOKEN",
}
BIGQUERY_CLIENT_VARIABLES = {
    "project": "FLOODGATE_BIGQUERY_PROJECT",
    "location": "FLOODGATE_BIGQUERY_LOCATION",
    "gcp_credentials": "FLOODGATE_BIGQUERY_CREDENTIALS",  # a base64-encoded service account key
    "api_endpoint": "FLOODGATE_BIGQUERY_ENDPOINT",
}
BIGQUERY_VARIABLES = {"dataset": "FLOODGATE_BIGQUERY_DATASET"}
# Plain switches, not secrets: read here, as values (dg.EnvVar carries strings only).
BIGQUERY_ANONYMOUS = "FLOODGATE_BIGQUERY_ANONYMOUS"  # true: no credentials (the emulator)
BIGQUERY_REPLACE_METHOD = "FLOODGATE_BIGQUERY_REPLACE_METHOD"  # transaction | partition_decorator
REQUIRED_PROD_VARIABLES = ("FLOODGATE_S3_BUCKET", "FLOODGATE_BIGQUERY_PROJECT", "FLOODGATE_BIGQUERY_DATASET")


def _from_environment(variables: dict[str, str]) -> dict:
    """dg.EnvVar for each variable that is set: Dagster resolves it when a run starts, and the
    UI shows the variable's name, never its value."""
    return {setting: dg.EnvVar(variable) for setting, variable in variables.items() if variable in os.environ}


def prod_resources() -> dict:
    missing = [v for v in REQUIRED_PROD_VARIABLES if not os.environ.get(v)]
    if missing:
        raise DeploymentError(f"DAGSTER_DEPLOYMENT=prod needs {', '.join(missing)} (see README, Production)")
    anonymous = os.environ.get(BIGQUERY_ANONYMOUS, "").strip().lower() in ("1", "true", "yes")
    switches = {"replace_method": os.environ[BIGQUERY_REPLACE_METHOD]} if BIGQUERY_REPLACE_METHOD in os.environ else {}
    try:
        warehouse = BigQueryWarehouse(
            bigquery=BigQueryClientResource(anonymous=anonymous, **_from_environment(BIGQUERY_CLIENT_VARIABLES)),
            **_from_environment(BIGQUERY_VARIABLES),
            **switches,
        )
    except ValueError as exc:
        raise DeploymentError(f"invalid BigQuery setting from the environment: {exc}") from None
    return {
        "object_store": S3ObjectStore(**_from_environment(S3_VARIABLES)),
        "warehouse": warehouse,
        "search_terms_settings": search_terms_settings(),
        **books_prod_resources(floodgate_home()),
        **catalog_prod_resources(floodgate_home()),
    }


def resources() -> dict:
    return prod_resources() if deployment() == PROD else local_resources()

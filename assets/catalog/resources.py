"""The product catalog's resources for each deployment, for orchestration/deployment.py to merge.

local: a SQLite file under FLOODGATE_HOME, no webhook, no Redis. prod: PostgreSQL from
FLOODGATE_CATALOG_DATABASE_URL (SQLite if unset), the webhook from FLOODGATE_WEBHOOK_URL
and FLOODGATE_WEBHOOK_SECRET, progress in Redis from REDIS_URL; every one of them through
dg.EnvVar, so the UI shows a variable's name and never its value. Settings come from
CATALOG_* variables (CATALOG_VARIABLES).
"""

import os
from pathlib import Path

import dagster as dg

from assets.catalog.settings import CatalogSettings
from resources.catalog_db import PostgresCatalogDatabase, SqliteCatalogDatabase
from resources.webhook import WebhookSender

# setting → the variable that overrides it
CATALOG_VARIABLES = {
    "uploads_prefix": "CATALOG_UPLOADS_PREFIX",
    "results_prefix": "CATALOG_RESULTS_PREFIX",
    "max_reject_fraction": "CATALOG_MAX_REJECT_FRACTION",
    "encoding": "CATALOG_ENCODING",
    "delimiter": "CATALOG_DELIMITER",
    "sheet": "CATALOG_SHEET",
    "block_mb": "CATALOG_BLOCK_MB",
    "settle_seconds": "CATALOG_SETTLE_SECONDS",
    "progress_interval_seconds": "CATALOG_PROGRESS_SECONDS",
    "webhook_redelivery_hours": "CATALOG_WEBHOOK_REDELIVERY_HOURS",
}
DATABASE_URL = "FLOODGATE_CATALOG_DATABASE_URL"
DATABASE_SCHEMA = "FLOODGATE_CATALOG_DATABASE_SCHEMA"
WEBHOOK_URL = "FLOODGATE_WEBHOOK_URL"
WEBHOOK_SECRET = "FLOODGATE_WEBHOOK_SECRET"
REDIS_URL = "REDIS_URL"


def catalog_settings(**secrets) -> CatalogSettings:
    overrides = {setting: os.environ[v] for setting, v in CATALOG_VARIABLES.items() if v in os.environ}
    try:
        return CatalogSettings(**overrides, **secrets)
    except ValueError as exc:
        names = ", ".join(f"{CATALOG_VARIABLES[k]}={v!r}" for k, v in overrides.items())
        raise ValueError(f"invalid catalog setting from the environment ({names}): {exc}") from None


def catalog_local_resources(home: Path) -> dict:
    return {
        "catalog_settings": catalog_settings(),
        "catalog_database": SqliteCatalogDatabase(path=str(home / "catalog.sqlite")),
        "catalog_webhook": WebhookSender(),
    }


def catalog_prod_resources(home: Path) -> dict:
    """What is set is used; what is not stays local (a webhook URL without a secret fails the
    step that would send, naming the missing variable)."""
    chosen = catalog_local_resources(home)
    if os.environ.get(REDIS_URL):
        chosen["catalog_settings"] = catalog_settings(redis_url=dg.EnvVar(REDIS_URL))
    if os.environ.get(DATABASE_URL):
        schema = {"db_schema": os.environ[DATABASE_SCHEMA]} if os.environ.get(DATABASE_SCHEMA) else {}
        chosen["catalog_database"] = PostgresCatalogDatabase(url=dg.EnvVar(DATABASE_URL), **schema)
    if os.environ.get(WEBHOOK_URL):
        secret = {"secret": dg.EnvVar(WEBHOOK_SECRET)} if os.environ.get(WEBHOOK_SECRET) else {}
        chosen["catalog_webhook"] = WebhookSender(url=dg.EnvVar(WEBHOOK_URL), **secret)
    return chosen

"""The enrichment pipeline: input files → enriched records (+ dead letters), through a
rate-limited HTTP API (engine/enrichment)."""

import dagster as dg

from assets.enrichment.pipeline import GROUP, enriched_records, enrichment_input
from assets.enrichment.settings import enrichment_settings_from_environment
from orchestration.enrichment_sensor import enrichment_files_sensor
from resources.enrichment_api import enrichment_api_from_environment

ASSETS = [enrichment_input, enriched_records]

enrichment_job = dg.define_asset_job(
    "enrichment",
    selection=dg.AssetSelection.groups(GROUP),
    description="Check an input file, then enrich its records through the API (one run per file or batch of files).",
)

# The pipeline's own settings, from the environment with defaults (object_store comes from
# orchestration/deployment.py). The API key and REDIS_URL are read through dg.EnvVar.
RESOURCES = {
    "enrichment_settings": enrichment_settings_from_environment(),
    "enrichment_api": enrichment_api_from_environment(),
}

defs = dg.Definitions(assets=ASSETS, jobs=[enrichment_job], sensors=[enrichment_files_sensor], resources=RESOURCES)

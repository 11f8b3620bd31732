"""The enrichment pipeline: input files → enriched records (+ dead letters), through a
rate-limited HTTP API (engine/enrichment).

ENRICHMENT_ENGINE chooses, when the code location loads, what makes enriched_records:
`python` (the default: the engine in the step's process) or `spark` (the same engine on
Spark tasks, launched through Dagster Pipes: assets/enrichment/spark.py)."""

import os

import dagster as dg

from assets.enrichment.pipeline import GROUP, enriched_records, enrichment_input
from assets.enrichment.settings import enrichment_settings_from_environment
from assets.enrichment.spark import enriched_records_on_spark
from orchestration.enrichment_sensor import enrichment_files_sensor
from resources.enrichment_api import enrichment_api_from_environment
from resources.spark_stage import spark_stage_from_environment

ENGINES = {"python": enriched_records, "spark": enriched_records_on_spark}
ENGINE = os.environ.get("ENRICHMENT_ENGINE", "python").strip().lower() or "python"
if ENGINE not in ENGINES:
    raise ValueError(f"ENRICHMENT_ENGINE must be one of {', '.join(ENGINES)}, not {ENGINE!r}")

ASSETS = [enrichment_input, ENGINES[ENGINE]]

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
    "enrichment_spark": spark_stage_from_environment(),  # used with ENRICHMENT_ENGINE=spark
}

defs = dg.Definitions(assets=ASSETS, jobs=[enrichment_job], sensors=[enrichment_files_sensor], resources=RESOURCES)

"""enriched_records on Spark: the same assets and checks as assets/enrichment/pipeline.py,
with the calling done by engine/enrichment/spark_stage.py through Dagster Pipes.

Chosen with ENRICHMENT_ENGINE=spark (assets/enrichment/__init__.py). The `enrichment_spark`
resource (resources/spark_stage.py) launches the stage: a subprocess with Spark in local
mode, or a Glue job run through dagster-aws' `PipesGlueClient`, with the same extras. The
stage reports each file's result as a Pipes message; this step turns them into the
materializations and checks the single-process step makes. Spark's tasks share the API's
rate through Redis, so without REDIS_URL the stage runs one task: more would each hold
the whole budget.
"""

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from assets.enrichment.pipeline import ENRICHED_RECORDS, outcome
from assets.enrichment.settings import EnrichmentSettings
from engine.enrichment.run import FileResult
from engine.enrichment.source import file_format, input_key
from engine.enrichment.spark_stage import decode_result
from engine.measure import StepMeasure
from resources.enrichment_api import SECRET_VARIABLES, EnrichmentApi
from resources.object_store import LocalDirectoryObjectStore, ObjectStore
from resources.spark_stage import SparkStage

SPARK_TASKS_VARIABLE = "ENRICHMENT_SPARK_TASKS"


def store_spec(store: ObjectStore) -> dict:
    """Where the stage finds the store: settings, never credentials (those come from the
    environment of the driver and the executors)."""
    if isinstance(store, LocalDirectoryObjectStore):
        return {"kind": "local", "root": str(Path(store.root).resolve())}
    from resources.s3_object_store import S3ObjectStore

    if isinstance(store, S3ObjectStore):
        return {"kind": "s3", "bucket": store.bucket, "prefix": store.prefix, "endpoint_url": store.endpoint_url,
                "region_name": store.region_name}
    raise dg.Failure(f"the Spark enrichment stage cannot reach a {type(store).__name__}")


def stage_spec(context, store: ObjectStore, settings: EnrichmentSettings, api: EnrichmentApi) -> dict:
    files = []
    for partition in context.partition_keys:
        key = input_key(partition, settings.input_prefix)
        files.append({"partition": partition, "input_key": key, "format": file_format(key),
                      "output_prefix": f"{settings.output_prefix.rstrip('/')}/{partition}"})
    shared = bool(api.redis_url)
    tasks = int(os.environ.get(SPARK_TASKS_VARIABLE, "2")) if shared else 1
    file_settings = settings.file_settings()
    return {
        "store": store_spec(store),
        "files": files,
        # the settings without their secrets: the stage reads the key and the Redis URL from
        # the environment (the extras travel in the launch command's environment)
        "api": {k: v for k, v in api.flat_settings().items() if k not in ("api_key", "redis_url")},
        "redis_url_variable": SECRET_VARIABLES["redis_url"] if shared else None,
        "file_settings": dataclasses.asdict(file_settings),
        "tasks": tasks,
    }


@dg.multi_asset(**ENRICHED_RECORDS)
def enriched_records_on_spark(
    context: dg.AssetExecutionContext,
    object_store: ObjectStore,
    enrichment_settings: EnrichmentSettings,
    enrichment_api: EnrichmentApi,
    enrichment_spark: SparkStage,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    context.log.info(f"enrichment API: {enrichment_api.describe()}, on Spark: {enrichment_spark.describe()}")
    spec = stage_spec(context, object_store, enrichment_settings, enrichment_api)
    with StepMeasure() as measure:
        invocation = enrichment_spark.launch(context, spec)
    results: list[tuple[str, FileResult]] = [
        (message["partition"], decode_result(message["result"])) for message in invocation.get_custom_messages()
    ]
    reported = [partition for partition, _ in results]
    if reported != context.partition_keys:
        raise dg.Failure(f"the Spark stage reported {reported}, not the run's files {context.partition_keys}")
    yield from outcome(results, measure, enrichment_settings, object_store)

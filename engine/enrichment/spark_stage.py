"""The enrichment stage on Spark: a file's chunks spread over Spark tasks, launched through
Dagster Pipes (assets/enrichment/spark.py).

Here, a subprocess running Spark in local mode (`dg.PipesSubprocessClient`); in production,
the same script as an AWS Glue job (`PipesGlueClient` from dagster-aws, docs/DEPLOYMENT.md).
The asset hands it, as Pipes extras, where the store, the inputs and the outputs are and
the API's settings without their secrets: the API key and the Redis URL are read from the
environment, by the driver and by every executor.

Each of `tasks` Spark tasks reads the whole file with the engine's reader (a parse, no
request, for chunks that are not its own) and enriches the chunks whose number is its own
modulo `tasks`, with the engine's pipeline: the same retries, breaker and limiter. Through
Redis, that limiter holds one budget for every task (and every other run using the API);
without Redis each task would hold the whole rate, so the asset refuses more than one task
then. Chunks are written under the same keys, with the same manifests, as the
single-process path writes them (engine/enrichment/output.py): a retried run re-sends only
the chunks not yet written, whichever path wrote the others, and the driver makes the
file's account and summary as the single-process path does.
"""

from __future__ import annotations

import base64
import os
import pickle
import sys
from typing import Any

from engine.enrichment.run import FileResult, FileSettings, enrich_file
from engine.enrichment.settings import api_settings, request_template
from engine.enrichment.stats import RequestStats

# What a task returns to the driver: records and chunks in the file, its requests' stats,
# and its limiter as the run's metadata names it.
TaskResult = tuple[int, int, RequestStats, str]


def store_from_spec(spec: dict[str, Any]):
    """The object store the asset uses, rebuilt from its settings (credentials, if any, come
    from the environment: boto3's chain for S3)."""
    if spec["kind"] == "local":
        from resources.object_store import LocalDirectoryObjectStore

        return LocalDirectoryObjectStore(root=spec["root"])
    if spec["kind"] == "s3":
        from resources.s3_object_store import S3ObjectStore

        return S3ObjectStore(**{k: v for k, v in spec.items() if k != "kind"})
    raise ValueError(f"unknown object store kind {spec['kind']!r}")


def api_flat(spec: dict[str, Any]) -> dict[str, Any]:
    """The API's flat settings, with the Redis URL from the variable the spec names."""
    flat = dict(spec["api"])
    if spec.get("redis_url_variable"):
        flat["redis_url"] = os.environ.get(spec["redis_url_variable"]) or None
    return flat


def enrich_share(spec: dict[str, Any], file: dict[str, Any], task: int, tasks: int) -> TaskResult:
    """In a Spark task: this task's chunks of one file."""
    flat = api_flat(spec)
    result = enrich_file(
        store_from_spec(spec["store"]), file["input_key"], file["format"], file["output_prefix"],
        api_settings(flat), request_template(flat), FileSettings(**spec["file_settings"]),
        only_chunks=lambda index: index % tasks == task, summarize=False,
    )
    return result.account.records, result.account.chunks, result.stats, result.limiter


def enrich_file_on_spark(spark, spec: dict[str, Any], file: dict[str, Any]) -> FileResult:
    """On the driver: every task's share, then the file's account and summary."""
    import time

    from engine.enrichment.run import finish_file

    started = time.perf_counter()
    tasks = int(spec["tasks"])
    shares: list[TaskResult] = (
        spark.sparkContext.parallelize(range(tasks), tasks).map(lambda task: enrich_share(spec, file, task, tasks)).collect()
    )
    stats = RequestStats()
    for _, _, share, _ in shares:
        stats.merge(share)
    records, chunks, _, limiter = shares[0]  # every task read the whole file, with the same limiter
    return finish_file(
        store_from_spec(spec["store"]), file["input_key"], file["format"], file["output_prefix"],
        request_template(api_flat(spec)), FileSettings(**spec["file_settings"]), records, chunks, stats,
        seconds=time.perf_counter() - started, limiter=f"{tasks} Spark tasks, each: {limiter}",
    )


def encode_result(result: FileResult) -> str:
    """A FileResult for a Pipes message (JSON): pickled, as both ends run this code base."""
    return base64.b64encode(pickle.dumps(result)).decode()


def decode_result(text: str) -> FileResult:
    return pickle.loads(base64.b64decode(text))  # noqa: S301 - our own process's message


def open_pipes():
    """Pipes as the launcher set it up: a Glue job run gets its bootstrap as command-line
    arguments and exchanges the context and messages through S3 (resources/spark_stage.py);
    a local subprocess gets it in its environment."""
    from dagster_pipes import open_dagster_pipes

    if any(arg.startswith("--dagster-pipes-") for arg in sys.argv[1:]):
        import boto3
        from dagster_pipes import PipesCliArgsParamsLoader, PipesS3ContextLoader, PipesS3MessageWriter

        s3 = boto3.client("s3")  # the job's credentials and endpoint, from its environment
        return open_dagster_pipes(
            params_loader=PipesCliArgsParamsLoader(),
            context_loader=PipesS3ContextLoader(client=s3),
            message_writer=PipesS3MessageWriter(client=s3),
        )
    return open_dagster_pipes()


def main() -> None:
    from pyspark.sql import SparkSession

    with open_pipes() as pipes:
        spec = pipes.extras
        builder = SparkSession.builder.appName("floodgate-enrichment").config("spark.ui.enabled", "false")
        master = spec.get("spark_master")
        if master:  # local[N] here (LocalSparkStage); Glue and spark-submit set their own
            builder = builder.master(master)
            if master.startswith("local"):
                # local mode's Python workers: this interpreter (its packages), not the system's
                os.environ["PYSPARK_PYTHON"] = sys.executable
        spark = builder.getOrCreate()
        try:
            for file in spec["files"]:
                result = enrich_file_on_spark(spark, spec, file)
                account = result.account
                pipes.log.info(
                    f"{file['partition']}: {account.records:,} records = {account.enriched:,} enriched + "
                    f"{account.dead_letters:,} dead letters, {result.stats.requests:,} requests on {spec['tasks']} Spark tasks"
                )
                pipes.report_custom_message({"partition": file["partition"], "result": encode_result(result)})
        finally:
            spark.stop()


if __name__ == "__main__":
    main()

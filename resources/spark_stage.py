"""Where the enrichment's Spark stage runs (engine/enrichment/spark_stage.py), through Dagster
Pipes: `launch(context, extras)` starts it and returns what it reported.

- `LocalSparkStage` (the default): a subprocess of the step, Spark in local mode
  (`dg.PipesSubprocessClient`); the context and the messages travel as Pipes does locally.
- `GlueSparkStage` (production): an AWS Glue job run of a job whose script is
  engine/enrichment/spark_stage.py, launched by dagster-aws' `PipesGlueClient`. The Pipes
  context and the stage's messages go through an S3 bucket (`pipes_bucket`): the job reads
  the context's location from its run arguments and writes its messages there, and the
  step reads them when the run ends. Credentials are boto3's usual chain; nothing secret
  is a setting.
"""

from __future__ import annotations

import sys
from abc import abstractmethod
from pathlib import Path
from typing import Any

import dagster as dg

ROOT = Path(__file__).resolve().parent.parent
STAGE_MODULE = "engine.enrichment.spark_stage"


class SparkStage(dg.ConfigurableResource):
    @abstractmethod
    def launch(self, context, extras: dict[str, Any]):
        """Run the stage with these Pipes extras; the completed Pipes invocation."""

    @abstractmethod
    def describe(self) -> str:
        """Where the stage runs, for logs and metadata."""


class LocalSparkStage(SparkStage):
    """A subprocess with Spark in local mode."""

    master: str | None = None  # None: local[<the stage's tasks>, at least 2]

    def launch(self, context, extras: dict[str, Any]):
        master = self.master or f"local[{max(2, int(extras['tasks']))}]"
        return dg.PipesSubprocessClient().run(
            context=context, command=[sys.executable, "-m", STAGE_MODULE], extras={**extras, "spark_master": master},
            cwd=str(ROOT),
        )

    def describe(self) -> str:
        return "a local Spark subprocess"


class GlueSparkStage(SparkStage):
    """A run of the Glue job `job_name` (its script: engine/enrichment/spark_stage.py, with
    the floodgate package among its Python modules)."""

    job_name: str
    pipes_bucket: str  # where the Pipes context and the stage's messages are exchanged
    pipes_prefix: str = "dagster-pipes/"
    region_name: str | None = None
    s3_endpoint_url: str | None = None  # for S3-compatible servers
    poll_seconds: float = 10.0  # how often the step reads the stage's messages while it runs

    def glue_client(self):
        import boto3

        return boto3.client("glue", region_name=self.region_name)

    def launch(self, context, extras: dict[str, Any]):
        import boto3
        from dagster_aws.pipes import PipesGlueClient, PipesS3ContextInjector, PipesS3MessageReader

        s3 = boto3.client("s3", region_name=self.region_name, endpoint_url=self.s3_endpoint_url)
        client = PipesGlueClient(
            client=self.glue_client(),
            context_injector=PipesS3ContextInjector(bucket=self.pipes_bucket, client=s3, key_prefix=self.pipes_prefix),
            message_reader=PipesS3MessageReader(bucket=self.pipes_bucket, client=s3, interval=self.poll_seconds),
        )
        return client.run(context=context, start_job_run_params={"JobName": self.job_name}, extras=extras)

    def describe(self) -> str:
        return f"the Glue job {self.job_name!r}"


def spark_stage_from_environment() -> SparkStage:
    """ENRICHMENT_SPARK_GLUE_JOB set: that Glue job, with ENRICHMENT_SPARK_PIPES_BUCKET (and
    AWS_REGION); otherwise a local subprocess (ENRICHMENT_SPARK_MASTER, default local[N])."""
    import os

    job = os.environ.get("ENRICHMENT_SPARK_GLUE_JOB")
    if not job:
        return LocalSparkStage(master=os.environ.get("ENRICHMENT_SPARK_MASTER") or None)
    bucket = os.environ.get("ENRICHMENT_SPARK_PIPES_BUCKET")
    if not bucket:
        raise ValueError("ENRICHMENT_SPARK_GLUE_JOB needs ENRICHMENT_SPARK_PIPES_BUCKET: the S3 bucket Pipes uses")
    return GlueSparkStage(job_name=job, pipes_bucket=bucket, region_name=os.environ.get("AWS_REGION") or None)

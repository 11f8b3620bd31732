"""The warehouse on BigQuery: load jobs of Parquet, one day-partitioned table per dataset table.

A week is replaced one of two ways (`replace_method`):

- "transaction" (the default): a load job puts the week's Parquet into a staging table,
  then one multi-statement transaction deletes the week from the table and inserts the
  staged rows. Readers see the old week or the new one, never neither or both; a failed
  load leaves the old week. It costs one query over the staged week (a few hundred MB a
  week: fractions of a cent) and it is the path the local-bigquery emulator runs, so the
  production code is the tested code.
- "partition_decorator": a load job with WRITE_TRUNCATE into `table$YYYYMMDD`. Atomic and
  free (load jobs are not billed), but the emulator does not support table decorators (it
  creates a table named `table$YYYYMMDD`), so this path is tested only against real
  BigQuery (tests/resources/test_bigquery_warehouse_real.py, when credentials are set).

Either way the rows arrive through a load job, never streaming inserts and never pandas.
Concurrent DML on one BigQuery table conflicts, so loads share Dagster's `warehouse` pool.
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import BinaryIO, Literal

import dagster as dg
import pyarrow as pa

from resources.warehouse import PartitionProfile, Warehouse, check_identifier

# How long an abandoned staging table (a process killed mid-load) lives before BigQuery drops it.
STAGING_LIFETIME = timedelta(hours=24)


class BigQueryClientResource(dg.ConfigurableResource):
    """A BigQuery client: dagster-gcp's BigQueryResource's settings, plus an API endpoint
    for emulators.

    Not a subclass of it: importing dagster_gcp loads google-cloud-bigquery, grpc and
    pandas (through dagster-pandas), about 77 MiB, into every process that loads the code
    location, a catalog upload's run process included. Here the client library is
    imported when a client is made, in the warehouse step only.

    Credentials: gcp_credentials (a base64-encoded service-account key, as dagster-gcp
    takes it; read in memory, never written to a file or the environment), else the
    environment's default chain; anonymous for an emulator."""

    project: str | None = None
    location: str | None = None
    gcp_credentials: str | None = None  # base64 of a service-account JSON key
    api_endpoint: str | None = None  # e.g. http://127.0.0.1:9050 for local-bigquery
    anonymous: bool = False  # no credentials at all: for an emulator only

    @contextlib.contextmanager
    def get_client(self) -> Iterator["bigquery.Client"]:  # noqa: F821
        from google.cloud import bigquery

        client = bigquery.Client(
            project=self.project,
            location=self.location,
            credentials=self._credentials(),  # None: the default chain
            client_options={"api_endpoint": self.api_endpoint} if self.api_endpoint else None,
        )
        try:
            yield client
        finally:
            client.close()

    def _credentials(self):
        if self.anonymous:
            from google.auth.credentials import AnonymousCredentials

            return AnonymousCredentials()
        if self.gcp_credentials:
            from google.oauth2 import service_account

            try:
                info = json.loads(base64.b64decode(self.gcp_credentials))
            except ValueError:
                # the key's text must not reach the error: say what is wrong with it only
                raise ValueError("gcp_credentials is not a base64-encoded service-account JSON key") from None
            return service_account.Credentials.from_service_account_info(info)
        return None


_BIGQUERY_TYPES = [
    (pa.types.is_string, "STRING"),
    (pa.types.is_large_string, "STRING"),
    (pa.types.is_integer, "INT64"),
    (pa.types.is_floating, "FLOAT64"),
    (pa.types.is_boolean, "BOOL"),
    (pa.types.is_date, "DATE"),
    (pa.types.is_timestamp, "TIMESTAMP"),
    (pa.types.is_binary, "BYTES"),
]


def bigquery_schema(schema: pa.Schema) -> list["bigquery.SchemaField"]:  # noqa: F821
    """The BigQuery columns of an Arrow schema: same names, order and nullability."""
    from google.cloud import bigquery

    fields = []
    for field in schema:
        kind = next((name for test, name in _BIGQUERY_TYPES if test(field.type)), None)
        if kind is None:
            raise ValueError(f"column {field.name}: no BigQuery type for Arrow type {field.type}")
        fields.append(bigquery.SchemaField(field.name, kind, mode="NULLABLE" if field.nullable else "REQUIRED"))
    return fields


def _parameter(value: object, name: str | None = None) -> "bigquery.ScalarQueryParameter":  # noqa: F821
    """A query parameter typed from its Python value: positional when unnamed."""
    from google.cloud import bigquery

    kinds = [(bool, "BOOL"), (int, "INT64"), (float, "FLOAT64"), (datetime, "TIMESTAMP"), (date, "DATE"), (str, "STRING")]
    kind = next((name for cls, name in kinds if isinstance(value, cls)), None)
    if kind is None:
        raise TypeError(f"no BigQuery parameter type for {type(value).__name__}")
    return bigquery.ScalarQueryParameter(name, kind, value)


class BigQueryWarehouse(Warehouse):
    """Tables in one BigQuery dataset, each partitioned by day on its partition column."""

    bigquery: BigQueryClientResource
    dataset: str
    replace_method: Literal["transaction", "partition_decorator"] = "transaction"

    def _table_id(self, client, table: str) -> str:
        return f"{client.project}.{check_identifier(self.dataset)}.{check_identifier(table)}"

    def ensure_table(
        self, client, table: str, partition_column: str, schema: pa.Schema, cluster_by: Sequence[str] = ()
    ) -> "bigquery.Table":  # noqa: F821
        """The table, created (with its dataset) when missing: the given schema, day partitions
        on partition_column, clustered by cluster_by."""
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        table_id = self._table_id(client, table)
        with contextlib.suppress(NotFound):
            return client.get_table(table_id)
        try:  # look first: creating needs bigquery.datasets.create even when the dataset exists
            client.get_dataset(f"{client.project}.{self.dataset}")
        except NotFound:
            dataset = bigquery.Dataset(f"{client.project}.{self.dataset}")
            dataset.location = self.bigquery.location or client.location or dataset.location
            client.create_dataset(dataset, exists_ok=True)
        new = bigquery.Table(table_id, schema=bigquery_schema(schema))
        new.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY, field=check_identifier(partition_column)
        )
        if cluster_by:
            new.clustering_fields = [check_identifier(c) for c in cluster_by]
        return client.create_table(new, exists_ok=True)  # exists_ok: a concurrent run may have won

    def replace_partition(
        self,
        table: str,
        partition_column: str,
        value: date,
        parquet: BinaryIO,
        *,
        schema: pa.Schema | None = None,
        cluster_by: Sequence[str] = (),
    ) -> int:
        import pyarrow.parquet as pq

        file_schema = pq.ParquetFile(parquet).schema_arrow
        parquet.seek(0)
        schema = schema or file_schema
        with self.bigquery.get_client() as client:
            target = self.ensure_table(client, table, partition_column, schema, cluster_by)
            if self.replace_method == "partition_decorator":
                return self._load(client, f"{target.full_table_id.replace(':', '.')}${value:%Y%m%d}", parquet, target.schema)
            return self._stage_and_swap(client, target, partition_column, value, parquet)

    def _load(self, client, destination: str, parquet: BinaryIO, schema) -> int:
        from google.cloud import bigquery

        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            schema=schema,
        )
        job = client.load_table_from_file(parquet, destination, job_config=config, rewind=True)
        job.result()
        return int(job.output_rows or 0)

    def _stage_and_swap(self, client, target, partition_column: str, value: date, parquet: BinaryIO) -> int:
        column = check_identifier(partition_column)
        table_id = target.full_table_id.replace(":", ".")
        # a unique name: a retry never collides with the leftovers of a killed attempt
        staging = f"{table_id}__load_{value:%Y%m%d}_{uuid.uuid4().hex[:8]}"
        try:
            self._load(client, staging, parquet, target.schema)
            staged = client.get_table(staging)
            staged.expires = datetime.now(timezone.utc) + STAGING_LIFETIME
            client.update_table(staged, ["expires"])
            week = [_parameter(value)]
            rows, strays = self._rows(
                client, f"SELECT COUNT(*), COUNTIF({column} IS NULL OR {column} != ?) FROM `{staging}`", week
            )[0]
            if strays:
                raise ValueError(f"{strays} rows of the load for {table_id} {column}={value} carry another value")
            names = ", ".join(f"`{field.name}`" for field in target.schema)
            script = (
                "BEGIN TRANSACTION;\n"
                f"DELETE FROM `{table_id}` WHERE {column} = @value;\n"
                f"INSERT INTO `{table_id}` ({names}) SELECT {names} FROM `{staging}`;\n"
                "COMMIT TRANSACTION;"
            )
            self._run(client, script, [_parameter(value, "value")])
            return int(rows)
        finally:
            client.delete_table(staging, not_found_ok=True)

    def _run(self, client, sql: str, parameters: list) -> "bigquery.QueryJob":  # noqa: F821
        from google.cloud import bigquery

        job = client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=parameters))
        job.result()
        return job

    def _rows(self, client, sql: str, parameters: list) -> list[tuple]:
        from google.cloud import bigquery

        result = client.query_and_wait(sql, job_config=bigquery.QueryJobConfig(query_parameters=parameters))
        return [tuple(row.values()) for row in result]

    def partition_profile(self, table: str, partition_column: str, value: date, columns: list[str]) -> PartitionProfile:
        from google.api_core.exceptions import NotFound

        selects = "".join(f", MIN({check_identifier(c)}), MAX({c})" for c in columns)
        with self.bigquery.get_client() as client:
            sql = f"SELECT COUNT(*){selects} FROM `{self._table_id(client, table)}` WHERE {check_identifier(partition_column)} = ?"
            try:
                row = self._rows(client, sql, [_parameter(value)])[0]
            except NotFound:
                return PartitionProfile(rows=0, minimum=dict.fromkeys(columns), maximum=dict.fromkeys(columns))
        return PartitionProfile(rows=row[0], minimum=dict(zip(columns, row[1::2])), maximum=dict(zip(columns, row[2::2])))

    def query(self, sql: str, parameters: list | None = None) -> list[tuple]:
        with self.bigquery.get_client() as client:
            return self._rows(client, sql, [_parameter(p) for p in parameters or []])

    def table_ref(self, table: str) -> str:
        with self.bigquery.get_client() as client:
            return f"`{self._table_id(client, table)}`"


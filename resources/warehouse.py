"""The warehouse holding finished tables: DuckDB by default, BigQuery in production.

A load hands the warehouse one partition's rows as a Parquet file and replaces exactly
that partition, atomically: a retried or repeated run never duplicates rows, and a
failed one leaves the previous rows in place.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import BinaryIO

import dagster as dg
import pyarrow as pa
from pydantic import BaseModel

from engine.duckdb_connect import connect_waiting

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a plain SQL identifier")
    return name


class PartitionProfile(BaseModel):
    """Rows of one partition, and the smallest and largest value of some columns (nulls ignored)."""

    rows: int
    minimum: dict[str, object]
    maximum: dict[str, object]


class Warehouse(dg.ConfigurableResource):
    @abstractmethod
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
        """Make the rows of `parquet` the table's rows where partition_column = value; return their count.

        Every row of the file must carry that value. `schema` declares the table's columns
        (default: the file's) and `cluster_by` the columns its rows are clustered by, where
        the warehouse has clustering; both are used when the table is created."""

    @abstractmethod
    def partition_profile(self, table: str, partition_column: str, value: date, columns: list[str]) -> PartitionProfile:
        """Row count and per-column min and max of the rows where partition_column = value."""

    @abstractmethod
    def query(self, sql: str, parameters: list | None = None) -> list[tuple]:
        """Run a read-only query (tables named as in table_ref) and return its rows."""

    @abstractmethod
    def table_ref(self, table: str) -> str:
        """The table's name in queries."""


def _link_same_file(source: BinaryIO, target: str) -> bool:
    """Hard-link a local source file to target instead of copying it, when possible.

    Safe because neither the object store nor the warehouse ever changes a file in place:
    both replace files by renaming new ones over them, so each keeps the version it linked."""
    path = getattr(source, "name", None)
    if not isinstance(path, str) or not os.path.isfile(path):
        return False
    try:
        os.unlink(target)
        os.link(path, target)
        return True
    except OSError:
        return False


def _footer_ranges(path: str, columns: list[str]) -> tuple[int, dict, dict] | None:
    """(rows, minimum, maximum) of columns from a Parquet footer's statistics, or None when
    some row group lacks them. Nulls do not count, as in SQL's min and max."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    names = meta.schema.to_arrow_schema().names
    minimum: dict[str, object] = {}
    maximum: dict[str, object] = {}
    for column in columns:
        index = names.index(column)
        for g in range(meta.num_row_groups):
            chunk = meta.row_group(g).column(index)
            stats = chunk.statistics
            if stats is None:
                return None
            if stats.null_count == chunk.num_values:
                continue  # only nulls here
            if not stats.has_min_max:
                return None
            if column not in minimum or stats.min < minimum[column]:
                minimum[column] = stats.min
            if column not in maximum or stats.max > maximum[column]:
                maximum[column] = stats.max
        minimum.setdefault(column, None)
        maximum.setdefault(column, None)
    return meta.num_rows, minimum, maximum


def _check_columns(path: str, schema: pa.Schema) -> None:
    """Refuse a file whose column names and types are not the declared ones."""
    import pyarrow.parquet as pq

    found = pq.read_schema(path)
    if found.names != schema.names or found.types != schema.types:
        raise ValueError(f"the load's columns {found.names} do not match the table's declared schema {schema.names}")


def _partition_value_check(path: str, column: str, value: date, config: dict) -> tuple[int, int]:
    """(rows, rows whose `column` is not `value`) of a Parquet file.

    From the footer's statistics when every row group has them (no data read), else by a
    scan of that one column."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    index = meta.schema.to_arrow_schema().get_field_index(column)
    if index >= 0:
        stats = [meta.row_group(g).column(index).statistics for g in range(meta.num_row_groups)]
        if all(s is not None and s.has_min_max and s.null_count == 0 for s in stats):
            if all(s.min == value and s.max == value for s in stats):
                return meta.num_rows, 0
    import duckdb

    with duckdb.connect(config=config) as con:
        rows, strays = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE {column} IS DISTINCT FROM ?) FROM read_parquet(?)", [value, path]
        ).fetchone()
    return int(rows), int(strays)


class DuckDBWarehouse(Warehouse):
    """A DuckDB database whose tables are views over one Parquet file per partition.

    Replacing a partition is an atomic rename of its file, so loads never half-apply,
    never block readers, and runs for different weeks load at the same time (DuckDB lets
    one process write a database file at a time; here only the first load of a table
    writes to it, to create the view). Loading a week of 3 million rows into native DuckDB
    storage took longer than parsing the whole report (docs/PERFORMANCE.md); the view reads
    the same Parquet at DuckDB's full speed.
    """

    path: str  # the .duckdb file; partition files live in <path without .duckdb>_tables/
    lock_timeout_seconds: float = 120.0
    # Queries here are a week's summaries: one thread and a small buffer pool keep them from
    # adding more to the step's memory than the scan needs (DuckDB's default is 80% of RAM).
    threads: int = 1
    memory_limit: str = "128MB"

    def _config(self) -> dict:
        return {"threads": self.threads, "memory_limit": self.memory_limit}

    def _table_dir(self, table: str) -> Path:
        # absolute: the view stores this path, and must not depend on the reader's directory
        database = Path(self.path).resolve()
        return database.with_name(database.stem + "_tables") / check_identifier(table)

    def partition_file(self, table: str, partition_column: str, value: date) -> Path:
        return self._table_dir(table) / f"{check_identifier(partition_column)}={value.isoformat()}.parquet"

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator["duckdb.DuckDBPyConnection"]:  # noqa: F821
        con = connect_waiting(self.path, read_only=read_only, config=self._config(), timeout=self.lock_timeout_seconds)
        try:
            yield con
        finally:
            con.close()

    def replace_partition(
        self,
        table: str,
        partition_column: str,
        value: date,
        parquet: BinaryIO,
        *,
        schema: pa.Schema | None = None,
        cluster_by: Sequence[str] = (),  # DuckDB reads a week's file whole: nothing to cluster
    ) -> int:
        target = self.partition_file(table, partition_column, value)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
        try:
            os.close(fd)
            if not _link_same_file(parquet, tmp):
                with open(tmp, "wb") as out:
                    shutil.copyfileobj(parquet, out, 8 << 20)
            if schema is not None:
                _check_columns(tmp, schema)
            rows, strays = _partition_value_check(tmp, partition_column, value, self._config())
            if strays:
                raise ValueError(f"{strays} rows of the load for {table} {partition_column}={value} carry another value")
            os.replace(tmp, target)  # the partition changes here, all at once
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self._ensure_view(table)
        return int(rows)

    def _ensure_view(self, table: str) -> None:
        """Create the table's view unless this database already has it.

        A marker beside the partition files remembers the database file the view was made
        in, so later loads need not open DuckDB at all (opening it and scanning a week
        added 60 MB and most of a second to the load step)."""
        glob = str(self._table_dir(table) / "*.parquet")
        marker = self._table_dir(table) / ".view"
        database = Path(self.path)
        stamp = f"{database.resolve()} {database.stat().st_ino if database.exists() else 0}\n{glob}"
        if marker.exists() and marker.read_text() == stamp:
            return
        definition = f"SELECT * FROM read_parquet('{glob}', union_by_name = true)"
        with self.connect() as con:
            con.execute(f"CREATE OR REPLACE VIEW {check_identifier(table)} AS {definition}")
        marker.write_text(f"{database.resolve()} {database.stat().st_ino}\n{glob}")

    def partition_profile(self, table: str, partition_column: str, value: date, columns: list[str]) -> PartitionProfile:
        path = self.partition_file(table, partition_column, value)
        if not path.exists():
            return PartitionProfile(rows=0, minimum=dict.fromkeys(columns), maximum=dict.fromkeys(columns))
        ranges = _footer_ranges(str(path), columns)
        if ranges is None:  # a file without statistics: scan it
            import duckdb

            selects = ", ".join(f"min({check_identifier(c)}), max({c})" for c in columns)
            with duckdb.connect(config=self._config()) as con:
                row = con.execute(f"SELECT count(*), {selects} FROM read_parquet(?)", [str(path)]).fetchone()
            ranges = (row[0], dict(zip(columns, row[1::2])), dict(zip(columns, row[2::2])))
        rows, minimum, maximum = ranges
        return PartitionProfile(rows=rows, minimum=minimum, maximum=maximum)

    def query(self, sql: str, parameters: list | None = None) -> list[tuple]:
        with self.connect(read_only=True) as con:
            return con.execute(sql, parameters or []).fetchall()

    def table_ref(self, table: str) -> str:
        return check_identifier(table)

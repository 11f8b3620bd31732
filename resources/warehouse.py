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
import time
from abc import abstractmethod
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import BinaryIO

import dagster as dg

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a plain SQL identifier")
    return name


class Warehouse(dg.ConfigurableResource):
    @abstractmethod
    def replace_partition(self, table: str, partition_column: str, value: date, parquet: BinaryIO) -> int:
        """Make the rows of `parquet` the table's rows where partition_column = value; return their count.

        Every row of the file must carry that value."""

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
        import duckdb

        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        if read_only and not Path(self.path).exists():
            read_only = False  # the first connection creates the file
        deadline = time.monotonic() + self.lock_timeout_seconds
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(self.path, read_only=read_only, config=self._config())
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(delay)  # another process is creating a view: back off and retry
                delay = min(delay * 2, 2.0)
        try:
            yield con
        finally:
            con.close()

    def replace_partition(self, table: str, partition_column: str, value: date, parquet: BinaryIO) -> int:
        target = self.partition_file(table, partition_column, value)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
        try:
            os.close(fd)
            if not _link_same_file(parquet, tmp):
                with open(tmp, "wb") as out:
                    shutil.copyfileobj(parquet, out, 8 << 20)
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
        glob = str(self._table_dir(table) / "*.parquet")
        definition = f"SELECT * FROM read_parquet('{glob}', union_by_name = true)"
        with self.connect(read_only=True) as con:
            existing = con.execute(
                "SELECT sql FROM duckdb_views() WHERE view_name = ? AND NOT internal", [table]
            ).fetchone()
        if existing and glob in existing[0]:
            return
        with self.connect() as con:
            con.execute(f"CREATE OR REPLACE VIEW {check_identifier(table)} AS {definition}")

    def query(self, sql: str, parameters: list | None = None) -> list[tuple]:
        with self.connect(read_only=True) as con:
            return con.execute(sql, parameters or []).fetchall()

    def table_ref(self, table: str) -> str:
        return check_identifier(table)

"""The products table in SQLite: the embedded default, with PostgreSQL's semantics.

The same steps as postgres_store, in one `BEGIN IMMEDIATE` transaction (SQLite's write
lock, so uploads apply one at a time): rows into a temporary staging table, then one
`INSERT … SELECT … LEFT JOIN … WHERE new or different ON CONFLICT (sku) DO UPDATE … WHERE
different`. Prices are kept as text in numeric(18,4) form ("1234.5000"), so equal prices
compare equal and nothing is lost to floating point; attributes as JSON text, merged with
json_patch (whose null-removes-the-key rule is the catalog's).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.catalog.columns import ACTIVE, PRICE
from engine.catalog.migrations import check_identifier, migrate_sqlite
from engine.catalog.repeated_skus import apply_last_occurrences
from engine.catalog.upsert import StageProgress, UpsertCounts, UpsertPlan


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def upsert_parts(table: str, plan: UpsertPlan) -> tuple[list[str], list[str]]:
    """(columns, the values the SELECT gives them) of the upsert."""
    columns = list(plan.updatable)
    values = [f"s.{c}" for c in columns]
    if plan.attributes:
        pairs = ", ".join(f"{_literal(key)}, s.attr_{i}" for i, key in enumerate(plan.attributes))
        columns.append("attributes")
        values.append(f"json_patch(coalesce(o.attributes, '{{}}'), json_object({pairs}))")
    return columns, values


class SqliteCatalog:
    def __init__(self, path: str, *, table: str = "products", busy_timeout_seconds: float = 300.0):
        self.path = path
        self.table = check_identifier(table)
        self.busy_timeout_seconds = busy_timeout_seconds

    def connect(self) -> sqlite3.Connection:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_seconds, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")  # readers are not blocked by an upload
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def migrate(self) -> list[int]:
        conn = self.connect()
        try:
            return migrate_sqlite(conn, self.table)
        finally:
            conn.close()

    def staging(self, plan: UpsertPlan, progress: StageProgress | None = None) -> "SqliteStaging":
        return SqliteStaging(self, plan, progress)

    def apply(self, batches: Iterable[pa.Table], plan: UpsertPlan, progress: StageProgress | None = None) -> UpsertCounts:
        """Apply validated batches (output_schema's columns) in one transaction."""
        with self.staging(plan, progress) as staging:
            return apply_last_occurrences(staging, batches)

    def _upsert(self, conn: sqlite3.Connection, plan: UpsertPlan) -> tuple[int, int]:
        table = self.table
        columns, values = upsert_parts(table, plan)
        if not columns:
            before = conn.total_changes
            conn.execute(f"INSERT INTO {table} (sku) SELECT sku FROM staging WHERE true ON CONFLICT (sku) DO NOTHING")
            return conn.total_changes - before, 0
        differs = " OR ".join(f"o.{c} IS NOT {v}" for c, v in zip(columns, values))
        # counted first, from the same join the INSERT reads (one transaction: nothing moves)
        inserted, updated = conn.execute(
            f"SELECT count(*) FILTER (WHERE o.sku IS NULL), count(*) FILTER (WHERE o.sku IS NOT NULL) "
            f"FROM staging s LEFT JOIN {table} o ON o.sku = s.sku WHERE o.sku IS NULL OR {differs}"
        ).fetchone()
        still_differs = " OR ".join(f"{table}.{c} IS NOT excluded.{c}" for c in columns)
        conn.execute(
            f"INSERT INTO {table} (sku, {', '.join(columns)}) "
            f"SELECT s.sku, {', '.join(values)} FROM staging s LEFT JOIN {table} o ON o.sku = s.sku "
            f"WHERE o.sku IS NULL OR {differs} "
            f"ON CONFLICT (sku) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in columns)} "
            f"WHERE {still_differs}"
        )
        return inserted, updated

    def count(self) -> int:
        conn = self.connect()
        try:
            migrate_sqlite(conn, self.table)  # an empty catalog has a table too
            return conn.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0]
        finally:
            conn.close()

    def rows(self, skus: list[str] | None = None) -> list[dict]:
        """Products as dicts (sku order), typed as PostgresCatalog.rows gives them."""
        conn = self.connect()
        try:
            migrate_sqlite(conn, self.table)
            query = f"SELECT sku, name, description, price, stock, active, attributes, created_at, updated_at FROM {self.table}"
            if skus is None:
                cursor = conn.execute(query + " ORDER BY sku")
            else:
                marks = ", ".join("?" * len(skus))
                cursor = conn.execute(query + f" WHERE sku IN ({marks}) ORDER BY sku", skus)
            names = [d[0] for d in cursor.description]
            out = []
            for row in cursor.fetchall():
                item = dict(zip(names, row))
                item["price"] = None if item["price"] is None else Decimal(item["price"])
                item["active"] = bool(item["active"])
                item["attributes"] = json.loads(item["attributes"])
                out.append(item)
            return out
        finally:
            conn.close()


class SqliteStaging:
    """One upload's transaction, as PostgresStaging (rows are inserted as they arrive)."""

    def __init__(self, catalog: SqliteCatalog, plan: UpsertPlan, progress: StageProgress | None = None):
        self.catalog, self.plan, self.progress = catalog, plan, progress
        self.counts = UpsertCounts()
        self._conn: sqlite3.Connection | None = None
        self._started = 0.0
        columns = ["row_no", *plan.staging_columns]
        self._insert = f"INSERT INTO staging ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"

    def __enter__(self) -> "SqliteStaging":
        self._conn = self.catalog.connect()
        try:
            migrate_sqlite(self._conn, self.catalog.table)
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute(f"CREATE TEMPORARY TABLE staging (row_no, {', '.join(self.plan.staging_columns)})")
        except BaseException:
            self._conn.close()
            self._conn = None
            raise
        self._started = time.perf_counter()
        return self

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._conn.executemany(self._insert, _python_rows(table.select(["row", *self.plan.staging_columns])))
            self.counts.staged += table.num_rows
            if self.progress is not None:
                self.progress(self.counts.staged)

    def rows_done(self) -> None:
        pass  # each write has inserted its rows already

    def finish(self, superseded: Sequence[int] | np.ndarray = ()) -> UpsertCounts:
        """Apply the staged rows but the superseded ones (row numbers), and commit."""
        conn = self._conn
        if len(superseded):
            conn.execute("CREATE TEMPORARY TABLE superseded (row_no INTEGER PRIMARY KEY)")
            conn.executemany("INSERT INTO superseded VALUES (?)", ((r,) for r in np.asarray(superseded).tolist()))
            self.counts.staged -= conn.execute("DELETE FROM staging WHERE row_no IN (SELECT row_no FROM superseded)").rowcount
            conn.execute("DROP TABLE temp.superseded")
        self.counts.copy_seconds = time.perf_counter() - self._started
        started = time.perf_counter()
        self.counts.inserted, self.counts.updated = self.catalog._upsert(conn, self.plan)
        conn.execute("DROP TABLE temp.staging")
        conn.execute("COMMIT")
        self._conn = None
        conn.close()
        self.counts.upsert_seconds = time.perf_counter() - started
        self.counts.unchanged = self.counts.staged - self.counts.inserted - self.counts.updated
        return self.counts

    def __exit__(self, kind, exc, tb) -> None:
        if self._conn is not None:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            finally:
                self._conn.close()
                self._conn = None


def _python_rows(table: pa.Table):
    """Rows as SQLite takes them: prices as numeric(18,4) text, booleans as 0/1."""
    columns = []
    for name, column in zip(table.column_names, table.columns):
        if name == PRICE:
            column = pc.cast(column, pa.string())
        elif name == ACTIVE:
            column = pc.cast(column, pa.int8())
        columns.append(column.to_pylist())
    return zip(*columns)

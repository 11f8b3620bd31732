"""The product catalog's database: SQLite by default, PostgreSQL in production.

Assets see only ``CatalogDatabase``: `staging(plan)` opens one upload's transaction (rows
go in as they are validated; `finish` applies them; leaving the block without it rolls
back), `apply` does the same for rows already validated, `migrate` brings the schema up
to date (each upload also does it first). The table's schema and the upsert's rules are
in engine/catalog/migrations.py and engine/catalog/upsert.py.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable

import dagster as dg
import pyarrow as pa

from engine.catalog.postgres_store import PostgresCatalog
from engine.catalog.sqlite_store import SqliteCatalog
from engine.catalog.upsert import StageProgress, UpsertCounts, UpsertPlan


class CatalogDatabase(dg.ConfigurableResource):
    @abstractmethod
    def catalog(self) -> PostgresCatalog | SqliteCatalog:
        """The engine object that talks to the database."""

    @abstractmethod
    def describe(self) -> str:
        """Where the table is, for metadata and logs (no password)."""

    def staging(self, plan: UpsertPlan, progress: StageProgress | None = None):
        return self.catalog().staging(plan, progress)

    def apply(self, batches: Iterable[pa.Table], plan: UpsertPlan, progress: StageProgress | None = None) -> UpsertCounts:
        return self.catalog().apply(batches, plan, progress)

    def migrate(self) -> list[int]:
        return self.catalog().migrate()

    def count(self) -> int:
        return self.catalog().count()

    def rows(self, skus: list[str] | None = None) -> list[dict]:
        return self.catalog().rows(skus)


class SqliteCatalogDatabase(CatalogDatabase):
    """A SQLite file: needs nothing started. Uploads apply one at a time (its write lock)."""

    path: str
    table: str = "products"
    busy_timeout_seconds: float = 300.0

    def catalog(self) -> SqliteCatalog:
        return SqliteCatalog(self.path, table=self.table, busy_timeout_seconds=self.busy_timeout_seconds)

    def describe(self) -> str:
        return f"sqlite:{self.path}#{self.table}"


class PostgresCatalogDatabase(CatalogDatabase):
    """PostgreSQL through psycopg 3. `url` is a libpq URL or key=value string; in
    production it comes from dg.EnvVar (FLOODGATE_CATALOG_DATABASE_URL) and is never shown."""

    url: str
    db_schema: str = "public"  # ("schema" is taken by pydantic)
    table: str = "products"
    lock_timeout_seconds: float = 300.0  # how long an upload waits for a row another writer holds
    work_mem_mb: int = 256  # for the upsert's join, in this transaction only
    # an upload holds up to this many products' row fingerprints (8 bytes each) to leave out
    # the rows it would not change before sending them (engine/catalog/row_fingerprints.py)
    fingerprint_limit: int = 2_000_000

    def catalog(self) -> PostgresCatalog:
        return PostgresCatalog(
            self.url, schema=self.db_schema, table=self.table,
            lock_timeout_seconds=self.lock_timeout_seconds, work_mem_mb=self.work_mem_mb,
            fingerprint_limit=self.fingerprint_limit,
        )

    def describe(self) -> str:
        return f"postgresql:{safe_location(self.url)}/{self.db_schema}.{self.table}"


def safe_location(url: str) -> str:
    """host:port/dbname of a connection string, without user or password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - an unparsable string: say nothing of it
        return "(unparsable connection string)"
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    return f"{host}:{port}/{parts.get('dbname') or ''}"

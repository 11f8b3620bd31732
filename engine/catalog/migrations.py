"""The products table's schema, as numbered migrations the project applies itself.

Each migration has the same meaning in PostgreSQL and in SQLite; a table
`catalog_migrations (target, version, name, applied_at)` beside the products table records
which ones a table has had (target is the products table's name, so one schema can hold
several catalogs, and each test its own). `migrate_*` applies the missing ones in order,
each in its own transaction; in PostgreSQL under an advisory lock, so two runs starting at
once do not both apply one.

The table: sku (primary key: the unique index every upsert and lookup uses), name,
description, price (numeric(18,4) ≥ 0), stock (integer ≥ 0), active (boolean, default
true), attributes (JSON object of the columns the catalog does not know), created_at and
updated_at, both set by the database: created_at by its default, updated_at by a trigger
on every update that changes the row. Indexes: active, created_at, (active, created_at),
the ways the catalog is read (active products, newest first). row_fingerprint (migration 2):
a hash of the upload row that last wrote the product, which lets an upload leave out rows
it would not change before sending them (row_fingerprints.py); a trigger clears it when
anything else changes the product.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,50}$")
MIGRATIONS_TABLE = "catalog_migrations"


def check_identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a plain SQL identifier (letters, digits, _; at most 51 characters)")
    return name


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    postgres: tuple[str, ...]  # statements; {schema} and {table} are plain identifiers, checked
    sqlite: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "products table, indexes, updated_at trigger",
        postgres=(
            """CREATE TABLE {schema}.{table} (
                sku text PRIMARY KEY,
                name text,
                description text,
                price numeric(18, 4) CHECK (price >= 0),
                stock integer CHECK (stock >= 0),
                active boolean NOT NULL DEFAULT true,
                attributes jsonb NOT NULL DEFAULT '{{}}'::jsonb,
                created_at timestamptz NOT NULL DEFAULT now(),
                updated_at timestamptz NOT NULL DEFAULT now()
            )""",
            "CREATE INDEX {table}_active_idx ON {schema}.{table} (active)",
            "CREATE INDEX {table}_created_at_idx ON {schema}.{table} (created_at)",
            "CREATE INDEX {table}_active_created_at_idx ON {schema}.{table} (active, created_at)",
            """CREATE FUNCTION {schema}.{table}_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                NEW.updated_at := now();
                RETURN NEW;
            END
            $$""",
            """CREATE TRIGGER {table}_touch_updated_at BEFORE UPDATE ON {schema}.{table}
            FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
            EXECUTE FUNCTION {schema}.{table}_touch_updated_at()""",
        ),
        sqlite=(
            """CREATE TABLE {table} (
                sku TEXT PRIMARY KEY NOT NULL,
                name TEXT,
                description TEXT,
                price TEXT CHECK (price IS NULL OR CAST(price AS REAL) >= 0),
                stock INTEGER CHECK (stock >= 0),
                active INTEGER NOT NULL DEFAULT 1,
                attributes TEXT NOT NULL DEFAULT '{{}}',
                created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
                updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
            ) WITHOUT ROWID""",
            "CREATE INDEX {table}_active_idx ON {table} (active)",
            "CREATE INDEX {table}_created_at_idx ON {table} (created_at)",
            "CREATE INDEX {table}_active_created_at_idx ON {table} (active, created_at)",
            # An AFTER trigger that sets updated_at once (recursive triggers are off by default).
            """CREATE TRIGGER {table}_touch_updated_at AFTER UPDATE ON {table}
            FOR EACH ROW WHEN NEW.updated_at IS OLD.updated_at
            BEGIN
                UPDATE {table} SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE sku = NEW.sku;
            END""",
        ),
    ),
    Migration(
        2,
        "row_fingerprint: the upload row last applied, cleared by other writes",
        postgres=(
            # nullable without a default: added without rewriting the table
            "ALTER TABLE {schema}.{table} ADD COLUMN row_fingerprint bigint",
            """COMMENT ON COLUMN {schema}.{table}.row_fingerprint IS
            'floodgate: hash of the upload row that last wrote this product; NULL once anything else changes it'""",
            """CREATE FUNCTION {schema}.{table}_forget_fingerprint() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                NEW.row_fingerprint := NULL;
                RETURN NEW;
            END
            $$""",
            # an update that changes the product but does not set a new fingerprint comes
            # from outside floodgate's uploads: the stored one no longer describes the row
            """CREATE TRIGGER {table}_forget_fingerprint BEFORE UPDATE ON {schema}.{table}
            FOR EACH ROW WHEN (OLD.row_fingerprint IS NOT NULL
                AND NEW.row_fingerprint IS NOT DISTINCT FROM OLD.row_fingerprint AND OLD.* IS DISTINCT FROM NEW.*)
            EXECUTE FUNCTION {schema}.{table}_forget_fingerprint()""",
        ),
        # The SQLite store compares every row in the database (its tables are local and
        # small): the column stays NULL there, which means "not known".
        sqlite=("ALTER TABLE {table} ADD COLUMN row_fingerprint INTEGER",),
    ),
)


def migrate_postgres(conn, schema: str, table: str) -> list[int]:
    """Apply the missing migrations to schema.table; return the versions applied now."""
    schema, table = check_identifier(schema), check_identifier(table)
    applied_now = []
    with conn.transaction():
        # CREATE SCHEMA IF NOT EXISTS needs CREATE on the whole database even when the schema
        # is there: a role that owns its schema and nothing more runs every upload's migrations
        if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema.lower(),)).fetchone():
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {schema}.{MIGRATIONS_TABLE} (
                target text NOT NULL, version integer NOT NULL, name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (target, version))"""
        )
    for migration in MIGRATIONS:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"floodgate.catalog:{schema}.{table}",))
            done = conn.execute(
                f"SELECT 1 FROM {schema}.{MIGRATIONS_TABLE} WHERE target = %s AND version = %s", (table, migration.version)
            ).fetchone()
            if done:
                continue
            for statement in migration.postgres:
                conn.execute(statement.format(schema=schema, table=table))
            conn.execute(
                f"INSERT INTO {schema}.{MIGRATIONS_TABLE} (target, version, name) VALUES (%s, %s, %s)",
                (table, migration.version, migration.name),
            )
            applied_now.append(migration.version)
    return applied_now


def migrate_sqlite(conn, table: str) -> list[int]:
    """The same for a SQLite connection (in autocommit mode: isolation_level=None)."""
    table = check_identifier(table)
    conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
            target TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL,
            applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')), PRIMARY KEY (target, version))"""
    )
    applied_now = []
    for migration in MIGRATIONS:
        conn.execute("BEGIN IMMEDIATE")  # one writer: a second run waits here, then sees it done
        try:
            done = conn.execute(
                f"SELECT 1 FROM {MIGRATIONS_TABLE} WHERE target = ? AND version = ?", (table, migration.version)
            ).fetchone()
            if not done:
                for statement in migration.sqlite:
                    conn.execute(statement.format(table=table))
                conn.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} (target, version, name) VALUES (?, ?, ?)",
                    (table, migration.version, migration.name),
                )
                applied_now.append(migration.version)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return applied_now

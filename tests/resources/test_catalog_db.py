"""The catalog database (issue 5, item 4) in the real PostgreSQL on loopback and in SQLite:
migrations, the upsert's counts and rules, and all-or-nothing under failures injected
mid-upload (an exception while staging, a connection killed during the upsert).

Each PostgreSQL test works in a schema of its own, dropped afterwards.
"""

import os
import threading
import time
import uuid
from decimal import Decimal

import pyarrow as pa
import pytest

from conftest import require_service
from engine.catalog.upsert import UpsertPlan
from engine.catalog.validate import PRICE_TYPE
from resources.catalog_db import PostgresCatalogDatabase, SqliteCatalogDatabase, safe_location

POSTGRES_URL = os.environ.get("FLOODGATE_TEST_POSTGRES_URL", "host=127.0.0.1 port=5432 dbname=test")
FULL = ["sku", "name", "description", "price", "stock", "active"]


def postgres_or_skip() -> str:
    import psycopg

    for url in (POSTGRES_URL, POSTGRES_URL + " user=postgres"):
        try:
            psycopg.connect(url, connect_timeout=3).close()
            return url
        except psycopg.Error:
            continue
    require_service(f"PostgreSQL at {safe_location(POSTGRES_URL)} is not reachable: start it or set FLOODGATE_TEST_POSTGRES_URL")


@pytest.fixture
def postgres_database():
    import psycopg

    url = postgres_or_skip()
    schema = f"test_catalog_{uuid.uuid4().hex[:12]}"
    yield PostgresCatalogDatabase(url=url, db_schema=schema)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(params=["postgres", "sqlite"])
def database(request, tmp_path):
    if request.param == "sqlite":
        return SqliteCatalogDatabase(path=str(tmp_path / "catalog.sqlite"))
    return request.getfixturevalue("postgres_database")


def batch(rows: list[dict], fields=FULL, attributes: int = 0) -> pa.Table:
    """Validated rows as the validation step makes them (output_schema)."""
    types = {"sku": pa.string(), "name": pa.string(), "description": pa.string(), "price": PRICE_TYPE,
             "stock": pa.int32(), "active": pa.bool_()}
    columns = {"row": pa.array([r["row"] for r in rows], pa.int64())}
    for f in fields:
        columns[f] = pa.array([r.get(f) for r in rows], types[f])
    for i in range(attributes):
        columns[f"attr_{i}"] = pa.array([r.get(f"attr_{i}") for r in rows], pa.string())
    return pa.table(columns)


def product(i: int, **changes) -> dict:
    row = {"row": i + 2, "sku": f"S{i:04d}", "name": f"Name {i}", "description": "d", "price": Decimal(f"{i}.50"),
           "stock": i, "active": i % 2 == 0}
    row.update(changes)
    return row


def snapshot(database) -> list[dict]:
    """Every row, as stored (PostgreSQL: with each row version's xmin, which a write changes)."""
    if isinstance(database, PostgresCatalogDatabase):
        import psycopg

        with psycopg.connect(database.url) as conn, conn.cursor() as cursor:
            cursor.execute(f"SELECT *, xmin::text AS version FROM {database.db_schema}.products ORDER BY sku")
            names = [d.name for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]
    return database.rows()


def staging_tables(database) -> list[str]:
    """Staging tables in the catalog's schema, as any other session sees them (PostgreSQL; in
    SQLite staging is a temporary table of the upload's connection)."""
    if not isinstance(database, PostgresCatalogDatabase):
        return []
    import psycopg

    with psycopg.connect(database.url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE 'floodgate_staging%%'",
            (database.db_schema,))]


def test_migrations_run_once_and_make_the_indexes(database):
    assert database.migrate() == [1, 2]
    assert database.migrate() == []
    if isinstance(database, PostgresCatalogDatabase):
        import psycopg

        with psycopg.connect(database.url) as conn:
            indexes = {r[0]: r[1] for r in conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = 'products'",
                (database.db_schema,))}
            recorded = conn.execute(f"SELECT target, version FROM {database.db_schema}.catalog_migrations").fetchall()
    else:
        import sqlite3

        with sqlite3.connect(database.path) as conn:
            indexes = {r[1]: "" for r in conn.execute("PRAGMA index_list(products)")}
            recorded = conn.execute("SELECT target, version FROM catalog_migrations").fetchall()
    assert {"products_active_idx", "products_created_at_idx", "products_active_created_at_idx"} <= set(indexes)
    assert any("pkey" in name or "autoindex" in name for name in indexes)  # sku unique
    assert sorted(recorded) == [("products", 1), ("products", 2)]


def test_insert_then_unchanged_then_update_with_database_timestamps(database):
    plan = UpsertPlan(fields=FULL, attributes=[])
    first = database.apply([batch([product(i) for i in range(100)])], plan)
    assert (first.staged, first.inserted, first.updated, first.unchanged) == (100, 100, 0, 0)
    before = {r["sku"]: r for r in snapshot(database)}

    again = database.apply([batch([product(i) for i in range(100)])], plan)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 100)
    assert {r["sku"]: r for r in snapshot(database)} == before  # not one row rewritten (same xmin in PostgreSQL)

    changed = database.apply([batch([product(1, price=Decimal("99.99")), product(2), product(500)])], plan)
    assert (changed.inserted, changed.updated, changed.unchanged) == (1, 1, 1)
    after = {r["sku"]: r for r in snapshot(database)}
    assert after["S0001"]["price"] == Decimal("99.99")
    assert after["S0001"]["updated_at"] > before["S0001"]["updated_at"]
    assert after["S0001"]["created_at"] == before["S0001"]["created_at"]
    assert after["S0002"] == before["S0002"]
    assert after["S0500"]["created_at"] == after["S0500"]["updated_at"]
    assert staging_tables(database) == []  # each upload dropped its own before committing


def test_columns_the_file_lacks_are_left_alone_and_attributes_merge(database):
    database.apply([batch([product(1, attr_0="red", attr_1="L")], attributes=2)],
                   UpsertPlan(fields=FULL, attributes=["colour", "size"]))
    # a price list: sku and price only, and one attribute, emptied
    counts = database.apply([batch([{"row": 2, "sku": "S0001", "price": Decimal("5"), "attr_0": None}],
                                   fields=["sku", "price"], attributes=1)],
                            UpsertPlan(fields=["sku", "price"], attributes=["size"]))
    assert counts.updated == 1
    (row,) = database.rows(["S0001"])
    assert row["price"] == Decimal("5") and row["name"] == "Name 1" and row["stock"] == 1
    assert row["attributes"] == {"colour": "red"}  # size removed by its empty cell, colour kept
    same = database.apply([batch([{"row": 2, "sku": "S0001", "price": Decimal("5.0000"), "attr_0": None}],
                                 fields=["sku", "price"], attributes=1)],
                          UpsertPlan(fields=["sku", "price"], attributes=["size"]))
    assert same.unchanged == 1


def test_new_products_get_the_defaults_of_columns_the_file_lacks(database):
    database.apply([batch([{"row": 2, "sku": "NEW"}], fields=["sku"])], UpsertPlan(fields=["sku"], attributes=[]))
    (row,) = database.rows(["NEW"])
    assert row["active"] is True and row["attributes"] == {} and row["name"] is None


def test_a_repeated_sku_is_applied_from_its_last_row(database):
    """As validate_upload does with a file: the earlier rows of a SKU are not applied, also
    when they are in another batch."""
    rows = [product(1, name="first"), product(2), product(1, row=10, name="middle")]
    counts = database.apply([batch(rows), batch([product(1, row=11, name="last")])], UpsertPlan(fields=FULL, attributes=[]))
    assert counts.staged == 2 and counts.inserted == 2 and database.rows(["S0001"])[0]["name"] == "last"


# cells PostgreSQL's COPY text format would misread (escapes, separators, its NULL marker),
# and some it carries as they are
AWKWARD = ["tab\there", "line\nbreak", "carriage\rreturn", 'inch "mark"', "back\\slash", "\\N", "\\.", "comma, semi;",
           "ünïcödé ✓", "  spaced  "]


def text_payload(table: pa.Table) -> bytes | None:
    from engine.catalog.postgres_store import TextPayloads

    payload = TextPayloads(1 << 16)(table)
    return None if payload is None else payload.tobytes()


def test_copy_text_format_is_written_only_for_batches_it_can_carry():
    plain = batch([product(1, attr_0=None), product(2, name=None, attr_0="x, y")], attributes=1)
    assert text_payload(plain) == b"3\tS0001\tName 1\td\t1.5000\t1\tfalse\t\\N\n4\tS0002\t\\N\td\t2.5000\t2\ttrue\tx, y\n"
    for value in AWKWARD:
        carried = text_payload(batch([product(1, name=value, description=None)])) is not None
        assert carried == (not any(c in value for c in '\t\n\r"\\')), value


def test_copy_text_is_written_into_one_buffer_that_grows_for_a_batch_larger_than_it():
    from engine.catalog.postgres_store import TextPayloads

    large = batch([product(i, description="d" * 200) for i in range(40)])
    small = batch([product(1), product(2, name=None)])
    payloads = TextPayloads(size=1024)
    written = payloads(large)
    assert len(written) > 1024 and written == text_payload(large)
    again = payloads(small)  # the same buffer, now holding the small batch's text only
    assert again == text_payload(small) and len(again) < 1024
    assert payloads(batch([product(3, name="back\\slash")])) is None


def test_every_cell_arrives_as_it_was_whichever_copy_format_carries_it(database):
    """Plain batches go as COPY text format, and from the first batch text cannot carry on, as
    CSV: the values and NULLs come back the same in both, before and after the switch."""
    plan = UpsertPlan(fields=FULL, attributes=["Colour"])
    plain = [product(i, attr_0=None if i % 3 else f"c{i}", name=None if i % 4 == 0 else f"Name {i}") for i in range(6)]
    awkward = [product(10 + i, name=v, description=v, attr_0=v) for i, v in enumerate(AWKWARD)]
    after = [product(30 + i, description=None, attr_0="plain") for i in range(3)]
    counts = database.apply([batch(plain, attributes=1), batch(awkward, attributes=1), batch(after, attributes=1)], plan)
    assert counts.staged == counts.inserted == len(plain) + len(awkward) + len(after)
    rows = {r["sku"]: r for r in database.rows()}
    for p in plain + awkward + after:
        row = rows[p["sku"]]
        assert (row["name"], row["description"], row["price"], row["stock"], row["active"]) == (
            p["name"], p["description"], p["price"], p["stock"], p["active"])
        assert row["attributes"] == ({} if p["attr_0"] is None else {"Colour": p["attr_0"]})
    again = database.apply([batch(plain, attributes=1), batch(awkward, attributes=1), batch(after, attributes=1)], plan)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, counts.staged)


def test_an_error_while_staging_leaves_the_table_as_it_was(database):
    plan = UpsertPlan(fields=FULL, attributes=[])
    database.apply([batch([product(i) for i in range(50)])], plan)
    before = snapshot(database)
    with pytest.raises(RuntimeError, match="injected"):
        with database.staging(plan) as staging:
            staging.write(batch([product(i, price=Decimal("1")) for i in range(50)]))
            staging.write(batch([product(i) for i in range(50, 80)]))
            raise RuntimeError("injected after two batches were staged")
    assert snapshot(database) == before
    assert staging_tables(database) == []  # rolled back with the rest


def start_upload(database, rows: list[dict], plan: UpsertPlan) -> tuple[threading.Thread, list]:
    """database.apply on a thread of its own; the list gets its counts, or what it raised."""
    outcome: list = []

    def upload():
        try:
            outcome.append(database.apply([batch(rows)], plan))
        except BaseException as exc:  # noqa: BLE001 - what the upload raised is the result
            outcome.append(exc)

    thread = threading.Thread(target=upload)
    thread.start()
    return thread, outcome


def upload_waiting_on_a_lock(watcher, statement_like: str, timeout: float = 60.0) -> int | None:
    """The backend pid of the upload's statement (a LIKE pattern) once it waits on a row
    lock, polled from another connection; None when it never does within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = watcher.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'floodgate-catalog' "
            "AND wait_event_type = 'Lock' AND query LIKE %s",
            (statement_like,),
        ).fetchone()
        if row:
            return row[0]
    return None


def test_a_connection_killed_during_the_upsert_leaves_the_table_as_it_was(postgres_database):
    """pg_terminate_backend from another connection while the upsert runs: after the new rows
    are inserted, its UPDATE waits on a row another transaction holds, so the kill lands
    mid-statement, every time."""
    import psycopg

    database = postgres_database
    plan = UpsertPlan(fields=FULL, attributes=[])
    database.apply([batch([product(i) for i in range(200)])], plan)
    before = snapshot(database)
    with psycopg.connect(database.url) as holder, psycopg.connect(database.url, autocommit=True) as watcher:
        holder.execute(f"SELECT 1 FROM {database.db_schema}.products WHERE sku = 'S0150' FOR UPDATE")
        thread, failure = start_upload(database, [product(i, price=Decimal("7.77")) for i in range(300)], plan)
        pid = upload_waiting_on_a_lock(watcher, "UPDATE %")
        assert pid is not None, "the update never waited on the held row"
        assert watcher.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
        thread.join(60)
        holder.rollback()
    assert failure and isinstance(failure[0], psycopg.OperationalError)
    assert snapshot(database) == before  # prices, timestamps and row versions all as before
    assert staging_tables(database) == []  # the server rolled back its creation
    assert database.apply([batch([product(i, price=Decimal("7.77")) for i in range(300)])], plan).staged == 300


def test_a_sku_another_writer_adds_during_the_upload_is_updated_not_a_failure(postgres_database):
    """An application outside floodgate inserts S0005 after the upload's join has marked it
    new: the upload's INSERT waits on that row, then meets a unique violation when it commits.
    The upload falls back to ON CONFLICT and applies every row, S0005 included."""
    import psycopg

    database = postgres_database
    plan = UpsertPlan(fields=FULL, attributes=[])
    database.migrate()
    with psycopg.connect(database.url) as writer, psycopg.connect(database.url, autocommit=True) as watcher:
        writer.execute(f"INSERT INTO {database.db_schema}.products (sku, name) VALUES ('S0005', 'by the app')")
        thread, outcome = start_upload(database, [product(i, name="uploaded") for i in range(10)], plan)
        pid = upload_waiting_on_a_lock(watcher, "INSERT INTO %changes%")
        assert pid is not None, "the upload's insert never waited on the app's row"
        writer.commit()
        thread.join(60)
    (counts,) = outcome
    assert not isinstance(counts, BaseException), counts
    assert (counts.inserted, counts.updated, counts.unchanged) == (9, 1, 0)
    rows = database.rows()
    assert [r["sku"] for r in rows] == [f"S{i:04d}" for i in range(10)] and {r["name"] for r in rows} == {"uploaded"}


def fingerprints(database) -> dict[str, int | None]:
    import psycopg

    with psycopg.connect(database.url) as conn:
        return dict(conn.execute(f"SELECT sku, row_fingerprint FROM {database.db_schema}.products ORDER BY sku").fetchall())


def test_an_unchanged_reimport_sends_no_row_and_writes_none(postgres_database):
    """Each row written stores its fingerprint; an upload of the same rows leaves them all
    out before the COPY (row_fingerprints.py) and counts them unchanged; a changed row is
    sent, applied, and stores its own fingerprint."""
    database, plan = postgres_database, UpsertPlan(fields=FULL, attributes=["Colour"])
    rows = [product(i, attr_0="red" if i % 2 else None) for i in range(200)]
    first = database.apply([batch(rows[:120], attributes=1), batch(rows[120:], attributes=1)], plan)
    assert (first.staged, first.skipped, first.inserted) == (200, 0, 200)
    stored = fingerprints(database)
    assert None not in stored.values() and len(set(stored.values())) == 200
    before = snapshot(database)

    renumbered = [dict(r, row=r["row"] + 1000) for r in reversed(rows)]  # other row numbers, other order
    again = database.apply([batch(renumbered, attributes=1)], plan)
    assert (again.staged, again.skipped, again.inserted, again.updated, again.unchanged) == (0, 200, 0, 0, 200)
    assert snapshot(database) == before  # not one row version more

    changed = rows[:7] + [product(7, price=Decimal("70.25"), attr_0="red")] + rows[8:]
    counts = database.apply([batch(changed, attributes=1)], plan)
    assert (counts.staged, counts.skipped, counts.updated, counts.unchanged) == (1, 199, 1, 199)
    after = fingerprints(database)
    assert after["S0007"] not in (None, stored["S0007"]) and {k: v for k, v in after.items() if k != "S0007"} == {
        k: v for k, v in stored.items() if k != "S0007"}
    assert database.rows(["S0007"])[0]["price"] == Decimal("70.25")


def test_a_product_changed_or_deleted_by_another_writer_is_applied_again(postgres_database):
    """A write from outside floodgate's uploads clears the product's fingerprint (the
    trigger of migration 2), so the next upload sends that row and puts the file's values
    back; a deleted product is inserted again. An update that changes nothing keeps it."""
    import psycopg

    database, plan = postgres_database, UpsertPlan(fields=FULL, attributes=[])
    rows = [product(i) for i in range(50)]
    database.apply([batch(rows)], plan)
    stored = fingerprints(database)
    target = f"{database.db_schema}.products"
    with psycopg.connect(database.url, autocommit=True) as app:
        app.execute(f"UPDATE {target} SET stock = stock - 1 WHERE sku = 'S0010'")
        app.execute(f"UPDATE {target} SET name = name WHERE sku = 'S0011'")  # no change
        app.execute(f"DELETE FROM {target} WHERE sku = 'S0012'")
    now = fingerprints(database)
    assert now["S0010"] is None and now["S0011"] == stored["S0011"] and "S0012" not in now

    counts = database.apply([batch(rows)], plan)
    assert (counts.staged, counts.skipped, counts.inserted, counts.updated, counts.unchanged) == (2, 48, 1, 1, 48)
    assert [(r["sku"], r["stock"]) for r in database.rows(["S0010", "S0012"])] == [("S0010", 10), ("S0012", 12)]
    assert fingerprints(database) == stored


def test_rows_without_a_fingerprint_are_compared_in_the_database(postgres_database):
    """Products written before migration 2, or by another writer, have none: their rows are
    sent and compared in the database, and an unchanged one is still not written. So is
    every row when the table holds more products than the upload keeps fingerprints of."""
    import psycopg

    database, plan = postgres_database, UpsertPlan(fields=FULL, attributes=[])
    rows = [product(i) for i in range(60)]
    database.apply([batch(rows)], plan)
    with psycopg.connect(database.url, autocommit=True) as conn:
        conn.execute(f"UPDATE {database.db_schema}.products SET row_fingerprint = NULL WHERE sku < 'S0020'")
    before = snapshot(database)
    counts = database.apply([batch(rows)], plan)
    assert (counts.staged, counts.skipped, counts.updated, counts.unchanged) == (20, 40, 0, 60)
    assert snapshot(database) == before

    few = PostgresCatalogDatabase(url=database.url, db_schema=database.db_schema, fingerprint_limit=39)
    counts = few.apply([batch(rows[:30]), batch(rows[30:])], plan)  # 40 fingerprints: more than it keeps
    assert (counts.staged, counts.skipped, counts.inserted, counts.updated, counts.unchanged) == (60, 0, 0, 0, 60)
    assert snapshot(database) == before


def test_a_repeated_sku_left_out_as_unchanged_is_still_superseded(postgres_database):
    """S0003 twice: its first row is the product as it stands (left out before the COPY), its
    last row a change, which is applied; S0004's first row a change and its last row the
    product as it stands: nothing is written. The counts leave superseded rows out."""
    database, plan = postgres_database, UpsertPlan(fields=FULL, attributes=[])
    rows = [product(i) for i in range(10)]
    database.apply([batch(rows)], plan)
    before = {r["sku"]: r for r in snapshot(database)}
    upload = rows + [product(3, row=20, price=Decimal("33.00")), product(4, row=21, price=Decimal("44.00")),
                     product(4, row=22)]
    counts = database.apply([batch(upload)], plan)
    assert (counts.inserted, counts.updated, counts.unchanged) == (0, 1, 9)
    after = {r["sku"]: r for r in snapshot(database)}
    assert after["S0003"]["price"] == Decimal("33.00")
    assert {k: v for k, v in after.items() if k != "S0003"} == {k: v for k, v in before.items() if k != "S0003"}


def test_a_role_with_create_on_its_schema_alone_can_upload(postgres_database):
    """The role the README asks for: CREATE on the catalog's schema, not on the database."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    database, role = postgres_database, f"test_catalog_role_{uuid.uuid4().hex[:8]}"
    schema = database.db_schema
    with psycopg.connect(database.url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        try:
            admin.execute(f"CREATE SCHEMA {schema} AUTHORIZATION {role}")
            assert not admin.execute("SELECT has_database_privilege(%s, current_database(), 'CREATE')", (role,)).fetchone()[0]
            limited = PostgresCatalogDatabase(url=make_conninfo(database.url, user=role), db_schema=schema)
            counts = limited.apply([batch([product(1), product(2)])], UpsertPlan(fields=FULL, attributes=[]))
            assert (counts.inserted, counts.updated) == (2, 0)
            counts = limited.apply([batch([product(1), product(2, price=Decimal("9.50"))])], UpsertPlan(fields=FULL, attributes=[]))
            assert (counts.inserted, counts.updated, counts.unchanged) == (0, 1, 1)
        finally:
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            admin.execute(f"DROP ROLE {role}")


def test_describe_never_shows_the_password():
    database = PostgresCatalogDatabase(url="postgresql://floodgate:hunter2@db.internal:6543/catalog")
    assert database.describe() == "postgresql:db.internal:6543/catalog/public.products"
    assert "hunter2" not in database.describe()

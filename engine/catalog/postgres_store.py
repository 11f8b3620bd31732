"""The products table in PostgreSQL (psycopg 3): COPY into a staging table, then apply.

In one transaction: the validated rows are streamed with COPY (written by Arrow, in C, a
batch at a time: PostgreSQL's text format, or CSV for the batches text cannot carry) into a
staging table the transaction creates and drops (`staging_sql`), each with its row
fingerprint, and without the rows whose fingerprint says their product is as they would
leave it (row_fingerprints.py: an unchanged re-import sends nothing); then `apply_staged` runs

    CREATE TEMPORARY TABLE changes AS SELECT … FROM staging LEFT JOIN products …
        WHERE the product is new or differs;
    INSERT INTO products SELECT … FROM changes WHERE new;
    UPDATE products … FROM changes WHERE not new AND the row still differs;

One join finds what to write, so unchanged rows cost nothing but the join (no row
version, no index entry), and new rows go in with a plain INSERT. The single statement
this replaced, INSERT … ON CONFLICT (sku) DO UPDATE, paid for a speculative insertion per
row: 4.5 s against 2.9 s for MERGE and about 3.3 s for these three on a first import of
500k rows (MERGE would do, but PostgreSQL before 17 cannot say how many rows it inserted
and how many it updated). ON CONFLICT is still the fallback: a writer outside floodgate
that adds one of the upload's SKUs between the join and the INSERT makes the INSERT fail
with a unique violation; it is rolled back to a savepoint and the ON CONFLICT statement
applies the staging table instead.

The staging table is UNLOGGED, not TEMPORARY, so that the join can run in parallel:
PostgreSQL's parallel workers cannot read a session's temporary tables. On an unchanged
re-import of 500k rows the parallel hash join took 0.36 s against 0.60 s (2 cores,
docs/PERFORMANCE.md). Created inside the upload's transaction and dropped before its
commit, the table is never visible to another session, and a rollback (a failure, a
dropped connection) removes it with everything else; its name is the upload's own, so
uploads into different tables never meet. Its rows pass through shared buffers.

If anything fails, the connection drops, or the reject limit is hit, the transaction
rolls back and the table is as before.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import queue
import threading
import time
import uuid
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from engine.catalog.columns import ACTIVE, DESCRIPTION, NAME, PRICE, SKU, STOCK
from engine.catalog.migrations import check_identifier, migrate_postgres
from engine.catalog.repeated_skus import apply_last_occurrences
from engine.catalog.row_fingerprints import FINGERPRINT_COLUMN, RowFilter, read_known
from engine.catalog.upsert import StageProgress, UpsertCounts, UpsertPlan

APPLICATION_NAME = "floodgate-catalog"
_STAGING_TYPES = {SKU: "text", NAME: "text", DESCRIPTION: "text", PRICE: "numeric(18,4)", STOCK: "integer",
                  ACTIVE: "boolean"}
_ANALYZE_BELOW = 50_000
_CSV = pcsv.WriteOptions(include_header=False, quoting_style="needed")
# PostgreSQL's text format as Arrow writes it: tab-separated, nothing quoted, NULL as \N.
# Arrow refuses (ArrowInvalid) a value with a tab, a line break or a double quote; a
# backslash it writes as it is, and text format would read it as an escape.
_TEXT = pcsv.WriteOptions(include_header=False, quoting_style="none", delimiter="\t", null_string="\\N")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def upsert_sql(schema: str, table: str, plan: UpsertPlan, staging: str) -> str:
    """One statement that applies the staging table with ON CONFLICT; returns (inserted,
    updated). The fallback of `apply_staged`, and the whole of it for a file of SKUs only."""
    target = f"{check_identifier(schema)}.{check_identifier(table)}"
    columns, values = _columns_and_values(plan, "s", "o")
    if not columns:  # a file of SKUs only: new products are added, nothing else changes
        return f"""WITH upserted AS (
            INSERT INTO {target} (sku, {FINGERPRINT_COLUMN}) SELECT s.sku, s.{FINGERPRINT_COLUMN} FROM {staging} s
            ON CONFLICT (sku) DO NOTHING RETURNING true AS inserted)
            SELECT count(*), 0 FROM upserted"""
    existing = ", ".join(f"p.{c}" for c in columns)
    excluded = ", ".join(f"EXCLUDED.{c}" for c in columns)
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in [*columns, FINGERPRINT_COLUMN])
    row = "ROW" if len(columns) == 1 else ""  # a one-column row needs the ROW keyword
    # the join leaves unchanged rows out before the INSERT sees them: ON CONFLICT DO UPDATE
    # locks (and so writes) every conflicting row even when its WHERE is false
    return f"""WITH upserted AS (
        INSERT INTO {target} AS p (sku, {", ".join(columns)}, {FINGERPRINT_COLUMN})
        SELECT s.sku, {", ".join(values)}, s.{FINGERPRINT_COLUMN}
        FROM {staging} s LEFT JOIN {target} o ON o.sku = s.sku
        WHERE o.sku IS NULL OR {" OR ".join(_differs(plan, "s", "o"))}
        ON CONFLICT (sku) DO UPDATE SET {sets}
        WHERE {row}({existing}) IS DISTINCT FROM {row}({excluded})
        RETURNING (p.xmax = 0) AS inserted)
        SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM upserted"""


def _columns_and_values(plan: UpsertPlan, source: str, existing: str | None) -> tuple[list[str], list[str]]:
    """The product columns the file sets, and their new values from the staged row `source`;
    the file's attributes are merged into those of the product `existing` (None: a new
    product), and an empty cell (null) removes its key."""
    columns = list(plan.updatable)
    values = [f"{source}.{c}" for c in columns]
    if plan.attributes:
        pairs = ", ".join(f"{_literal(key)}, {source}.attr_{i}" for i, key in enumerate(plan.attributes))
        merged = f"coalesce({existing}.attributes, '{{}}'::jsonb) || " if existing else ""
        columns.append("attributes")
        values.append(f"jsonb_strip_nulls({merged}jsonb_build_object({pairs}))")
    return columns, values


def _differs(plan: UpsertPlan, staged: str, product: str) -> list[str]:
    differs = [f"{product}.{c} IS DISTINCT FROM {staged}.{c}" for c in plan.updatable]
    # unchanged iff each of the file's keys has its cell's value (or is absent for an empty
    # cell): compared as text, without building the merged object for every row
    differs += [f"{product}.attributes ->> {_literal(key)} IS DISTINCT FROM {staged}.attr_{i}"
                for i, key in enumerate(plan.attributes)]
    return differs


def changes_sql(schema: str, table: str, plan: UpsertPlan, staging: str) -> str:
    """The staged rows that are new or differ from their product, marked new or not."""
    target = f"{check_identifier(schema)}.{check_identifier(table)}"
    return f"""CREATE TEMPORARY TABLE changes ON COMMIT DROP AS
        SELECT s.*, o.sku IS NULL AS is_new FROM {staging} s LEFT JOIN {target} o ON o.sku = s.sku
        WHERE o.sku IS NULL OR {" OR ".join(_differs(plan, "s", "o"))}"""


def insert_new_sql(schema: str, table: str, plan: UpsertPlan) -> str:
    target = f"{check_identifier(schema)}.{check_identifier(table)}"
    columns, values = _columns_and_values(plan, "c", None)
    return (f"INSERT INTO {target} (sku, {', '.join(columns)}, {FINGERPRINT_COLUMN}) "
            f"SELECT c.sku, {', '.join(values)}, c.{FINGERPRINT_COLUMN} FROM changes c WHERE c.is_new")


def update_changed_sql(schema: str, table: str, plan: UpsertPlan) -> str:
    target = f"{check_identifier(schema)}.{check_identifier(table)}"
    columns, values = _columns_and_values(plan, "c", "p")
    row = "ROW" if len(columns) == 1 else ""  # a one-column row needs the ROW keyword
    # the row is compared again: a writer outside floodgate may have changed it since the join
    sets = [f"{c} = {v}" for c, v in zip(columns, values)] + [f"{FINGERPRINT_COLUMN} = c.{FINGERPRINT_COLUMN}"]
    return f"""UPDATE {target} AS p SET {", ".join(sets)}
        FROM changes c WHERE c.sku = p.sku AND NOT c.is_new
        AND {row}({", ".join(f"p.{c}" for c in columns)}) IS DISTINCT FROM {row}({", ".join(values)})"""


def apply_staged(cursor, schema: str, table: str, plan: UpsertPlan, staging: str) -> tuple[int, int]:
    """Apply the staging table `staging` to the products (see the module's docstring):
    (inserted, updated)."""
    import psycopg

    if not plan.updatable and not plan.attributes:  # a file of SKUs only
        cursor.execute(upsert_sql(schema, table, plan, staging))
        return cursor.fetchone()
    # The planner costs each row the join's workers hand to the leader, and estimates that
    # most staged rows come out (it cannot know that a re-import changes none): at the
    # default cost it never chose the parallel hash join, which is what makes the join of a
    # large upload fast. Set for this transaction only; small uploads stay serial (too small
    # for a parallel scan), and the INSERT and UPDATE that follow are never parallel.
    cursor.execute("SET LOCAL parallel_tuple_cost = 0.001")
    cursor.execute(changes_sql(schema, table, plan, staging))
    if cursor.rowcount == 0:  # an unchanged re-import ends here
        return 0, 0
    try:
        with cursor.connection.transaction():  # a savepoint
            cursor.execute(insert_new_sql(schema, table, plan))
            inserted = cursor.rowcount
            cursor.execute(update_changed_sql(schema, table, plan))
            return inserted, cursor.rowcount
    except psycopg.errors.UniqueViolation:  # another writer added one of the SKUs meanwhile
        cursor.execute(upsert_sql(schema, table, plan, staging))
        return cursor.fetchone()


def staging_name(schema: str) -> str:
    """A name of its own for one upload's staging table, in the catalog's schema."""
    return f"{check_identifier(schema)}.floodgate_staging_{uuid.uuid4().hex[:16]}"


def staging_sql(plan: UpsertPlan, staging: str) -> str:
    """Creates the staging table `staging`; the transaction must drop it before it commits."""
    columns = ["row_no bigint"] + [f"{c} {_STAGING_TYPES[c]}" for c in [SKU, *plan.updatable]]
    columns += [f"attr_{i} text" for i in range(len(plan.attributes))]
    columns.append(f"{FINGERPRINT_COLUMN} bigint")  # NULL where the rows come without one
    return f"CREATE UNLOGGED TABLE {staging} ({', '.join(columns)})"


def copy_payload(table: pa.Table) -> memoryview:
    """A batch as CSV for COPY (FORMAT csv), written by Arrow in C++."""
    buffer = io.BytesIO()
    pcsv.write_csv(table, buffer, _CSV)
    return buffer.getbuffer()


def binary_int8_copy(values: np.ndarray) -> bytes:
    """One int8 column in COPY's binary format: the header, then per row a field count (1),
    the value's length (8) and the value, big-endian; then the trailer. Built by numpy,
    14 bytes a row, without a Python object per value."""
    rows = np.empty(len(values), np.dtype([("fields", ">i2"), ("length", ">i4"), ("value", ">i8")]))
    rows["fields"], rows["length"], rows["value"] = 1, 8, values
    return b"PGCOPY\n\xff\r\n\x00" + bytes(8) + rows.tobytes() + b"\xff\xff"


class TextPayloads:
    """Each batch in PostgreSQL's text format for COPY, or None when a value has a tab, a
    line break, a double quote or a backslash (CSV carries those).

    The server parses text format with a quarter less CPU than the CSV above, where every
    string is quoted (0.34 s against 0.45 s for 500k catalog rows; in whole imports its COPY
    CPU went from 0.71 to 0.46 s, median of 10), and during the copy it shares the cores
    with the reader and validator. (The import's wall time moved less than the noise of a
    busy 2-core machine.) Arrow
    checks for the structural characters as it writes, and the backslashes are looked for
    in the finished bytes, where each NULL is one (\\N): a memchr when the batch has no
    NULL (5 ms for 500k rows), a count otherwise (about 20 ms). An earlier try that scanned
    each string column for these characters instead found the whole copy no faster.

    Arrow writes every batch into the same buffer, kept for the whole COPY (grown when a
    batch's text does not fit), and the COPY gets a view of it: no buffer of a batch's size
    is allocated, grown and freed per batch (a BytesIO did that, and psycopg then copied the
    bytes again in 128 KiB slices; a view it slices without copying). The import's peak
    fell by about 5 MB (engine alone, 3 alternations: 146-148 MB against 150-153 MB), at
    the same CPU. A payload is good until the next call: psycopg has copied it into libpq
    when `write` returns."""

    def __init__(self, size: int = 4 << 20):
        self._allocate(size)

    def _allocate(self, size: int) -> None:
        # anonymous memory: only the pages a batch's text reaches become resident (a
        # bytearray is zero-filled, all 4 MiB of it, for batches of about 1 MiB)
        self._bytes = mmap.mmap(-1, size)
        self._arrow = pa.py_buffer(self._bytes)  # Arrow writes into the mapping

    def __call__(self, table: pa.Table) -> memoryview | None:
        while True:
            writer = pa.FixedSizeBufferWriter(self._arrow)
            try:
                pcsv.write_csv(table, writer, _TEXT)
                break
            except pa.ArrowInvalid:  # a value text format cannot carry
                return None
            except OSError:  # "Write out of bounds": this batch's text is larger than the buffer
                self._allocate(2 * len(self._bytes))
        size = writer.tell()
        nulls = sum(column.null_count for column in table.columns)
        if nulls == 0:
            clean = self._bytes.find(b"\\", 0, size) < 0
        else:
            clean = np.count_nonzero(np.frombuffer(self._bytes, np.uint8, size) == ord("\\")) == nulls
        return memoryview(self._bytes)[:size] if clean else None


class PostgresStaging:
    """One upload's transaction: rows are COPYed into the staging table by a thread of its
    own as they arrive (so the database parses them while the caller validates the next
    batch), then `finish` applies them. Leaving the block without `finish` having
    succeeded rolls everything back."""

    _QUEUED = 2  # batches waiting for the COPY thread: memory against stalls (4 was no faster)

    def __init__(self, catalog: "PostgresCatalog", plan: UpsertPlan, progress: StageProgress | None = None):
        self.catalog, self.plan, self.progress = catalog, plan, progress
        self.counts = UpsertCounts()
        self._conn = None
        self._transaction = None
        self._queue: queue.Queue = queue.Queue(self._QUEUED)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._started = 0.0
        self.staging_table = staging_name(catalog.schema)

    def __enter__(self) -> "PostgresStaging":
        catalog = self.catalog
        self._conn = catalog.connect()
        try:
            migrate_postgres(self._conn, catalog.schema, catalog.table)
            # the join's result (changes) lives in local buffers: room for a 500k-row upload
            self._conn.execute("SET temp_buffers = '256MB'")
            self._transaction = self._conn.transaction()
            self._transaction.__enter__()
            self._conn.execute(f"SET LOCAL lock_timeout = '{int(catalog.lock_timeout_seconds * 1000)}ms'")
            # the join of staging and products hashes in memory instead of in batches on disk
            self._conn.execute(f"SET LOCAL work_mem = '{int(catalog.work_mem_mb)}MB'")
            self._conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"floodgate.catalog:{catalog.target}",)
            )
            self._conn.execute(staging_sql(self.plan, self.staging_table))
        except BaseException:
            self._close(failed=True)
            raise
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._copy, name="catalog-copy", daemon=True)
        self._thread.start()
        return self

    def _copy(self) -> None:
        columns = ", ".join(["row_no", *self.plan.staging_columns, FINGERPRINT_COLUMN])
        text_payloads = TextPayloads()  # one buffer for the whole COPY
        try:
            with self._conn.cursor() as cursor:
                # read while the caller validates the first batches; under the upload lock,
                # so no other upload changes them before this one commits
                unchanged = RowFilter(self.plan, read_known(cursor, self.catalog.target, self.catalog.fingerprint_limit))
                table = self._queue.get()
                # text format while the batches allow it; from the first one that needs CSV
                # on, a second COPY takes the rest as CSV (a file with such values mostly has
                # them in every batch: trying text again would write each batch twice)
                for fmt in ("text", "csv"):
                    if table is None:
                        break
                    with cursor.copy(f"COPY {self.staging_table} ({columns}) FROM STDIN (FORMAT {fmt})") as copy:
                        while table is not None:
                            payload = text_payloads(table) if fmt == "text" else copy_payload(table)
                            if payload is None:
                                break
                            payload, kept, left_out = unchanged(payload, table.num_rows, csv=fmt == "csv")
                            if kept:
                                copy.write(payload)
                            self.counts.staged += kept
                            self.counts.skipped += left_out
                            if self.progress is not None:
                                self.progress(self.counts.staged + self.counts.skipped)
                            table = self._queue.get()
        except BaseException as exc:  # handed to the caller by write() or finish()
            self._error = exc
            while self._queue.get() is not None:  # let the producer finish putting
                pass

    def write(self, table: pa.Table) -> None:
        """Queue validated rows (output_schema's columns) for the staging table."""
        if self._error is not None:
            raise self._error
        if table.num_rows:
            self._queue.put(table.select(["row", *self.plan.staging_columns]))

    def rows_done(self) -> None:
        """No more rows: the COPY ends, and the COPY thread's buffers and the table's
        fingerprints (4.5 MB at 500k products) go before the repeated SKUs are worked out,
        the import's last step and often its peak of memory. Raises what the COPY met."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def finish(self, superseded: Sequence[int] | np.ndarray = ()) -> UpsertCounts:
        """Apply the staged rows but the superseded ones (row numbers), and commit."""
        self.rows_done()  # nothing more to wait for when the caller has said so
        with self._conn.cursor() as cursor:
            if len(superseded):
                # the row numbers COPYed into a table of their own and deleted with a join:
                # `row_no = ANY(array)` compares each staged row with the whole array (a file
                # with every SKU twice, 250k of 500k rows superseded, took 340 s), and a
                # Python list of them as a parameter cost 20 MiB of peak
                cursor.execute("CREATE TEMPORARY TABLE superseded (row_no int8) ON COMMIT DROP")
                with cursor.copy("COPY superseded (row_no) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.write(binary_int8_copy(np.asarray(superseded, np.int64)))
                cursor.execute(f"DELETE FROM {self.staging_table} s USING superseded x WHERE s.row_no = x.row_no")
                self.counts.staged -= cursor.rowcount
                # the others were left out as unchanged, and are superseded rather than unchanged
                self.counts.skipped -= len(superseded) - cursor.rowcount
            if self.counts.staged < _ANALYZE_BELOW:
                # a small upload: with statistics the planner looks its SKUs up by index
                # instead of scanning the whole table (a never-analyzed table is
                # estimated from its size, which for a large upload picks the hash join
                # that ANALYZE would, without its 0.3 s on 500k rows)
                cursor.execute(f"ANALYZE {self.staging_table}")
            self.counts.copy_seconds = time.perf_counter() - self._started
            started = time.perf_counter()
            if self.counts.staged:  # nothing staged: every row was left out as unchanged
                self.counts.inserted, self.counts.updated = apply_staged(
                    cursor, self.catalog.schema, self.catalog.table, self.plan, self.staging_table
                )
            cursor.execute(f"DROP TABLE {self.staging_table}")  # before the commit: never seen by others
        self._close(failed=False)  # commits
        self.counts.upsert_seconds = time.perf_counter() - started
        self.counts.unchanged = self.counts.staged + self.counts.skipped - self.counts.inserted - self.counts.updated
        return self.counts

    def __exit__(self, kind, exc, tb) -> None:
        if self._conn is not None:
            if self._thread is not None and self._thread.is_alive():
                self._queue.put(None)
                self._thread.join()
            self._close(failed=True)

    def _close(self, *, failed: bool) -> None:
        conn, transaction = self._conn, self._transaction
        self._conn = self._transaction = None
        try:
            if transaction is not None:
                if failed:
                    # rolls back; on a dead connection there is nothing to roll back, and the
                    # server has dropped the transaction already
                    with contextlib.suppress(Exception):
                        transaction.__exit__(_RolledBack, _RolledBack(), None)
                else:
                    transaction.__exit__(None, None, None)  # commits, or raises why not
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()


class _RolledBack(Exception):
    pass


class PostgresCatalog:
    def __init__(self, conninfo: str, *, schema: str = "public", table: str = "products",
                 lock_timeout_seconds: float = 300.0, connect_timeout_seconds: int = 30, work_mem_mb: int = 256,
                 fingerprint_limit: int = 2_000_000):
        self.conninfo = conninfo
        self.schema, self.table = check_identifier(schema), check_identifier(table)
        self.lock_timeout_seconds = lock_timeout_seconds
        self.connect_timeout_seconds = connect_timeout_seconds
        self.work_mem_mb = work_mem_mb
        # products whose fingerprints an upload holds in memory (8 bytes each) to leave out
        # unchanged rows before sending them; a larger table has every row compared in the
        # database instead (row_fingerprints.py)
        self.fingerprint_limit = fingerprint_limit

    @property
    def target(self) -> str:
        return f"{self.schema}.{self.table}"

    def connect(self):
        import psycopg

        # autocommit: each `with conn.transaction()` below is a real transaction, not a savepoint
        return psycopg.connect(
            self.conninfo, autocommit=True, application_name=APPLICATION_NAME,
            connect_timeout=self.connect_timeout_seconds,
        )

    def migrate(self) -> list[int]:
        with self.connect() as conn:
            return migrate_postgres(conn, self.schema, self.table)

    def staging(self, plan: UpsertPlan, progress: StageProgress | None = None) -> PostgresStaging:
        return PostgresStaging(self, plan, progress)

    def apply(self, batches: Iterable[pa.Table], plan: UpsertPlan, progress: StageProgress | None = None) -> UpsertCounts:
        """Apply validated batches (output_schema's columns) in one transaction."""
        with self.staging(plan, progress) as staging:
            return apply_last_occurrences(staging, batches)

    def count(self) -> int:
        with self.connect() as conn:
            migrate_postgres(conn, self.schema, self.table)  # an empty catalog has a table too
            return conn.execute(f"SELECT count(*) FROM {self.target}").fetchone()[0]

    def rows(self, skus: list[str] | None = None) -> list[dict]:
        """Products as dicts (sku order); all of them, or those of `skus`."""
        with self.connect() as conn, conn.cursor() as cursor:
            migrate_postgres(conn, self.schema, self.table)
            query = (
                f"SELECT sku, name, description, price, stock, active, attributes, created_at, updated_at "
                f"FROM {self.target}"
            )
            if skus is None:
                cursor.execute(query + " ORDER BY sku")
            else:
                cursor.execute(query + " WHERE sku = ANY(%s) ORDER BY sku", (skus,))
            names = [d.name for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    def drop(self) -> None:
        """Remove the table, its trigger function and its migration records (tests)."""
        with self.connect() as conn:
            conn.execute(f"DROP TABLE IF EXISTS {self.target}")
            conn.execute(f"DROP FUNCTION IF EXISTS {self.schema}.{self.table}_touch_updated_at()")
            conn.execute(f"DROP FUNCTION IF EXISTS {self.schema}.{self.table}_forget_fingerprint()")
            if conn.execute("SELECT to_regclass(%s)", (f"{self.schema}.catalog_migrations",)).fetchone()[0]:
                conn.execute(f"DELETE FROM {self.schema}.catalog_migrations WHERE target = %s", (self.table,))

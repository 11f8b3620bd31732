"""`make bench`, product catalog: a generated 500k-row catalog into the same PostgreSQL, three ways.

In one run, each into an empty table of its own (a fresh schema), against the PostgreSQL
of FLOODGATE_BENCH_POSTGRES_URL (default: 127.0.0.1:5432, database test), `--repeat` tries
of each in turn, keeping each one's best (these machines are noisy: the best try is the
least disturbed; peak RSS is the highest of the tries):

- (a) executemany: psycopg's `executemany` of the one-row form of the same upsert
  (INSERT … ON CONFLICT (sku) DO UPDATE … WHERE the row differs), rows already in memory;
- (b) bare COPY + upsert: COPY of the in-memory rows into the staging table (`write_row`),
  then the pipeline's own upsert statements (`apply_staged`), in one transaction;
- (c) the pipeline: the `product_catalog` job run in a fresh process (`execute_in_process`,
  the four assets, Dagster's event log) from the CSV in a local object store to
  PostgreSQL: the first import, then a re-import of the unchanged file (a new upload of
  the same bytes), and the first import of the same rows as an .xlsx. Peak RSS is the run
  process's own, imports included, sampled every 5 ms; times leave out the interpreter's
  start and imports. The run process loads the whole code location first, as a run that
  Dagster launches does;
- (d) the engine alone: the same import (`validate_upload` into the PostgreSQL staging,
  outputs to local files) in a process that imports only the engine, without Dagster:
  the import's own memory, against the run process's fixed cost of Dagster's imports;
  also from a CSV of as many rows that lists every SKU twice (the second half repeats the
  first half's SKUs with other values: half the rows superseded).

    python -m bench.catalog [--rows 500000] [--repeat 2] [--no-write]
"""

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from bench.doc import write_between_markers

BEGIN, END = "<!-- bench:catalog:begin -->", "<!-- bench:catalog:end -->"
SECTION = f"""
## Product catalog: uploads upserted into PostgreSQL

Command: `.venv/bin/python -m bench.catalog` (`bench/catalog.py`, part of `make bench`). The
bar (issue «Product catalog…»): the pipeline's first import ≥ 0.8× of (b) the bare COPY +
upsert and ≥ 2× of (a) `executemany`; the unchanged re-import ≥ 3× faster than the first
import; peak RSS ≤ 250 MB, also for the .xlsx.

{BEGIN}
{END}
"""
ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / ".bench"
POSTGRES_URL = os.environ.get("FLOODGATE_BENCH_POSTGRES_URL", "host=127.0.0.1 port=5432 dbname=test")
FIELDS = ["sku", "name", "description", "price", "stock", "active"]


def catalog_files(rows: int) -> tuple[Path, Path, Path]:
    """(the CSV, the same rows as .xlsx, a CSV of as many rows with every SKU twice)."""
    import itertools

    from engine.catalog.sample_catalog import sample_rows, write_csv, write_xlsx

    folder = BENCH_DIR / "catalog"
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, xlsx_path = folder / f"catalog_{rows}.csv", folder / f"catalog_{rows}.xlsx"
    twice_path = folder / f"catalog_{rows}_twice.csv"
    if not twice_path.exists():
        # the second half lists the first half's SKUs again, with other values: a feed
        # that appends changes, each SKU's last row is applied and the first reported
        print(f"generating {rows:,} rows at {twice_path} (once)", flush=True)
        halves = itertools.chain(sample_rows(rows // 2, seed=5), sample_rows(rows - rows // 2, seed=6))
        write_csv(twice_path.with_suffix(".partial"), halves).rename(twice_path)
    if not csv_path.exists():
        print(f"generating {rows:,} rows at {csv_path} (once)", flush=True)
        write_csv(csv_path.with_suffix(".partial"), sample_rows(rows, seed=5)).rename(csv_path)
    if not xlsx_path.exists():
        print(f"generating {rows:,} rows at {xlsx_path} (once)", flush=True)
        write_xlsx(xlsx_path.with_suffix(".partial"), sample_rows(rows, seed=5)).rename(xlsx_path)
    return csv_path, xlsx_path, twice_path


def rows_in_memory(path: Path) -> list[tuple]:
    """The CSV's rows as typed tuples (sku, name, description, price, stock, active, colour)."""
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader)
        for sku, name, description, price, stock, active, colour in reader:
            out.append((sku, name, description, Decimal(price.replace(",", "")), int(stock), active == "true", colour))
    return out


def connect():
    import psycopg

    return psycopg.connect(POSTGRES_URL, autocommit=True)


def fresh_schema(tag: str) -> str:
    from engine.catalog.migrations import migrate_postgres

    schema = f"bench_catalog_{tag}_{uuid.uuid4().hex[:8]}"
    with connect() as conn:
        migrate_postgres(conn, schema, "products")
    return schema


def drop_schema(schema: str) -> None:
    with connect() as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def executemany(rows: list[tuple], schema: str) -> float:
    """(a): the same upsert, one row at a time (psycopg pipelines executemany's statements)."""
    sql = (
        f"INSERT INTO {schema}.products AS p (sku, name, description, price, stock, active, attributes) "
        "VALUES (%s, %s, %s, %s, %s, %s, jsonb_build_object('Color', %s::text)) "
        "ON CONFLICT (sku) DO UPDATE SET name = EXCLUDED.name, description = EXCLUDED.description, "
        "price = EXCLUDED.price, stock = EXCLUDED.stock, active = EXCLUDED.active, "
        "attributes = jsonb_strip_nulls(p.attributes || EXCLUDED.attributes) "
        "WHERE (p.name, p.description, p.price, p.stock, p.active, p.attributes) IS DISTINCT FROM "
        "(EXCLUDED.name, EXCLUDED.description, EXCLUDED.price, EXCLUDED.stock, EXCLUDED.active, "
        "jsonb_strip_nulls(p.attributes || EXCLUDED.attributes))"
    )
    with connect() as conn:
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cursor:
            cursor.executemany(sql, rows)
        return time.perf_counter() - started


def bare_copy_upsert(rows: list[tuple], schema: str) -> float:
    """(b): COPY of in-memory rows into the staging table, then the pipeline's upsert statement."""
    from engine.catalog.postgres_store import apply_staged, staging_name, staging_sql
    from engine.catalog.upsert import UpsertPlan

    plan = UpsertPlan(fields=FIELDS, attributes=["Color"])
    columns = ", ".join(["row_no", *plan.staging_columns])
    staging = staging_name(schema)
    with connect() as conn:
        conn.execute("SET temp_buffers = '256MB'")
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cursor:
            cursor.execute("SET LOCAL work_mem = '256MB'")
            cursor.execute(staging_sql(plan, staging))
            with cursor.copy(f"COPY {staging} ({columns}) FROM STDIN") as copy:
                for number, row in enumerate(rows, 2):
                    copy.write_row((number, *row))
            inserted, updated = apply_staged(cursor, schema, "products", plan, staging)
            cursor.execute(f"DROP TABLE {staging}")
        seconds = time.perf_counter() - started
    assert inserted == len(rows), (inserted, updated)
    return seconds


def pipeline(path: Path, schema: str, home: Path, name: str) -> dict:
    """(c): one Dagster run of the catalog job, in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.catalog", "run", str(path), schema, str(home), name],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"the pipeline run failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_pipeline(path: str, schema: str, home: str, name: str) -> None:
    """In the child process: upload `path` as `name` into HOME's object store, run the job."""
    import dagster as dg

    # the whole code location, as `dagster api execute_run` loads it in a run's process: its
    # imports are part of the run's memory
    import orchestration.definitions  # noqa: F401
    from assets.catalog import defs as catalog_defs
    from assets.catalog.settings import CatalogSettings
    from bench.rss import measured
    from engine.catalog.uploads import upload_partition_key
    from partitions.catalog import catalog_uploads
    from resources.catalog_db import PostgresCatalogDatabase
    from resources.object_store import LocalDirectoryObjectStore
    from resources.webhook import WebhookSender

    # Imports are not timed (as in bench/pipeline_run.py): psycopg is imported on the first
    # connection, once in every run process, before its first row.
    import psycopg  # noqa: F401
    store = LocalDirectoryObjectStore(root=str(Path(home) / "data"))
    settings = CatalogSettings(progress_interval_seconds=1.0)
    key = f"{settings.uploads_prefix}/{name}"
    target = Path(store.uri(key))
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    os.link(path, target)
    partition = upload_partition_key(key, store.stat(key).etag, settings.uploads_prefix)
    resources = {
        "object_store": store, "catalog_settings": settings, "catalog_webhook": WebhookSender(),
        "catalog_database": PostgresCatalogDatabase(url=POSTGRES_URL, db_schema=schema),
    }
    job = dg.Definitions.merge(catalog_defs, dg.Definitions(resources=resources)).resolve_job_def("product_catalog")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(catalog_uploads.name, [partition])
    with measured() as figures:
        result = job.execute_in_process(partition_key=partition, instance=instance)
    assert result.success
    (products,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "catalog_products"]
    meta = {k: v.value for k, v in products.materialization.metadata.items()}
    print(json.dumps({
        **figures, "step_seconds": meta["seconds"], "rows": meta["rows_in"], "inserted": meta["inserted"],
        "updated": meta["updated"], "unchanged": meta["unchanged"], "rejected": meta["rejected"],
    }))


def engine_alone(path: Path, schema: str) -> dict:
    """(d): the import without Dagster, in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.catalog", "engine", str(path), schema],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"the engine run failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_engine(path: str, schema: str) -> None:
    """In the child process: validate_upload of `path` into PostgreSQL, nothing of Dagster."""
    import contextlib
    import tempfile

    from bench.rss import measured
    from engine.catalog.postgres_store import PostgresCatalog
    from engine.catalog.validated_file import validate_upload

    import psycopg  # noqa: F401  (imported by the first connection: not timed, as in (c))

    assert "dagster" not in sys.modules
    catalog = PostgresCatalog(POSTGRES_URL, schema=schema)
    with tempfile.TemporaryDirectory() as folder:
        @contextlib.contextmanager
        def outputs():
            with open(Path(folder) / "validated.arrow", "wb") as validated, open(Path(folder) / "rejects.csv", "wb") as rejects:
                yield validated, rejects

        with measured() as figures:
            summary = validate_upload(lambda: open(path, "rb"), path, outputs, staging=catalog.staging)
    assert "dagster" not in sys.modules and summary.applied is not None
    print(json.dumps({**figures, "inserted": summary.applied["inserted"], "superseded": summary.superseded}))


def best_run(runs: list[dict]) -> dict:
    """The fastest of the tries, with the highest peak RSS of them all."""
    best = dict(min(runs, key=lambda r: r["seconds"]))
    highest = max(runs, key=lambda r: r["peak_rss"])
    best["peak_rss"], best["file_at_peak"] = highest["peak_rss"], highest["file_at_peak"]
    best["rss_before_run"] = max(r["rss_before_run"] for r in runs)
    return best


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "run":
        run_pipeline(*sys.argv[2:6])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "engine":
        run_engine(*sys.argv[2:4])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=500_000)
    # three tries: on a busy 2-core machine one re-import took 1.0 s and the next 1.5 s, and
    # which of the time bars a run of two tries missed was down to that
    parser.add_argument("--repeat", type=int, default=3, help="tries of each scenario; the best counts")
    parser.add_argument("--skip-executemany", action="store_true", help="leave (a) out (it takes the longest)")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/PERFORMANCE.md")
    args = parser.parse_args()

    csv_path, xlsx_path, twice_path = catalog_files(args.rows)
    rows = rows_in_memory(csv_path)
    home = BENCH_DIR / "catalog" / "home"
    shutil.rmtree(home, ignore_errors=True)  # results of an earlier run, of another size
    tries: dict[str, list] = {"a": [], "b": [], "first": [], "again": [], "xlsx": [], "engine": [], "engine_xlsx": [], "engine_twice": []}
    for attempt in range(1, args.repeat + 1):
        schemas: list[str] = []
        try:
            if not args.skip_executemany:
                schemas.append(fresh_schema("a"))
                tries["a"].append(executemany(rows, schemas[-1]))
                print(f"try {attempt}: (a) executemany {tries['a'][-1]:.1f} s", flush=True)
            schemas.append(fresh_schema("b"))
            tries["b"].append(bare_copy_upsert(rows, schemas[-1]))
            print(f"try {attempt}: (b) bare COPY + upsert {tries['b'][-1]:.1f} s", flush=True)
            schemas.append(fresh_schema("c"))
            tries["first"].append(pipeline(csv_path, schemas[-1], home, f"bench/catalog-{attempt}.csv"))
            tries["again"].append(pipeline(csv_path, schemas[-1], home, f"bench/catalog-{attempt}-again.csv"))
            schemas.append(fresh_schema("x"))
            tries["xlsx"].append(pipeline(xlsx_path, schemas[-1], home, f"bench/catalog-{attempt}.xlsx"))
            print(
                f"try {attempt}: (c) first import {tries['first'][-1]['seconds']:.1f} s, re-import "
                f"{tries['again'][-1]['seconds']:.1f} s, .xlsx {tries['xlsx'][-1]['seconds']:.1f} s", flush=True,
            )
            schemas.append(fresh_schema("d"))
            tries["engine"].append(engine_alone(csv_path, schemas[-1]))
            schemas.append(fresh_schema("e"))
            tries["engine_xlsx"].append(engine_alone(xlsx_path, schemas[-1]))
            schemas.append(fresh_schema("t"))
            tries["engine_twice"].append(engine_alone(twice_path, schemas[-1]))
            print(f"try {attempt}: (d) engine alone, peak RSS {mib(tries['engine'][-1]['peak_rss'])} CSV, "
                  f"{mib(tries['engine_xlsx'][-1]['peak_rss'])} .xlsx, {mib(tries['engine_twice'][-1]['peak_rss'])} "
                  f"every SKU twice ({tries['engine_twice'][-1]['seconds']:.1f} s)", flush=True)
        finally:
            for schema in schemas:
                drop_schema(schema)
    del rows
    assert all(r["inserted"] == args.rows for r in tries["first"] + tries["xlsx"] + tries["engine"] + tries["engine_xlsx"])
    assert all(r["unchanged"] == args.rows for r in tries["again"])
    assert all(r["inserted"] == args.rows - args.rows // 2 and r["superseded"] == args.rows // 2 for r in tries["engine_twice"])
    a = min(tries["a"]) if tries["a"] else None
    b = min(tries["b"])
    first, again, xlsx, alone, alone_xlsx, twice = (
        best_run(tries[k]) for k in ("first", "again", "xlsx", "engine", "engine_xlsx", "engine_twice")
    )

    from bench.search_terms import machine  # not at the top: the run processes need none of it

    n = args.rows
    lines = [
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}, PostgreSQL on the same machine.",
        f"Command: `python -m bench.catalog --rows {n} --repeat {args.repeat}`; best of the tries of each, each into an empty table "
        f"({csv_path.stat().st_size / 1e6:.0f} MB CSV, {xlsx_path.stat().st_size / 1e6:.0f} MB .xlsx).",
        "",
        "| scenario | seconds | rows/s | peak RSS of the run's process |",
        "|---|---|---|---|",
    ]
    if a is not None:
        lines.append(f"| (a) psycopg executemany of the upsert, rows in memory | {a:.1f} | {n / a:,.0f} | – |")
    lines += [
        f"| (b) COPY into staging + the upsert, rows in memory | {b:.1f} | {n / b:,.0f} | – |",
        f"| (c) pipeline from the CSV, first import | {first['seconds']:.1f} | {n / first['seconds']:,.0f} | {mib(first['peak_rss'])} |",
        f"| (c) pipeline, unchanged re-import | {again['seconds']:.1f} | {n / again['seconds']:,.0f} | {mib(again['peak_rss'])} |",
        f"| (c) pipeline from the .xlsx, first import | {xlsx['seconds']:.1f} | {n / xlsx['seconds']:,.0f} | {mib(xlsx['peak_rss'])} |",
        f"| (d) the engine alone, no Dagster, from the CSV | {alone['seconds']:.1f} | {n / alone['seconds']:,.0f} | {mib(alone['peak_rss'])} |",
        f"| (d) the engine alone, no Dagster, from the .xlsx | {alone_xlsx['seconds']:.1f} | {n / alone_xlsx['seconds']:,.0f} | {mib(alone_xlsx['peak_rss'])} |",
        f"| (d) the engine alone, a CSV listing every SKU twice ({n // 2:,} superseded) | {twice['seconds']:.1f} | {n / twice['seconds']:,.0f} | {mib(twice['peak_rss'])} |",
        "",
        f"- first import against (b): **{b / first['seconds']:.2f}×** (bar ≥ 0.8×)",
    ]
    if a is not None:
        lines.append(f"- first import against (a): **{a / first['seconds']:.2f}×** (bar ≥ 2×)")
    lines += [
        f"- unchanged re-import against the first import: **{first['seconds'] / again['seconds']:.2f}×** faster (bar ≥ 3×)",
        f"- peak RSS of the run's process: CSV **{first['peak_rss'] / 1e6:.0f} MB** (its re-import "
        f"**{again['peak_rss'] / 1e6:.0f} MB**), .xlsx **{xlsx['peak_rss'] / 1e6:.0f} MB** "
        f"(bar ≤ 250 MB): anonymous memory {(first['peak_rss'] - first['file_at_peak']) / 1e6:.0f} MB and "
        f"{(xlsx['peak_rss'] - xlsx['file_at_peak']) / 1e6:.0f} MB, library pages mapped from the page cache "
        f"{first['file_at_peak'] / 1e6:.0f} MB and {xlsx['file_at_peak'] / 1e6:.0f} MB (bench/rss.py: they depend on how "
        "the cache got them); "
        f"{first['rss_before_run'] / 1e6:.0f} MB before the run (Dagster, pyarrow, the code location), "
        f"the import adds {(first['peak_rss'] - first['rss_before_run']) / 1e6:.0f} MB (CSV) and "
        f"{(xlsx['peak_rss'] - xlsx['rss_before_run']) / 1e6:.0f} MB (.xlsx)",
        f"- the engine alone (d): CSV **{alone['peak_rss'] / 1e6:.0f} MB**, .xlsx **{alone_xlsx['peak_rss'] / 1e6:.0f} MB**, "
        f"{alone['rss_before_run'] / 1e6:.0f} MB before its first row (pyarrow, psycopg)",
    ]
    table = "\n".join(lines)
    print("\n" + table)
    if not args.no_write:
        write_between_markers(BEGIN, END, table, SECTION)


if __name__ == "__main__":
    main()

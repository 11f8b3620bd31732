"""`make demo`: generate a sample week, run the search-terms job on it, show the result.

Runs against the persistent instance in DAGSTER_HOME, so the run appears in `make dev`.
"""

import argparse
import os
from datetime import date

import dagster as dg

from engine.search_terms.sample_report import write_report_file
from orchestration.definitions import defs
from orchestration.deployment import floodgate_home, local_resources

DEMO_WEEK = date(2024, 1, 7)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--week", type=date.fromisoformat, default=DEMO_WEEK, help="a Sunday")
    parser.add_argument("--terms", type=int, default=100_000, help="search terms in the sample report")
    args = parser.parse_args(argv)

    resources = local_resources()
    store, warehouse, settings = resources["object_store"], resources["warehouse"], resources["search_terms_settings"]
    report_key = settings.report_candidates(args.week)[0]
    rows = write_report_file(
        floodgate_home() / "data" / report_key, args.week, terms=args.terms, seed=args.week.toordinal()
    )
    print(f"sample report: {rows:,} rows in {store.uri(report_key)}")

    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("search_terms_weekly").execute_in_process(
        partition_key=args.week.isoformat(), instance=instance, raise_on_error=False
    )
    if not result.success:
        raise SystemExit(f"the run failed: see the run {result.run_id} in the UI (make dev)")

    table = settings.warehouse_table
    (count,) = warehouse.query(f"SELECT count(*) FROM {table} WHERE week_start = ?", [args.week])[0]
    top = warehouse.query(
        f"SELECT search_frequency_rank, department_name, search_term, clicked_asin_1, "
        f"round(total_click_share, 4), round(total_conversion_share, 4) FROM {table} "
        f"WHERE week_start = ? ORDER BY search_frequency_rank LIMIT 5",
        [args.week],
    )
    print(f"\n{count:,} search terms for the week of {args.week} in {warehouse.table_ref(table)}")
    print(f"{'rank':>6}  {'department':<22} {'search term':<40} {'top ASIN':<11} {'clicks':>7} {'conv.':>7}")
    for rank, dept, term, asin, clicks, conversions in top:
        print(f"{rank:>6}  {dept[:22]:<22} {term[:40]:<40} {asin or '':<11} {clicks:>7} {conversions:>7}")
    print(
        f"\nfiles:     {store.uri(settings.output_prefix)}/{args.week}/ (parsed.parquet, rejects.ndjson, top3.parquet)"
        f"\nwarehouse: {warehouse.path}"
        f"\n           .venv/bin/python -c \"import duckdb; duckdb.sql(\\\"ATTACH '{warehouse.path}' AS w (READ_ONLY)\\\"); "
        f"duckdb.sql('SELECT * FROM w.{table} LIMIT 5').show()\""
        f"\nrun:       {result.run_id} in {instance.root_directory if os.environ.get('DAGSTER_HOME') else 'an ephemeral instance'}"
        f"\nUI:        make dev, then open http://127.0.0.1:3000 (asset group search_terms)"
    )


if __name__ == "__main__":
    main()

"""search_terms_top3_table: the week's top-3 rows in the warehouse, replaced as a whole."""

import dagster as dg

from assets.metadata import step_metadata
from assets.search_terms.report import GROUP, week_of
from assets.search_terms.settings import SearchTermsSettings
from assets.search_terms.parse import TOP3
from engine.measure import StepMeasure
from engine.search_terms.parse_report import parsed_footer
from engine.search_terms.records import TOP3_SCHEMA
from partitions.weekly import search_terms_weeks
from resources.object_store import ObjectStore
from resources.warehouse import Warehouse

ASSET = "search_terms_top3_table"
SHARES_IN_RANGE = "shares_within_0_1"
TOTALS_AT_MOST_ONE = "totals_at_most_one"
HAS_ROWS = "has_rows"
TERMS_MATCH = "terms_match_parsed"

# BigQuery sorts each week's rows by these: lookups by department and term read a fraction of it
CLUSTER_BY = ("department_name", "search_term")
_SHARES = [f"{kind}_share_{rank}" for kind in ("click", "conversion") for rank in (1, 2, 3)]
_TOTALS = ["total_click_share", "total_conversion_share"]


@dg.asset(
    partitions_def=search_terms_weeks,
    group_name=GROUP,
    deps=[TOP3],
    kinds={"duckdb", "bigquery"},
    pool="warehouse",
    check_specs=[
        dg.AssetCheckSpec(SHARES_IN_RANGE, asset=ASSET, description="Every click and conversion share lies in 0-1."),
        dg.AssetCheckSpec(
            TOTALS_AT_MOST_ONE,
            asset=ASSET,
            description="Total click and conversion share of the three products are at most 1 (within tolerance).",
        ),
        dg.AssetCheckSpec(HAS_ROWS, asset=ASSET, description="The week has at least one row."),
        dg.AssetCheckSpec(
            TERMS_MATCH,
            asset=ASSET,
            description="The week has one row per distinct department and search term parsed from the report.",
        ),
    ],
    description=(
        "The warehouse table (DuckDB locally, BigQuery in production) with one row per week, "
        "department and search term. Loading a week replaces that week's rows in one transaction."
    ),
)
def search_terms_top3_table(
    context: dg.AssetExecutionContext,
    object_store: ObjectStore,
    warehouse: Warehouse,
    search_terms_settings: SearchTermsSettings,
) -> dg.MaterializeResult:
    settings = search_terms_settings
    week = week_of(context)
    table = settings.warehouse_table
    with StepMeasure() as measure:
        import pyarrow.parquet as pq  # not at the top: the code location loads this module in every run

        with object_store.open_read(settings.top3_key(week)) as top3:
            rows_in = pq.ParquetFile(top3).metadata.num_rows
            top3.seek(0)
            loaded = warehouse.replace_partition(
                table, "week_start", week, top3, schema=TOP3_SCHEMA, cluster_by=CLUSTER_BY
            )
        with object_store.open_read(settings.parsed_key(week)) as parsed:
            footer_terms = parsed_footer(parsed).get("terms")
        # Without a proven count in the parsed file (a report not grouped by term), the
        # top-3 file's rows are the count: DuckDB's group-by of the parsed rows made them.
        parsed_terms = int(footer_terms) if footer_terms is not None else rows_in
        profile = warehouse.partition_profile(table, "week_start", week, _SHARES + _TOTALS)
    count = profile.rows
    min_share = min((profile.minimum[c] for c in _SHARES if profile.minimum[c] is not None), default=None)
    max_share = max((profile.maximum[c] for c in _SHARES if profile.maximum[c] is not None), default=None)
    max_total_click, max_total_conversion = (profile.maximum[c] or 0.0 for c in _TOTALS)
    tolerance = settings.total_share_tolerance
    in_range = min_share is None or (min_share >= 0 and max_share <= 1)
    totals_ok = count == 0 or max(max_total_click, max_total_conversion) <= 1 + tolerance
    return dg.MaterializeResult(
        metadata=step_metadata(
            measure,
            rows_in=rows_in,
            rows_out=loaded,
            table=warehouse.table_ref(table),
            week_rows_loaded=dg.MetadataValue.int(loaded),
            week_rows_in_table=dg.MetadataValue.int(count),
        ),
        check_results=[
            dg.AssetCheckResult(
                check_name=SHARES_IN_RANGE,
                passed=bool(in_range),
                metadata={"min_share": min_share, "max_share": max_share},
            ),
            dg.AssetCheckResult(
                check_name=TOTALS_AT_MOST_ONE,
                passed=bool(totals_ok),
                metadata={
                    "max_total_click_share": max_total_click,
                    "max_total_conversion_share": max_total_conversion,
                    "tolerance": tolerance,
                },
            ),
            dg.AssetCheckResult(check_name=HAS_ROWS, passed=count > 0, metadata={"rows": count}),
            dg.AssetCheckResult(
                check_name=TERMS_MATCH,
                passed=count == parsed_terms,
                metadata={"rows_in_table": count, "distinct_terms_parsed": parsed_terms},
            ),
        ],
    )

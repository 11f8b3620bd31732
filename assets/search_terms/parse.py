"""parsed_search_terms and search_term_top3, made in one pass over the report.

Both come from one step because the pivot needs nothing but the rows in the order the
scanner sees them: a second pass over the Parquet would double the work. Either asset
can still be materialized on its own: search_term_top3 alone pivots the parsed Parquet.
"""

import contextlib
import tempfile
from datetime import date

import dagster as dg

from assets.metadata import preview, step_metadata
from assets.search_terms.report import GROUP, find_report, search_terms_report, week_of
from assets.search_terms.settings import SearchTermsSettings
from engine.measure import Progress, StepMeasure
from engine.memory import release_free_memory
from engine.search_terms.parse_report import ParseSummary, TooManyRejects, parse_report, parsed_footer
from engine.search_terms.report_reader import ReportError
from engine.search_terms.top3 import NotGrouped, Top3Stats, build_top3_parquet, build_top3_parquet_any_order
from partitions.weekly import search_terms_weeks
from resources.object_store import ObjectStore

PARSED = dg.AssetKey("parsed_search_terms")
TOP3 = dg.AssetKey("search_term_top3")
AT_MOST_THREE = "at_most_three_products_per_term"


class _PivotAfterwards(Exception):
    """The pass could not pivot (rows not grouped, or the spec after the data): drop its top-3 file."""


def _parse(
    context: dg.AssetExecutionContext,
    store: ObjectStore,
    settings: SearchTermsSettings,
    week: date,
    with_top3: bool,
) -> ParseSummary:
    report = find_report(store, settings, week, context.run.tags)
    progress = Progress(context.log, f"parsing {report.key}", total=report.size, interval=settings.progress_interval_seconds)
    too_many: TooManyRejects | None = None
    try:
        # Rejects are published even when there are too many of them (they explain the
        # failure); the Parquet files only when the whole report parsed.
        with store.open_write(settings.rejects_key(week)) as rejects_out:
            try:
                with store.open_read(report.key) as stream, store.open_write(settings.parsed_key(week)) as parsed_out:
                    try:
                        with store.open_write(settings.top3_key(week)) if with_top3 else contextlib.nullcontext() as top3_out:
                            summary = parse_report(
                                stream,
                                report.key,
                                week,
                                parsed_out,
                                rejects_out,
                                top3_out,
                                max_reject_fraction=settings.max_reject_fraction,
                                chunk_bytes=int(settings.chunk_mb * (1 << 20)),
                                workers=settings.scan_workers,
                                compression=settings.parquet_compression,
                                progress=progress,
                            )
                            if with_top3 and summary.top3 is None:
                                raise _PivotAfterwards()
                    except _PivotAfterwards:
                        pass
            except TooManyRejects as exc:
                too_many = exc
    except ReportError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None
    if too_many is not None:
        rejects_uri = store.uri(settings.rejects_key(week))
        raise dg.Failure(
            f"{too_many}. See {rejects_uri}.",
            metadata={"rejects_uri": dg.MetadataValue.path(rejects_uri)},
            allow_retries=False,
        )
    if summary.rejects:
        context.log.warning(f"{summary.rejects:,} records rejected; see {store.uri(settings.rejects_key(week))}")
    return summary


def _pivot_from_parquet(
    context: dg.AssetExecutionContext, store: ObjectStore, settings: SearchTermsSettings, week: date
) -> tuple[Top3Stats, object, bool]:
    """Pivot the parsed Parquet: streaming when grouped by term, else DuckDB's group-by."""
    parsed_key, top3_key = settings.parsed_key(week), settings.top3_key(week)
    with store.open_read(parsed_key) as parsed:
        marketplace = parsed_footer(parsed)["marketplace_id"]
    try:
        with store.open_read(parsed_key) as parsed, store.open_write(top3_key) as out:
            stats, top3_preview = build_top3_parquet(
                parsed, out, week, marketplace, compression=settings.parquet_compression
            )
        return stats, top3_preview, True
    except NotGrouped as exc:
        context.log.warning(f"{exc}; pivoting with DuckDB's group-by instead (slower, spills to disk)")
    with (
        tempfile.TemporaryDirectory(prefix="floodgate-duckdb-") as spill,
        store.open_read(parsed_key) as parsed,
        store.open_write(top3_key) as out,
    ):
        stats, top3_preview = build_top3_parquet_any_order(
            parsed,
            out,
            week,
            marketplace,
            memory_limit=settings.duckdb_memory_limit,
            temp_dir=spill,
            compression=settings.parquet_compression,
        )
    return stats, top3_preview, False


def _top3_result(
    stats: Top3Stats, top3_preview, grouped: bool, measure: StepMeasure, store: ObjectStore, key: str, made_in: str
) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        asset_key=TOP3,
        metadata=step_metadata(
            measure,
            rows_in=stats.rows_in,
            rows_out=stats.terms,
            terms=dg.MetadataValue.int(stats.terms),
            grouped_input=grouped,
            made_in=made_in,
            duplicate_click_share_ranks=dg.MetadataValue.int(stats.duplicate_click_share_ranks),
            mixed_frequency_ranks=dg.MetadataValue.int(stats.mixed_frequency_ranks),
            top3_uri=dg.MetadataValue.path(store.uri(key)),
            preview=preview(top3_preview) if top3_preview is not None else "no rows",
        ),
        check_results=[
            dg.AssetCheckResult(
                asset_key=TOP3,
                check_name=AT_MOST_THREE,
                passed=stats.terms_over_three_products == 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "terms_over_three_products": stats.terms_over_three_products,
                    "max_products_per_term": stats.max_products_per_term,
                },
            )
        ],
    )


@dg.multi_asset(
    name="parse_search_terms",
    partitions_def=search_terms_weeks,
    group_name=GROUP,
    can_subset=True,
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL),
    specs=[
        dg.AssetSpec(
            PARSED,
            deps=[search_terms_report],
            kinds={"parquet"},
            skippable=True,
            description=(
                "Every row of the week's report, typed, as Parquet at <output_prefix>/<week>/parsed.parquet. "
                "Rows that break a rule go to rejects.ndjson beside it with their record index and reason; "
                "the step fails when they exceed max_reject_fraction."
            ),
        ),
        dg.AssetSpec(
            TOP3,
            deps=[PARSED],
            kinds={"parquet"},
            skippable=True,
            description=(
                "For each department and search term of the week: its search frequency rank, the ASIN, item "
                "name, click share and conversion share of click-share ranks 1-3, and their total click and "
                "conversion share. Parquet at <output_prefix>/<week>/top3.parquet."
            ),
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(AT_MOST_THREE, asset=TOP3, description="No term has more than three clicked products.")
    ],
)
def parse_search_terms(
    context: dg.AssetExecutionContext, object_store: ObjectStore, search_terms_settings: SearchTermsSettings
):
    settings = search_terms_settings
    week = week_of(context)
    selected = context.selected_asset_keys
    top3_key = settings.top3_key(week)
    if PARSED not in selected:
        with StepMeasure() as measure:
            stats, top3_preview, grouped = _pivot_from_parquet(context, object_store, settings, week)
        yield _top3_result(stats, top3_preview, grouped, measure, object_store, top3_key, "a pass over the parsed Parquet")
        return

    with StepMeasure() as measure:
        summary = _parse(context, object_store, settings, week, with_top3=TOP3 in selected)
    release_free_memory()
    yield dg.MaterializeResult(
        asset_key=PARSED,
        metadata=step_metadata(
            measure,
            rows_in=summary.records,
            rows_out=summary.rows,
            rejects=summary.rejects,
            # distinct terms, when the pass proved each term's rows were together
            **({"terms": dg.MetadataValue.int(summary.top3.terms)} if summary.top3 is not None else {}),
            bytes=dg.MetadataValue.int(summary.bytes_read),
            marketplace_ids=", ".join(summary.spec.marketplace_ids),
            parsed_uri=dg.MetadataValue.path(object_store.uri(settings.parsed_key(week))),
            rejects_uri=dg.MetadataValue.path(object_store.uri(settings.rejects_key(week))),
            preview=preview(summary.preview),
        ),
    )
    if TOP3 not in selected:
        return
    if summary.top3 is not None:
        yield _top3_result(summary.top3, summary.top3_preview, True, measure, object_store, top3_key, "the parse pass")
        return
    with StepMeasure() as measure:
        stats, top3_preview, grouped = _pivot_from_parquet(context, object_store, settings, week)
    yield _top3_result(stats, top3_preview, grouped, measure, object_store, top3_key, "a pass over the parsed Parquet")

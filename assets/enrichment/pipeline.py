"""enrichment_input → enriched_records (+ enrichment_dead_letters), one dynamic partition per
input file (partitions/enrichment.py), possibly several files per run.

enrichment_input checks each file (present, a known format, its first record readable)
and records its size and version. enriched_records sends every record through the API
(engine/enrichment) and writes, per chunk, enriched records and dead letters under
<output_prefix>/<partition key>/; the same step materializes enrichment_dead_letters.
A retried run sends only the records of chunks not written yet. Its checks prove the
account (enriched + dead letters = input) and watch the share of dead letters.
"""

from collections.abc import Iterator

import dagster as dg

from assets.enrichment.report import account_table, dead_by_reason, failure_metadata, file_metadata, request_metadata
from assets.enrichment.settings import FILES_PER_RUN, EnrichmentSettings
from assets.metadata import cost_metadata, step_metadata
from engine.enrichment.readers import InputError, read_chunks
from engine.enrichment.run import EnrichmentFailed, FileResult, enrich_file
from engine.enrichment.source import PARQUET, file_format, input_key
from engine.enrichment.stats import RequestStats
from engine.measure import StepMeasure
from partitions.enrichment import enrichment_files
from resources.enrichment_api import EnrichmentApi
from resources.object_store import ObjectStore

GROUP = "enrichment"
_PARTITIONED = dict(
    partitions_def=enrichment_files,
    group_name=GROUP,
    backfill_policy=dg.BackfillPolicy.multi_run(FILES_PER_RUN),
)
ENRICHED, DEAD_LETTERS = dg.AssetKey("enriched_records"), dg.AssetKey("enrichment_dead_letters")
ACCOUNTED, DEAD_SHARE = "every_record_accounted_for", "dead_letters_within_limit"


@dg.asset(
    **_PARTITIONED,
    kinds={"s3"},
    description=(
        "An input file in the object store (<input_prefix>/<path>.csv, .json (NDJSON or an array), "
        ".ndjson, .jsonl or .parquet, optionally .gz): checked present and readable (its first "
        "record), with its format, size and version."
    ),
)
def enrichment_input(
    context: dg.AssetExecutionContext, object_store: ObjectStore, enrichment_settings: EnrichmentSettings
) -> dg.MaterializeResult:
    settings = enrichment_settings
    with StepMeasure() as measure:
        lines, size = [], 0
        for partition in context.partition_keys:
            key = input_key(partition, settings.input_prefix)
            fmt = file_format(key)
            info = object_store.stat(key)
            if info is None:
                raise dg.Failure(f"enrichment input {object_store.uri(key)} does not exist (partition {partition!r})")
            try:
                with object_store.open_read(key) as stream:
                    reader = read_chunks(stream, fmt, object_store.uri(key), 1)  # Parquet: reads the footer
                    if fmt != PARQUET:
                        next(iter(reader), None)  # the first record
            except InputError as exc:
                raise dg.Failure(f"enrichment input is not readable: {exc}") from None
            size += info.size
            lines.append(f"| `{partition}` | {fmt} | {info.size:,} | `{info.etag}` |")
    return dg.MaterializeResult(
        metadata=cost_metadata(
            measure,
            files=dg.MetadataValue.int(len(lines)),
            bytes=dg.MetadataValue.int(size),
            inputs=dg.MetadataValue.md("| partition | format | bytes | version |\n|---|---|---|---|\n" + "\n".join(lines)),
        )
    )


# enriched_records and its Spark twin (assets/enrichment/spark.py) make the same assets and checks
ENRICHED_RECORDS = dict(
    **_PARTITIONED,
    name="enriched_records",
    specs=[
        dg.AssetSpec(
            ENRICHED,
            deps=[enrichment_input],
            kinds={"parquet"},
            description=(
                "Every record the API answered, with the template's response columns, as Parquet per "
                "chunk: <output_prefix>/<partition>/enriched/<chunk>.parquet."
            ),
        ),
        dg.AssetSpec(
            DEAD_LETTERS,
            deps=[enrichment_input],
            kinds={"parquet"},
            description=(
                "Every record that could not be enriched (record_id, row, input, reason, last_status, "
                "error, attempts): <output_prefix>/<partition>/dead_letters/<chunk>.parquet."
            ),
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(ACCOUNTED, asset=ENRICHED, description="enriched + dead letters = input records, per file"),
        dg.AssetCheckSpec(DEAD_SHARE, asset=DEAD_LETTERS, description="dead letters at most max_dead_letter_fraction of the records"),
    ],
    pool="enrichment_api",  # runs share one API budget; with Redis they may also run at once
)


@dg.multi_asset(**ENRICHED_RECORDS)
def enriched_records(
    context: dg.AssetExecutionContext,
    object_store: ObjectStore,
    enrichment_settings: EnrichmentSettings,
    enrichment_api: EnrichmentApi,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    settings = enrichment_settings
    api, template, file_settings = enrichment_api.settings(), enrichment_api.template(), settings.file_settings()
    context.log.info(f"enrichment API: {enrichment_api.describe()}")
    results: list[tuple[str, FileResult]] = []
    with StepMeasure() as measure:
        for partition in context.partition_keys:
            key = input_key(partition, settings.input_prefix)
            output = f"{settings.output_prefix.rstrip('/')}/{partition}"
            try:
                result = enrich_file(
                    object_store, key, file_format(key), output, api, template, file_settings, logger=context.log
                )
            except EnrichmentFailed as exc:
                raise dg.Failure(description=str(exc), metadata=failure_metadata(exc.result, results)) from None
            except FileNotFoundError as exc:
                raise dg.Failure(description=str(exc)) from None
            account = result.account
            context.log.info(
                f"{partition}: {account.records:,} records = {account.enriched:,} enriched + {account.dead_letters:,} "
                f"dead letters ({account.chunks_resumed} of {account.chunks} chunks written by an earlier run); "
                f"{result.stats.requests:,} requests at {result.stats.requests_per_second:,.0f}/s"
            )
            results.append((partition, result))
    yield from outcome(results, measure, settings, object_store)


def outcome(
    results: list[tuple[str, FileResult]], measure: StepMeasure, settings: EnrichmentSettings, object_store: ObjectStore
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """The two materializations and two checks of enriched_records, from each file's result."""
    stats = RequestStats()
    for _, result in results:
        stats.merge(result.stats)
    records = sum(r.account.records for _, r in results)
    enriched = sum(r.account.enriched for _, r in results)
    dead = sum(r.account.dead_letters for _, r in results)
    yield dg.MaterializeResult(
        asset_key=ENRICHED,
        metadata=step_metadata(
            measure,
            rows_in=records,
            rows_out=enriched,
            rejects=dead,
            **request_metadata(stats, results),
            **file_metadata(results, settings.output_prefix, object_store),
        ),
    )
    yield dg.MaterializeResult(
        asset_key=DEAD_LETTERS,
        metadata={
            "dead_letters": dg.MetadataValue.int(dead),
            "dead_letters_by_reason": dg.MetadataValue.json(dead_by_reason(results)),
            "records": dg.MetadataValue.int(records),
        },
    )
    balanced = all(r.account.balanced and r.account.complete for _, r in results)
    yield dg.AssetCheckResult(
        check_name=ACCOUNTED,
        asset_key=ENRICHED,
        passed=balanced,
        metadata={"files": dg.MetadataValue.md(account_table(results))},
    )
    limit = settings.max_dead_letter_fraction
    worst = max((r.account.dead_letters / r.account.records for _, r in results if r.account.records), default=0.0)
    yield dg.AssetCheckResult(
        check_name=DEAD_SHARE,
        asset_key=DEAD_LETTERS,
        passed=worst <= limit,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"largest_share": dg.MetadataValue.float(round(worst, 6)), "limit": dg.MetadataValue.float(limit)},
    )

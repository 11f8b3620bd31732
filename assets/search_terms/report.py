"""search_terms_report: the week's report file as it landed in the object store."""

from collections.abc import Mapping
from datetime import date

import dagster as dg

from assets.metadata import cost_metadata
from assets.search_terms.settings import SearchTermsSettings
from engine.measure import StepMeasure
from engine.search_terms.report_reader import ReportError, ReportReader
from partitions.weekly import search_terms_weeks
from resources.object_store import ObjectInfo, ObjectStore

GROUP = "search_terms"
# Set by the S3 sensor on the runs it requests: the report it saw, whatever its name.
REPORT_KEY_TAG = "floodgate/search_terms_report_key"


def find_report(
    store: ObjectStore, settings: SearchTermsSettings, week: date, run_tags: Mapping[str, str] | None = None
) -> ObjectInfo:
    """The report object of the week: the one a sensor named in the run's tags, else the
    one found under the conventional names; a Failure that names the keys looked at otherwise."""
    tagged = (run_tags or {}).get(REPORT_KEY_TAG)
    if tagged:
        info = store.stat(tagged)
        if info is None:
            raise dg.Failure(f"the report this run was started for, {store.uri(tagged)}, is gone", allow_retries=False)
        return info
    found = [info for key in settings.report_candidates(week) if (info := store.stat(key)) is not None]
    if len(found) > 1:
        raise dg.Failure(
            f"two reports for the week of {week}: {', '.join(store.uri(i.key) for i in found)}; keep one",
            allow_retries=False,
        )
    if not found:
        raise dg.Failure(
            f"no report for the week of {week}: looked for "
            f"{' and '.join(store.uri(k) for k in settings.report_candidates(week))}",
            allow_retries=False,
        )
    return found[0]


def week_of(context: dg.AssetExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)


@dg.asset(
    partitions_def=search_terms_weeks,
    group_name=GROUP,
    kinds={"json"},
    description=(
        "The Brand Analytics Search Terms report of the week, as landed in the object store "
        "(<reports_prefix>/<week>.json or .json.gz, or any name under the prefix when the "
        "report sensor started the run). Materializing it checks that it is there "
        "and that its header names this week, reading only its first bytes."
    ),
)
def search_terms_report(
    context: dg.AssetExecutionContext, object_store: ObjectStore, search_terms_settings: SearchTermsSettings
) -> dg.MaterializeResult:
    week = week_of(context)
    info = find_report(object_store, search_terms_settings, week, context.run.tags)
    with StepMeasure() as measure, object_store.open_read(info.key) as stream:
        reader = ReportReader(stream, info.key, expected_week=week)
        try:
            spec = reader.peek_spec()
        except ReportError as exc:
            raise dg.Failure(str(exc), allow_retries=False) from None
        compressed = reader.compressed
    metadata = {
        **cost_metadata(measure),
        "key": info.key,
        "uri": dg.MetadataValue.path(object_store.uri(info.key)),
        "bytes": dg.MetadataValue.int(info.size),
        "etag": info.etag,
        "gzip": compressed,
    }
    if spec is not None:
        metadata["marketplace_ids"] = ", ".join(spec.marketplace_ids)
        metadata["data_start"] = spec.week_start.isoformat()
        metadata["data_end"] = spec.week_end.isoformat()
    else:
        context.log.info(f"{info.key}: the specification follows the data; the parse step checks it")
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(info.etag))

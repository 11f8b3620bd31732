"""Sensors: a new or replaced Search Terms report in the object store starts its week's load.

Each tick lists the reports prefix once (S3 offers no cheaper way to see a replaced
object: a replacement keeps its key, and LastModified is when a multipart upload began,
so a time high-water mark would skip a large report whose upload started before a small
one's). Only objects whose key or ETag the cursor has not seen are opened, and of those
only the first bytes are read (a ranged GET) to learn the week from reportSpecification.
The cursor is the key → ETag of every object looked at, so nothing is looked at twice and
nothing is skipped; keys that disappear from the listing leave it.
"""

from __future__ import annotations

import json
import re
from datetime import date

import dagster as dg

from assets.search_terms import search_terms_job
from assets.search_terms.report import REPORT_KEY_TAG
from assets.search_terms.settings import SearchTermsSettings
from engine.search_terms.report_head import ReportError, spec_from_head
from partitions.weekly import search_terms_weeks
from resources.object_store import ObjectInfo, ObjectStore

# At most this many new objects are opened per tick; the rest wait for the next tick (they
# are not in the cursor yet), so a first tick over a long history stays within the
# sensor's time limit.
MAX_OPENED_PER_TICK = 50
_WEEK_IN_NAME = re.compile(r"(?:^|/)(\d{4}-\d{2}-\d{2})\.json(?:\.gz)?$")


def week_in_name(key: str) -> date | None:
    """The week of a report named by the convention <prefix>/<week>.json[.gz]."""
    match = _WEEK_IN_NAME.search(key)
    if not match:
        return None
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:
        return None


def _report_week(context: dg.SensorEvaluationContext, store: ObjectStore, info: ObjectInfo) -> date | None:
    """The week the object reports on, or None (logged) when it is not a loadable report."""
    where = store.uri(info.key)
    try:
        spec = spec_from_head(lambda n: store.read_head(info.key, n), info.key, info.size)
    except ReportError as exc:
        context.log.warning(f"not a Search Terms report, not loaded: {where}: {exc.problem} (byte {exc.byte_offset})")
        return None
    named = week_in_name(info.key)
    if spec is None and named is not None and named.weekday() != 6:
        context.log.warning(f"{where}: named for {named}, which is not a Sunday (the start of a report week); not loaded")
        return None
    if spec is None:
        if named is None:
            context.log.warning(
                f"{where}: its reportSpecification is not in its first bytes and its name does not give "
                "the week (<week>.json or .json.gz); start its week's run from the UI"
            )
        return named
    if named is not None and named != spec.week_start:
        context.log.warning(f"{where} is named for {named} but reports on the week of {spec.week_start}; loading the latter")
    return spec.week_start


@dg.sensor(
    job=search_terms_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watches <reports_prefix>/ in the object store. A new or replaced report starts one run "
        "for the week its reportSpecification names (run key: object key and ETag), whatever the "
        "file is called; objects that are not reports are logged once and left alone."
    ),
)
def search_terms_report_sensor(
    context: dg.SensorEvaluationContext, object_store: ObjectStore, search_terms_settings: SearchTermsSettings
) -> dg.SensorResult:
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    listed: dict[str, str] = {}
    requests: list[dg.RunRequest] = []
    opened = waiting = 0
    prefix = search_terms_settings.reports_prefix.rstrip("/") + "/"
    for info in object_store.list(prefix):
        if seen.get(info.key) == info.etag:
            listed[info.key] = info.etag
            continue
        if opened == MAX_OPENED_PER_TICK:
            waiting += 1
            continue
        opened += 1
        try:
            week = _report_week(context, object_store, info)
        except FileNotFoundError:
            continue  # deleted since the listing
        listed[info.key] = info.etag
        if week is None:
            continue
        if not search_terms_weeks.has_partition_key(week.isoformat()):
            if week.isoformat() > search_terms_weeks.get_first_partition_key():
                del listed[info.key]  # a week not over yet: look again next tick
                context.log.info(f"{object_store.uri(info.key)} reports on {week}, a week not over yet; looking again next tick")
            else:
                context.log.warning(f"{object_store.uri(info.key)} reports on {week}, before the first week loaded; not loaded")
            continue
        requests.append(
            dg.RunRequest(
                partition_key=week.isoformat(),
                run_key=f"{info.key}@{info.etag}",
                tags={REPORT_KEY_TAG: info.key},
            )
        )
    if waiting:
        context.log.info(f"{waiting} more new objects under {prefix} wait for the next tick")
    result = dg.SensorResult(run_requests=requests, cursor=json.dumps(listed, sort_keys=True, separators=(",", ":")))
    if not requests:
        result = dg.SensorResult(
            cursor=result.cursor,
            skip_reason=dg.SkipReason(
                f"no new or replaced report under {object_store.uri(prefix)}"
                + (f" ({waiting} more objects wait for the next tick)" if waiting else "")
            ),
        )
    return result

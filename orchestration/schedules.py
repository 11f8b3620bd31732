"""Schedules: the weekly search-terms load."""

from datetime import date, datetime, timedelta, timezone

import dagster as dg

from assets.search_terms import search_terms_job
from assets.search_terms.settings import SearchTermsSettings
from resources.object_store import ObjectStore


def latest_complete_week(now: datetime, lag_days: int) -> date:
    """The Sunday that starts the latest Sunday-to-Saturday week ended lag_days before now."""
    cutoff = (now - timedelta(days=lag_days)).date()
    this_sunday = cutoff - timedelta(days=(cutoff.weekday() + 1) % 7)  # weekday(): Monday is 0
    return this_sunday - timedelta(days=7)


@dg.schedule(
    job=search_terms_job,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,  # with the daemon running, a missed week is caught
    description=(
        "Every morning, load the latest week Amazon has had time to publish (weeks end on "
        "Saturday; publication_lag_days later the report is expected). Skips, saying why, "
        "while the report is not there; a report already loaded is not loaded again unless "
        "it was replaced."
    ),
)
def search_terms_weekly_schedule(
    context: dg.ScheduleEvaluationContext, object_store: ObjectStore, search_terms_settings: SearchTermsSettings
):
    now = context.scheduled_execution_time or datetime.now(timezone.utc)
    week = latest_complete_week(now, search_terms_settings.publication_lag_days)
    found = [i for k in search_terms_settings.report_candidates(week) if (i := object_store.stat(k)) is not None]
    if not found:
        looked = " or ".join(object_store.uri(k) for k in search_terms_settings.report_candidates(week))
        return dg.SkipReason(f"the report for the week of {week} is not there yet ({looked})")
    # one run per version of the report: a repeated tick starts nothing, a replaced file reloads
    versions = ",".join(f"{i.key}@{i.etag}" for i in found)
    return dg.RunRequest(partition_key=week.isoformat(), run_key=f"{week}|{versions}")

"""The weekly schedule: the latest complete week, after the publication lag, once per report version."""

from datetime import date, datetime, timezone

import dagster as dg
import pytest

from assets.search_terms import ASSETS, search_terms_job
from engine.search_terms.sample_report import write_report_file
from orchestration.deployment import local_resources
from orchestration.schedules import latest_complete_week, search_terms_weekly_schedule


@pytest.mark.parametrize(
    "now, lag, week",
    [
        (datetime(2024, 1, 14, 6, tzinfo=timezone.utc), 0, date(2024, 1, 7)),  # Sunday: last week just ended
        (datetime(2024, 1, 13, 23, tzinfo=timezone.utc), 0, date(2023, 12, 31)),  # Saturday: not over yet
        (datetime(2024, 1, 17, 6, tzinfo=timezone.utc), 3, date(2024, 1, 7)),  # Wednesday, 3 days' lag
        (datetime(2024, 1, 16, 6, tzinfo=timezone.utc), 3, date(2023, 12, 31)),  # Tuesday: still waiting
    ],
)
def test_latest_complete_week(now, lag, week):
    assert latest_complete_week(now, lag) == week
    assert week.weekday() == 6


def evaluate(home, when):
    resources = local_resources(home)
    repository = dg.Definitions(
        assets=ASSETS, jobs=[search_terms_job], schedules=[search_terms_weekly_schedule], resources=resources
    ).get_repository_def()
    context = dg.build_schedule_context(scheduled_execution_time=when, resources=resources, repository_def=repository)
    return search_terms_weekly_schedule.evaluate_tick(context)


def test_skips_until_the_report_is_there_then_requests_one_run_per_version(tmp_path):
    home = tmp_path / "floodgate"
    wednesday = datetime(2024, 1, 17, 6, tzinfo=timezone.utc)
    result = evaluate(home, wednesday)
    assert not result.run_requests
    assert "the report for the week of 2024-01-07 is not there yet" in result.skip_message

    report = home / "data" / "search_terms" / "reports" / "2024-01-07.json.gz"
    write_report_file(report, date(2024, 1, 7), terms=10, seed=1)
    [first] = evaluate(home, wednesday).run_requests
    assert first.partition_key == "2024-01-07"
    [again] = evaluate(home, datetime(2024, 1, 18, 6, tzinfo=timezone.utc)).run_requests
    assert again.run_key == first.run_key  # Dagster starts no second run for the same key

    write_report_file(report, date(2024, 1, 7), terms=12, seed=2)  # Amazon re-publishes the week
    [replaced] = evaluate(home, wednesday).run_requests
    assert replaced.run_key != first.run_key and replaced.partition_key == "2024-01-07"

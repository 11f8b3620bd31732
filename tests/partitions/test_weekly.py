"""The report weeks: Sunday 00:00 UTC to the next Sunday, and only finished weeks."""

from datetime import date, datetime, timedelta, timezone

import dagster as dg
import pytest

from partitions.weekly import FIRST_REPORT_WEEK, search_terms_weeks

SUNDAY = 6  # date.weekday()
NOW = datetime(2024, 1, 10, 12, 30, tzinfo=timezone.utc)  # a Wednesday


def test_first_week_is_a_sunday():
    assert date.fromisoformat(FIRST_REPORT_WEEK).weekday() == SUNDAY
    assert search_terms_weeks.get_first_partition_key() == FIRST_REPORT_WEEK


def test_every_key_is_a_sunday_and_weeks_are_consecutive():
    keys = search_terms_weeks.get_partition_keys(current_time=NOW)
    assert len(keys) > 50
    days = [date.fromisoformat(k) for k in keys]
    assert all(d.weekday() == SUNDAY for d in days)
    assert all(b - a == timedelta(days=7) for a, b in zip(days, days[1:]))


@pytest.mark.parametrize("key", ["2023-01-01", "2024-01-07", "2024-03-10", "2024-10-27"])
def test_time_window_runs_sunday_to_sunday(key):
    window = search_terms_weeks.time_window_for_partition_key(key)
    start, end = window.start, window.end
    assert start.utcoffset() == timedelta(0) and end.utcoffset() == timedelta(0)
    assert start.date() == date.fromisoformat(key)
    assert start.weekday() == SUNDAY and end.weekday() == SUNDAY
    assert (start.hour, start.minute, start.second) == (0, 0, 0)
    assert (end.hour, end.minute, end.second) == (0, 0, 0)
    assert end - start == timedelta(days=7)


@pytest.mark.parametrize(
    "moment, week",
    [
        (datetime(2024, 1, 10, 12, tzinfo=timezone.utc), "2024-01-07"),  # Wednesday
        (datetime(2024, 1, 7, 0, 0, tzinfo=timezone.utc), "2024-01-07"),  # Sunday 00:00 starts its week
        (datetime(2024, 1, 13, 23, 59, 59, tzinfo=timezone.utc), "2024-01-07"),  # Saturday night
        (datetime(2024, 1, 14, 0, 0, tzinfo=timezone.utc), "2024-01-14"),
    ],
)
def test_partition_for_a_moment_is_the_preceding_sunday(moment, week):
    assert search_terms_weeks.get_partition_key_for_timestamp(moment.timestamp()) == week


def test_no_partition_for_the_unfinished_week():
    keys = search_terms_weeks.get_partition_keys(current_time=NOW)
    assert keys[-1] == "2023-12-31"  # the last finished week
    assert "2024-01-07" not in keys  # the week NOW is in
    with dg.partition_loading_context(effective_dt=NOW):
        assert search_terms_weeks.get_last_partition_key() == "2023-12-31"
        assert not search_terms_weeks.has_partition_key("2024-01-07")
        assert search_terms_weeks.has_partition_key("2023-12-31")


def test_a_week_appears_once_it_is_over():
    end_of_week = datetime(2024, 1, 14, 0, 0, tzinfo=timezone.utc)
    assert search_terms_weeks.get_partition_keys(current_time=end_of_week - timedelta(seconds=1))[-1] == "2023-12-31"
    assert search_terms_weeks.get_partition_keys(current_time=end_of_week)[-1] == "2024-01-07"


def test_a_non_sunday_key_is_not_a_partition():
    with dg.partition_loading_context(effective_dt=NOW):
        assert not search_terms_weeks.has_partition_key("2023-12-30")  # a Saturday
        assert not search_terms_weeks.has_partition_key("2022-12-25")  # before the first week

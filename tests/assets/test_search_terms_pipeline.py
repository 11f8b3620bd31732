"""The search-terms assets run end to end on the embedded defaults (a directory, DuckDB)."""

import json
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from assets.search_terms import ASSETS, search_terms_job
from engine.search_terms.sample_report import specification, write_report_file
from orchestration.deployment import local_resources

WEEK = date(2024, 1, 7)
CHECKS = {
    "at_most_three_products_per_term",
    "shares_within_0_1",
    "totals_at_most_one",
    "has_rows",
    "terms_match_parsed",
}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "floodgate"


@pytest.fixture
def instance(tmp_path: Path):
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        yield instance


def report_path(home: Path, week: date, suffix: str = ".json") -> Path:
    return home / "data" / "search_terms" / "reports" / f"{week.isoformat()}{suffix}"


def put_report(home: Path, week: date, terms: int = 300, seed: int = 0, suffix: str = ".json") -> int:
    return write_report_file(report_path(home, week, suffix), week, terms=terms, seed=seed)


def run_week(home: Path, week: date, instance, selection=None, raise_on_error: bool = True, **settings):
    resources = local_resources(home)
    if settings:
        resources["search_terms_settings"] = resources["search_terms_settings"].model_copy(update=settings)
    return dg.materialize(
        ASSETS,
        selection=selection,
        resources=resources,
        partition_key=week.isoformat(),
        instance=instance,
        raise_on_error=raise_on_error,
    )


def week_rows(home: Path, week: date) -> list[tuple]:
    warehouse = local_resources(home)["warehouse"]
    return warehouse.query(
        "SELECT * FROM search_terms_top3 WHERE week_start = ? ORDER BY department_name, search_term", [week]
    )


def test_a_week_lands_in_the_warehouse_with_its_checks_passing(home, instance):
    put_report(home, WEEK, terms=500, seed=1, suffix=".json.gz")
    result = run_week(home, WEEK, instance)
    assert result.success
    rows = week_rows(home, WEEK)
    assert len(rows) == 500
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == dict.fromkeys(CHECKS, True)
    meta = {
        e.materialization.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    parsed = meta["parsed_search_terms"]
    for key in ("rows_in", "rows_out", "rejects", "seconds", "rows_per_second", "peak_rss_mb", "preview"):
        assert key in parsed, key
    assert parsed["rows_out"].value == parsed["rows_in"].value > 500
    assert meta["search_term_top3"]["rows_out"].value == 500
    assert meta["search_terms_top3_table"]["week_rows_in_table"].value == 500
    assert meta["search_terms_report"]["gzip"].value is True


def test_backfilling_four_weeks_then_rerunning_one_touches_only_that_week(home, instance):
    weeks = [WEEK + timedelta(weeks=i) for i in range(4)]
    for i, week in enumerate(weeks):
        put_report(home, week, terms=200 + 10 * i, seed=i)
    for week in weeks:
        assert run_week(home, week, instance).success
    before = {week: week_rows(home, week) for week in weeks}
    assert [len(before[w]) for w in weeks] == [200, 210, 220, 230]
    materialized = instance.get_materialized_partitions(dg.AssetKey("search_terms_top3_table"))
    assert materialized == {w.isoformat() for w in weeks}

    warehouse = local_resources(home)["warehouse"]
    files = {w: warehouse.partition_file("search_terms_top3", "week_start", w) for w in weeks}
    stamps = {w: files[w].stat().st_mtime_ns for w in weeks}

    assert run_week(home, weeks[1], instance).success
    after = {week: week_rows(home, week) for week in weeks}
    assert after == before  # the re-run week is identical, the others untouched
    (total,) = warehouse.query("SELECT count(*) FROM search_terms_top3")[0]
    assert total == sum(len(r) for r in before.values())  # nothing duplicated
    for w in (weeks[0], weeks[2], weeks[3]):
        assert files[w].stat().st_mtime_ns == stamps[w]
    assert files[weeks[1]].stat().st_mtime_ns != stamps[weeks[1]]


def test_a_replaced_report_replaces_the_weeks_rows(home, instance):
    put_report(home, WEEK, terms=100, seed=1)
    assert run_week(home, WEEK, instance).success
    first = week_rows(home, WEEK)
    put_report(home, WEEK, terms=80, seed=2)
    assert run_week(home, WEEK, instance).success
    second = week_rows(home, WEEK)
    assert len(second) == 80 and second != first[:80]


def test_top3_alone_pivots_the_parsed_parquet_to_the_same_table(home, instance):
    put_report(home, WEEK, terms=400, seed=4)
    assert run_week(home, WEEK, instance).success
    fused = week_rows(home, WEEK)
    result = run_week(home, WEEK, instance, selection=["search_term_top3", "search_terms_top3_table"])
    assert result.success
    made_in = {
        e.materialization.asset_key.to_user_string(): e.materialization.metadata.get("made_in")
        for e in result.get_asset_materialization_events()
    }
    assert made_in["search_term_top3"].value == "a pass over the parsed Parquet"
    assert "parsed_search_terms" not in made_in
    assert week_rows(home, WEEK) == fused


def failure_message(result) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "expected a failed step"
    return failures[0].event_specific_data.error.message


def test_a_report_for_another_week_fails_with_a_clear_error_and_loads_nothing(home, instance):
    write_report_file(report_path(home, WEEK), WEEK + timedelta(weeks=1), terms=10)
    result = run_week(home, WEEK, instance, raise_on_error=False)
    assert not result.success
    message = failure_message(result)
    assert "2024-01-07.json" in message and "week of 2024-01-14" in message and "partition is the week of 2024-01-07" in message


def test_a_missing_report_names_where_it_was_looked_for(home, instance):
    result = run_week(home, WEEK, instance, raise_on_error=False)
    assert not result.success
    message = failure_message(result)
    assert "no report for the week of 2024-01-07" in message and "2024-01-07.json.gz" in message


def test_too_many_rejects_fail_the_run_keep_the_rejects_and_leave_the_warehouse_alone(home, instance):
    put_report(home, WEEK, terms=50, seed=1)
    assert run_week(home, WEEK, instance).success
    loaded = week_rows(home, WEEK)
    parsed_file = home / "data" / "search_terms" / WEEK.isoformat() / "parsed.parquet"
    parsed_before = parsed_file.read_bytes()

    records = json.loads(report_path(home, WEEK).read_text())["dataByDepartmentAndSearchTerm"]
    for record in records[:5]:
        record["clickShare"] = 1.5
    report_path(home, WEEK).write_text(
        json.dumps({"reportSpecification": specification(WEEK), "dataByDepartmentAndSearchTerm": records})
    )
    result = run_week(home, WEEK, instance, raise_on_error=False, max_reject_fraction=0.01)
    assert not result.success
    message = failure_message(result)
    assert f"5 of {len(records)} records rejected" in message and "rejects.ndjson" in message
    rejects = [json.loads(line) for line in (parsed_file.parent / "rejects.ndjson").read_text().splitlines()]
    assert [r["record_index"] for r in rejects] == [0, 1, 2, 3, 4]
    assert all(r["field"] == "clickShare" and "outside 0–1" in r["reason"] for r in rejects)
    assert parsed_file.read_bytes() == parsed_before  # not replaced by the failed run
    assert week_rows(home, WEEK) == loaded


def test_a_few_rejects_within_the_allowed_fraction_are_reported_and_left_out(home, instance):
    put_report(home, WEEK, terms=400, seed=1)
    records = json.loads(report_path(home, WEEK).read_text())["dataByDepartmentAndSearchTerm"]
    del records[3]["clickedAsin"]
    report_path(home, WEEK).write_text(
        json.dumps({"reportSpecification": specification(WEEK), "dataByDepartmentAndSearchTerm": records})
    )
    result = run_week(home, WEEK, instance, max_reject_fraction=0.01)
    assert result.success
    meta = {e.materialization.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert meta["parsed_search_terms"]["rejects"].value == 1
    assert meta["parsed_search_terms"]["rows_out"].value == len(records) - 1


def test_a_corrupt_report_leaves_the_previous_load_in_place(home, instance):
    put_report(home, WEEK, terms=60, seed=1)
    assert run_week(home, WEEK, instance).success
    loaded = week_rows(home, WEEK)
    data = report_path(home, WEEK).read_bytes()
    report_path(home, WEEK).write_bytes(data[: len(data) // 2])  # truncated
    result = run_week(home, WEEK, instance, raise_on_error=False)
    assert not result.success
    assert "truncated" in failure_message(result)
    assert week_rows(home, WEEK) == loaded


def test_the_parsed_parquet_is_typed_and_carries_the_week(home, instance):
    put_report(home, WEEK, terms=30, seed=1)
    assert run_week(home, WEEK, instance).success
    parquet = pq.ParquetFile(home / "data" / "search_terms" / WEEK.isoformat() / "parsed.parquet")
    schema = parquet.schema_arrow
    assert str(schema.field("search_frequency_rank").type) == "int64"
    assert str(schema.field("click_share").type) == "double"
    assert parquet.metadata.metadata[b"floodgate.week_start"] == b"2024-01-07"
    assert int(parquet.metadata.metadata[b"floodgate.terms"]) == 30


def test_the_weekly_job_runs_in_one_process_over_the_whole_group(home, instance):
    put_report(home, WEEK, terms=20)
    job = dg.Definitions(assets=ASSETS, jobs=[search_terms_job], resources=local_resources(home)).resolve_job_def(
        "search_terms_weekly"
    )
    result = job.execute_in_process(partition_key=WEEK.isoformat(), instance=instance)
    assert result.success
    assert {e.materialization.asset_key.to_user_string() for e in result.get_asset_materialization_events()} == {
        "search_terms_report",
        "parsed_search_terms",
        "search_term_top3",
        "search_terms_top3_table",
    }


def test_a_report_not_grouped_by_term_is_pivoted_by_duckdb_with_every_check_passing(home, instance):
    import random

    put_report(home, WEEK, terms=300, seed=6)
    records = json.loads(report_path(home, WEEK).read_text())["dataByDepartmentAndSearchTerm"]
    random.Random(2).shuffle(records)
    report_path(home, WEEK).write_text(
        json.dumps({"reportSpecification": specification(WEEK), "dataByDepartmentAndSearchTerm": records})
    )
    result = run_week(home, WEEK, instance)
    assert result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == dict.fromkeys(CHECKS, True)
    meta = {e.materialization.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert meta["search_term_top3"]["grouped_input"].value is False
    assert len(week_rows(home, WEEK)) == 300


def test_an_empty_report_loads_no_rows_and_fails_the_has_rows_check(home, instance):
    report_path(home, WEEK).parent.mkdir(parents=True)
    report_path(home, WEEK).write_text(
        json.dumps({"reportSpecification": specification(WEEK), "dataByDepartmentAndSearchTerm": []})
    )
    result = run_week(home, WEEK, instance)
    assert result.success  # the run completes; the check says what is wrong
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["has_rows"] is False
    assert {k: v for k, v in checks.items() if k != "has_rows"} == dict.fromkeys(CHECKS - {"has_rows"}, True)
    assert week_rows(home, WEEK) == []

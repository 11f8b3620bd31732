"""The top-3 pivot: streamed in the parse pass, streamed from Parquet, and by DuckDB, all
equal to a plain-Python pivot of json.loads."""

import io
import json
import random
from datetime import date

import pyarrow.parquet as pq
import pytest

from engine.search_terms.parse_report import parse_report
from engine.search_terms.records import TOP3_SCHEMA
from engine.search_terms.sample_report import specification, write_report
from engine.search_terms.top3 import NotGrouped, build_top3_parquet, build_top3_parquet_any_order

WEEK = date(2024, 1, 7)
MARKET = "ATVPDKIKX0DER"


def expected_top3(records: list[dict]) -> list[dict]:
    """The pivot, written the obvious way."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["departmentName"], r["searchTerm"]), []).append(r)
    rows = []
    for (dept, term), rs in groups.items():
        row = {
            "week_start": WEEK,
            "marketplace_id": MARKET,
            "department_name": dept,
            "search_term": term,
            "search_frequency_rank": min(r["searchFrequencyRank"] for r in rs),
        }
        picks = {}
        for r in rs:
            if 1 <= r["clickShareRank"] <= 3:
                picks.setdefault(r["clickShareRank"], r)
        for k in (1, 2, 3):
            p = picks.get(k)
            row[f"clicked_asin_{k}"] = p["clickedAsin"] if p else None
            row[f"clicked_item_name_{k}"] = p.get("clickedItemName") if p else None
            row[f"click_share_{k}"] = float(p["clickShare"]) if p else None
            row[f"conversion_share_{k}"] = float(p["conversionShare"]) if p else None
        row["total_click_share"] = sum(float(p["clickShare"]) for p in picks.values())
        row["total_conversion_share"] = sum(float(p["conversionShare"]) for p in picks.values())
        rows.append(row)
    return rows


def report_bytes(records: list[dict]) -> bytes:
    return json.dumps({"reportSpecification": specification(WEEK), "dataByDepartmentAndSearchTerm": records}).encode()


def sample_records(terms: int, seed: int) -> list[dict]:
    buf = io.BytesIO()
    write_report(buf, WEEK, terms=terms, seed=seed)
    return json.loads(buf.getvalue())["dataByDepartmentAndSearchTerm"]


def parse_with_top3(data: bytes, **kwargs):
    parsed, rejects, top3 = io.BytesIO(), io.BytesIO(), io.BytesIO()
    summary = parse_report(io.BytesIO(data), "r.json", WEEK, parsed, rejects, top3, **kwargs)
    return summary, parsed, top3


def read_rows(buf: io.BytesIO) -> list[dict]:
    table = pq.read_table(io.BytesIO(buf.getvalue()))
    assert table.schema.equals(TOP3_SCHEMA)
    return table.to_pylist()


def by_key(rows: list[dict]) -> list[dict]:
    # rows come in file order, but for the groups where batches meet, which come in bulk
    return sorted(rows, key=lambda r: (r["search_frequency_rank"], r["department_name"], r["search_term"]))


def assert_same_rows(actual: list[dict], expected: list[dict]) -> None:
    actual, expected = by_key(actual), by_key(expected)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        for name, value in e.items():
            if name.startswith("total_"):
                assert a[name] == pytest.approx(value, abs=1e-12), name
            else:
                assert a[name] == value, (name, a, e)


@pytest.mark.parametrize("chunk_bytes, workers", [(4 << 20, 2), (4096, 2), (700, 1), (300, 2)])
def test_parse_pass_pivot_equals_plain_pivot_whatever_the_cuts(chunk_bytes, workers):
    records = sample_records(2000, seed=chunk_bytes)
    summary, _, top3 = parse_with_top3(report_bytes(records), chunk_bytes=chunk_bytes, workers=workers)
    expected = expected_top3(records)
    assert summary.top3 is not None and summary.top3.terms == len(expected)
    assert_same_rows(read_rows(top3), expected)


def test_pivot_from_parquet_equals_parse_pass_pivot():
    records = sample_records(3000, seed=7)
    _, parsed, top3 = parse_with_top3(report_bytes(records), chunk_bytes=8192)
    again = io.BytesIO()
    parsed.seek(0)
    stats, _ = build_top3_parquet(parsed, again, WEEK, MARKET, batch_rows=333)
    assert stats.terms == 3000
    assert by_key(read_rows(again)) == by_key(read_rows(top3))


def test_duplicates_extra_ranks_and_mixed_frequency_ranks_are_counted_not_hidden():
    records = [
        {"departmentName": "D", "searchTerm": "a", "searchFrequencyRank": 1, "clickedAsin": "A1",
         "clickShareRank": 1, "clickShare": 0.5, "conversionShare": 0.1},
        {"departmentName": "D", "searchTerm": "a", "searchFrequencyRank": 2, "clickedAsin": "A2",
         "clickShareRank": 1, "clickShare": 0.2, "conversionShare": 0.1},
        {"departmentName": "D", "searchTerm": "a", "searchFrequencyRank": 1, "clickedAsin": "A3",
         "clickShareRank": 4, "clickShare": 0.1, "conversionShare": 0.1},
        {"departmentName": "D", "searchTerm": "a", "searchFrequencyRank": 1, "clickedAsin": "A4",
         "clickShareRank": 3, "clickShare": 0.1, "conversionShare": 0.0},
        {"departmentName": "D", "searchTerm": "b", "searchFrequencyRank": 3, "clickedAsin": "B1",
         "clickShareRank": 2, "clickShare": 0.3, "conversionShare": 0.2},
    ]
    for chunk in (1 << 20, 200):
        summary, _, top3 = parse_with_top3(report_bytes(records), chunk_bytes=chunk)
        stats = summary.top3
        assert (stats.terms, stats.max_products_per_term, stats.terms_over_three_products) == (2, 4, 1)
        assert stats.duplicate_click_share_ranks == 1 and stats.mixed_frequency_ranks == 1
        rows = by_key(read_rows(top3))
        assert_same_rows(rows, expected_top3(records))
        assert rows[0]["clicked_asin_1"] == "A1" and rows[0]["clicked_asin_2"] is None


def test_rows_out_of_order_fall_back_to_duckdb_with_the_same_result():
    records = sample_records(500, seed=3)
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    summary, parsed, _ = parse_with_top3(report_bytes(shuffled), chunk_bytes=4096)
    assert summary.top3 is None  # the pass noticed and left the pivot to the caller
    parsed.seek(0)
    with pytest.raises(NotGrouped):
        build_top3_parquet(parsed, io.BytesIO(), WEEK, MARKET)
    parsed.seek(0)
    out = io.BytesIO()
    stats, _ = build_top3_parquet_any_order(parsed, out, WEEK, MARKET, memory_limit="256MB")
    expected = sorted(expected_top3(records), key=lambda r: (r["search_frequency_rank"], r["department_name"], r["search_term"]))
    assert stats.terms == len(expected)
    assert_same_rows(read_rows(out), expected)


def test_a_term_whose_rows_come_back_later_is_caught():
    records = sample_records(50, seed=5)
    records.append(dict(records[0], searchFrequencyRank=10_000))  # term 1 again, at the end
    summary, _, _ = parse_with_top3(report_bytes(records), chunk_bytes=1 << 20)
    assert summary.top3 is None


def test_spec_after_the_data_leaves_the_pivot_to_the_caller():
    records = sample_records(100, seed=9)
    data = json.dumps({"dataByDepartmentAndSearchTerm": records, "reportSpecification": specification(WEEK)}).encode()
    summary, _, _ = parse_with_top3(data, chunk_bytes=2048)
    assert summary.top3 is None and summary.rows == len(records)


def test_missing_item_names_stay_null_in_every_path():
    records = sample_records(600, seed=11)
    for i, record in enumerate(records):
        if i % 4 == 1:
            del record["clickedItemName"]
        elif i % 4 == 2:
            record["clickedItemName"] = None
    summary, parsed, top3 = parse_with_top3(report_bytes(records), chunk_bytes=4096)
    rows = read_rows(top3)
    assert_same_rows(rows, expected_top3(records))
    assert any(r["clicked_asin_1"] is not None and r["clicked_item_name_1"] is None for r in rows)
    parsed.seek(0)
    again = io.BytesIO()
    build_top3_parquet(parsed, again, WEEK, MARKET, batch_rows=100)
    assert by_key(read_rows(again)) == by_key(rows)


def test_the_key_hash_log_finds_repeats_in_memory_and_when_spilled_to_buckets():
    import numpy as np

    from engine.search_terms.top3 import KeyHashLog

    rng = np.random.default_rng(3)
    hashes = rng.integers(0, 2**64 - 1, size=50_000, dtype=np.uint64)
    for limit in (1 << 20, 1000):  # all in memory; spilled to bucket files many times
        log = KeyHashLog(buffer_hashes=limit, buckets=16)
        for part in np.array_split(hashes, 97):
            log.extend(part)
        assert log.repeats() == 0
        log = KeyHashLog(buffer_hashes=limit, buckets=16)
        for part in np.array_split(np.concatenate([hashes, hashes[[5, 49_999, 123]]]), 97):
            log.extend(part)
        assert log.repeats() == 3

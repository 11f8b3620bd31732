"""The sample report generator: Amazon's format, reproducible from a seed, any size, gzip."""

import gzip
import io
import json
from datetime import date

import pytest

from engine.search_terms.report_reader import parse_spec
from engine.search_terms.sample_report import main, write_report, write_report_file

WEEK = date(2024, 1, 7)


def generate(terms: int, seed: int) -> bytes:
    out = io.BytesIO()
    write_report(out, WEEK, terms=terms, seed=seed)
    return out.getvalue()


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_bytes():
    assert generate(200, 1) == generate(200, 1)
    assert generate(200, 1) != generate(200, 2)


def test_rows_follow_amazons_schema_and_order():
    doc = json.loads(generate(500, 3))
    spec = parse_spec("sample", doc["reportSpecification"], 0, WEEK)
    assert spec.week_start == WEEK and spec.marketplace_ids == ("ATVPDKIKX0DER",)
    rows = doc["dataByDepartmentAndSearchTerm"]
    terms = {}
    for row in rows:
        assert row["clickedAsin"].startswith("B0") and len(row["clickedAsin"]) == 10
        assert 0 <= row["clickShare"] <= 1 and 0 <= row["conversionShare"] <= 1
        terms.setdefault((row["departmentName"], row["searchTerm"]), []).append(row)
    assert len(terms) == 500
    ranks = [row["searchFrequencyRank"] for row in rows]
    assert ranks == sorted(ranks)  # by search frequency rank, a term's rows together
    for group in terms.values():
        assert [r["clickShareRank"] for r in group] == list(range(1, len(group) + 1)) and len(group) <= 3
        assert sum(r["clickShare"] for r in group) <= 1 and sum(r["conversionShare"] for r in group) <= 1


def test_a_week_that_is_not_a_sunday_is_refused():
    with pytest.raises(ValueError, match="not a Sunday"):
        write_report(io.BytesIO(), date(2024, 1, 8), terms=1)


def test_the_command_line_writes_gzip_of_about_the_size_asked(tmp_path):
    out = tmp_path / "r.json.gz"
    main(["--week", "2024-01-07", "--size", "2MB", "--gzip", "--seed", "5", "--out", str(out)])
    data = gzip.decompress(out.read_bytes())
    assert 1_500_000 < len(data) < 2_500_000
    assert json.loads(data)["reportSpecification"]["dataStartTime"] == "2024-01-07"
    plain = tmp_path / "r.json"
    write_report_file(plain, WEEK, terms=10, seed=5)
    assert plain.read_bytes()[:1] == b"{"

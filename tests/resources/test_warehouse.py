"""DuckDBWarehouse: one Parquet file per partition, replaced atomically, read through a view."""

import io
import os
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from resources.warehouse import DuckDBWarehouse, check_identifier

W1 = date(2024, 1, 7)
W2 = date(2024, 1, 14)
TABLE = "top3"


def parquet(weeks: list[date], terms: list[str], ranks: list[int] | None = None) -> io.BytesIO:
    ranks = ranks if ranks is not None else list(range(1, len(terms) + 1))
    table = pa.table(
        {
            "week_start": pa.array(weeks, pa.date32()),
            "search_term": pa.array(terms, pa.string()),
            "search_frequency_rank": pa.array(ranks, pa.int64()),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    buf.seek(0)
    return buf


def week_file(week: date, terms: list[str]) -> io.BytesIO:
    return parquet([week] * len(terms), terms)


def rows_by_week(wh: DuckDBWarehouse) -> dict[date, list[str]]:
    out: dict[date, list[str]] = {}
    for week, term in wh.query(f"SELECT week_start, search_term FROM {wh.table_ref(TABLE)} ORDER BY 1, 2"):
        out.setdefault(week, []).append(term)
    return out


@pytest.fixture
def wh(tmp_path: Path) -> DuckDBWarehouse:
    return DuckDBWarehouse(path=str(tmp_path / "wh" / "warehouse.duckdb"), lock_timeout_seconds=5)


def test_replace_partition_loads_a_week_and_returns_its_rows(wh):
    assert wh.replace_partition(TABLE, "week_start", W1, week_file(W1, ["a", "b", "c"])) == 3
    assert rows_by_week(wh) == {W1: ["a", "b", "c"]}
    assert wh.partition_file(TABLE, "week_start", W1).is_file()


def test_loading_another_week_keeps_the_first(wh):
    wh.replace_partition(TABLE, "week_start", W1, week_file(W1, ["a", "b", "c"]))
    assert wh.replace_partition(TABLE, "week_start", W2, week_file(W2, ["x", "y"])) == 2
    assert rows_by_week(wh) == {W1: ["a", "b", "c"], W2: ["x", "y"]}


def test_reloading_a_week_replaces_exactly_that_week(wh):
    wh.replace_partition(TABLE, "week_start", W1, week_file(W1, ["a", "b", "c"]))
    wh.replace_partition(TABLE, "week_start", W2, week_file(W2, ["x", "y"]))
    # the same load again: no duplicates
    assert wh.replace_partition(TABLE, "week_start", W1, week_file(W1, ["a", "b", "c"])) == 3
    assert wh.query(f"SELECT count(*) FROM {TABLE}") == [(5,)]
    # different rows for week 1
    assert wh.replace_partition(TABLE, "week_start", W1, week_file(W1, ["new1", "new2", "new3", "new4"])) == 4
    assert rows_by_week(wh) == {W1: ["new1", "new2", "new3", "new4"], W2: ["x", "y"]}
    # an empty week
    assert wh.replace_partition(TABLE, "week_start", W2, week_file(W2, [])) == 0
    assert rows_by_week(wh) == {W1: ["new1", "new2", "new3", "new4"]}
    assert sorted(p.name for p in wh.partition_file(TABLE, "week_start", W1).parent.glob("*.parquet")) == [
        "week_start=2024-01-07.parquet",
        "week_start=2024-01-14.parquet",
    ]


def test_no_partial_files_are_left_behind(wh):
    wh.replace_partition(TABLE, "week_start", W1, week_file(W1, ["a"]))
    with pytest.raises(ValueError):
        wh.replace_partition(TABLE, "week_start", W1, parquet([W1, W2], ["a", "b"]))
    names = sorted(p.name for p in wh.partition_file(TABLE, "week_start", W1).parent.iterdir() if p.name != ".view")
    assert names == ["week_start=2024-01-07.parquet"]


@pytest.mark.parametrize(
    "weeks",
    [
        [W1, W1 + timedelta(days=7), W1],  # a row of another week
        [W1, None, W1],  # a row with no week
    ],
    ids=["other-week", "null-week"],
)
def test_a_file_with_rows_of_another_week_is_refused(wh, weeks):
    wh.replace_partition(TABLE, "week_start", W1, week_file(W1, ["keep1", "keep2"]))
    with pytest.raises(ValueError, match="1 rows"):
        wh.replace_partition(TABLE, "week_start", W1, parquet(weeks, ["p", "q", "r"]))
    assert rows_by_week(wh) == {W1: ["keep1", "keep2"]}


def test_a_refused_first_load_leaves_no_table_rows(wh):
    with pytest.raises(ValueError):
        wh.replace_partition(TABLE, "week_start", W2, parquet([W1, W2], ["p", "q"]))
    assert not wh.partition_file(TABLE, "week_start", W2).exists()


def test_query_with_parameters(wh):
    wh.replace_partition(TABLE, "week_start", W1, week_file(W1, ["a", "b", "c"]))
    wh.replace_partition(TABLE, "week_start", W2, week_file(W2, ["x", "y"]))
    assert wh.query(f"SELECT count(*) FROM {TABLE} WHERE week_start = ?", [W2]) == [(2,)]
    assert wh.query(
        f"SELECT search_term FROM {TABLE} WHERE week_start = ? AND search_frequency_rank >= ? ORDER BY 1", [W1, 2]
    ) == [("b",), ("c",)]
    assert wh.query("SELECT 41 + 1") == [(42,)]


@pytest.mark.parametrize("bad", ["", "1abc", "a-b", "a b", "t; DROP TABLE x", "x'y", 'x"', "a.b", "../t"])
def test_names_that_are_not_plain_identifiers_are_refused(wh, bad, tmp_path):
    with pytest.raises(ValueError, match="identifier"):
        check_identifier(bad)
    with pytest.raises(ValueError, match="identifier"):
        wh.replace_partition(bad, "week_start", W1, week_file(W1, ["a"]))
    with pytest.raises(ValueError, match="identifier"):
        wh.replace_partition(TABLE, bad, W1, week_file(W1, ["a"]))
    with pytest.raises(ValueError, match="identifier"):
        wh.table_ref(bad)
    assert not (tmp_path / "wh").exists() or not any((tmp_path / "wh").rglob("*.parquet"))


def test_plain_identifiers_pass():
    for name in ["t", "_x", "search_terms_top3", "A1_b2"]:
        assert check_identifier(name) == name


def test_a_second_warehouse_object_sees_the_loaded_rows(wh):
    wh.replace_partition(TABLE, "week_start", W1, week_file(W1, ["a", "b"]))
    other = DuckDBWarehouse(path=wh.path, lock_timeout_seconds=5)
    assert other.query(f"SELECT count(*) FROM {TABLE}") == [(2,)]
    # the other "process" loads a week; the first sees it, and both see the same rows
    assert other.replace_partition(TABLE, "week_start", W2, week_file(W2, ["x"])) == 1
    assert rows_by_week(wh) == rows_by_week(other) == {W1: ["a", "b"], W2: ["x"]}


def test_another_process_sees_the_loaded_rows(wh, tmp_path):
    import subprocess
    import sys

    wh.replace_partition(TABLE, "week_start", W1, week_file(W1, ["a", "b", "c"]))
    code = (
        "import sys; from resources.warehouse import DuckDBWarehouse; "
        "print(DuckDBWarehouse(path=sys.argv[1]).query('SELECT count(*) FROM top3 WHERE week_start = ?', ['2024-01-07'])[0][0])"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code, wh.path], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"


def test_load_from_an_object_store_file_is_independent_of_later_store_writes(wh, tmp_path):
    from resources.object_store import LocalDirectoryObjectStore

    store = LocalDirectoryObjectStore(root=str(tmp_path / "store"))
    key = "search_terms/2024-01-07/top3.parquet"
    with store.open_write(key) as out:
        out.write(week_file(W1, ["a", "b"]).getvalue())
    with store.open_read(key) as src:
        assert wh.replace_partition(TABLE, "week_start", W1, src) == 2
    # the store replaces its object: the loaded week keeps its rows
    with store.open_write(key) as out:
        out.write(week_file(W1, ["x", "y", "z"]).getvalue())
    assert rows_by_week(wh) == {W1: ["a", "b"]}
    # a refused load from a store file leaves the week and the store object alone
    bad_key = "search_terms/2024-01-07/bad.parquet"
    with store.open_write(bad_key) as out:
        out.write(parquet([W1, W2], ["p", "q"]).getvalue())
    with store.open_read(bad_key) as src, pytest.raises(ValueError):
        wh.replace_partition(TABLE, "week_start", W1, src)
    assert rows_by_week(wh) == {W1: ["a", "b"]}
    assert store.stat(bad_key).size > 0
    with store.open_read(key) as src:
        assert wh.replace_partition(TABLE, "week_start", W1, src) == 3
    assert rows_by_week(wh) == {W1: ["x", "y", "z"]}
    with store.open_read(key) as src:
        assert pq.read_table(src).num_rows == 3


def _shares_file(week, shares, statistics):
    table = pa.table({"week_start": pa.array([week] * len(shares), pa.date32()), "share": pa.array(shares, pa.float64())})
    buf = io.BytesIO()
    pq.write_table(table, buf, write_statistics=statistics, row_group_size=2)
    buf.seek(0)
    return buf


@pytest.mark.parametrize("statistics", [True, False])
def test_partition_profile_gives_rows_and_ranges_from_statistics_or_a_scan(wh, statistics):
    wh.replace_partition(TABLE, "week_start", W1, _shares_file(W1, [0.5, None, 0.25, 0.75, None], statistics))
    profile = wh.partition_profile(TABLE, "week_start", W1, ["share"])
    assert profile.rows == 5
    assert profile.minimum == {"share": 0.25} and profile.maximum == {"share": 0.75}
    empty = wh.partition_profile(TABLE, "week_start", W2, ["share"])
    assert empty.rows == 0 and empty.minimum == {"share": None}


def test_the_view_is_made_again_for_a_new_database_file(wh):
    wh.replace_partition(TABLE, "week_start", W1, week_file(W1, ["a"]))
    Path(wh.path).unlink()  # someone deletes the database; the partition files stay
    wh.replace_partition(TABLE, "week_start", W2, week_file(W2, ["b", "c"]))
    assert wh.query(f"SELECT count(*) FROM {TABLE}") == [(3,)]

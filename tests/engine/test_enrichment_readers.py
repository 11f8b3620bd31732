"""Input files in chunks: CSV, NDJSON, JSON arrays (streamed) and Parquet; gzip; clear
errors naming the file and the position; partition keys of input files."""

from __future__ import annotations

import gzip
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.enrichment import readers
from engine.enrichment.readers import InputError, read_chunks
from engine.enrichment.source import check_partition_key, file_format, input_key, partition_key


def chunks(data: bytes, fmt: str, rows: int = 3, name: str = "in/f") -> list:
    return list(read_chunks(io.BytesIO(data), fmt, name, rows))


def records(data: bytes, fmt: str, rows: int = 3) -> list[dict]:
    return [r for c in chunks(data, fmt, rows) for r in c.records]


# --- CSV ----------------------------------------------------------------------------------


def test_csv_chunks_hold_consecutive_rows_as_strings():
    data = "\ufeffid,name,n\n" + "".join(f"r{i},\"name, {i}\",{i}\n" for i in range(8)) + "\n"
    got = chunks(data.encode(), "csv", rows=3)
    assert [(c.index, c.first_row, c.rows) for c in got] == [(0, 0, 3), (1, 3, 3), (2, 6, 2)]
    assert got[1].records[0] == {"id": "r3", "name": "name, 3", "n": "3"}  # the BOM is not in "id"


def test_csv_gzip_is_told_from_the_bytes():
    data = b"id,v\n" + b"".join(b"a%d,%d\n" % (i, i) for i in range(5))
    assert records(gzip.compress(data), "csv") == records(data, "csv")


def test_csv_row_with_the_wrong_number_of_fields_names_file_and_line():
    with pytest.raises(InputError) as info:
        chunks(b"id,v\na,1\nb,2,3\n", "csv", name="in/bad.csv")
    assert str(info.value) == "in/bad.csv: line 3: 3 fields where the header has 2"


def test_csv_header_needs_distinct_names():
    with pytest.raises(InputError, match="line 1: the header needs distinct"):
        chunks(b"id,id\n1,2\n", "csv")


def test_csv_that_is_not_utf8_is_named():
    with pytest.raises(InputError, match="not UTF-8"):
        chunks(b"id,v\na,\xff\xfe\n", "csv")


# --- NDJSON -------------------------------------------------------------------------------


def test_ndjson_skips_blank_lines_and_keeps_types():
    data = b'{"id": 1, "tags": ["a"]}\n\n{"id": 2, "x": null}\n'
    assert records(data, "ndjson") == [{"id": 1, "tags": ["a"]}, {"id": 2, "x": None}]


def test_ndjson_invalid_line_names_line_and_column():
    with pytest.raises(InputError) as info:
        chunks(b'{"id": 1}\n{"id": 2,}\n', "ndjson", name="f.ndjson")
    assert info.value.position == "line 2, column 10"
    assert "invalid JSON" in info.value.problem


def test_ndjson_line_that_is_not_an_object():
    with pytest.raises(InputError, match="line 2: a JSON list, not an object"):
        chunks(b'{"id": 1}\n[1, 2]\n', "ndjson")


def test_json_file_that_starts_with_an_object_is_ndjson():
    assert records(b' {"id": 1}\n{"id": 2}\n', "json") == [{"id": 1}, {"id": 2}]


# --- JSON arrays --------------------------------------------------------------------------

TRICKY = [
    {"id": "a", "s": "has ] and [ and , inside", "n": 1.5e3},
    {"id": "b", "s": 'quote \\" and \\\\ slash', "nested": {"x": [1, [2, {"y": "}"}]]}},
    {"id": "c", "u": "ünïcødé ✓", "empty": {}, "list": []},
    {"id": "d", "big": 12345678901234567890, "t": True, "f": None},
]


@pytest.mark.parametrize("read_size", [1, 2, 3, 7, 64, 1 << 20])
def test_json_array_items_split_across_reads_come_out_whole(monkeypatch, read_size):
    monkeypatch.setattr(readers, "_READ", read_size)
    data = ("[\n  " + ",\n  ".join(json.dumps(r, ensure_ascii=False) for r in TRICKY) + "\n]\n").encode()
    assert records(data, "json", rows=3) == json.loads(data)


def test_empty_array_and_empty_file_have_no_records():
    assert records(b"  [ ]  ", "json") == []
    assert records(b"", "json") == []


@settings(max_examples=60, deadline=None)
@given(
    items=st.lists(
        st.dictionaries(
            st.text(min_size=1, max_size=5),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
                max_leaves=6,
            ),
            max_size=4,
        ),
        max_size=12,
    ),
    spaces=st.sampled_from(["", " ", "\n", " \r\n\t "]),
    read_size=st.integers(1, 40),
    rows=st.integers(1, 5),
)
def test_json_array_reads_any_array_of_objects_in_any_chunking(items, spaces, read_size, rows):
    old = readers._READ
    readers._READ = read_size
    try:
        data = ("[" + spaces + ("," + spaces).join(json.dumps(i) for i in items) + spaces + "]").encode()
        got = chunks(data, "json", rows=rows)
    finally:
        readers._READ = old
    assert [r for c in got for r in c.records] == items
    assert all(c.rows == rows for c in got[:-1]) and all(c.first_row == c.index * rows for c in got)


@pytest.mark.parametrize(
    "data, position, problem",
    [
        (b'[{"id": 1},\n {"id": 2}', "after item 2", "the file ends before the array's closing ]"),
        (b'[{"id": 1}\n {"id": 2}]', "after item 1 (line 2, column 2)", "expected , or ], found '{'"),
        (b'[{"id": 1}, 7]', "item 2 (line 1, column 13)", "a JSON int, not an object"),
        (b'[{"id": 1}] x', "line 1, column 13", "content after the array's closing ]"),
        (b'[{"id": 1}, {"id": ]', "item 2 (line 1, column 20)", "invalid JSON (Expecting value)"),
        (b'[{"id": 1}, {"id": "abc', "item 2 (line 1, column 20)", "invalid JSON (Unterminated string starting at)"),
        (b"true", "line 1, column 1", "expected a JSON array or objects, found 't'"),
    ],
)
@pytest.mark.parametrize("read_size", [3, 1 << 20])  # positions stay right across buffer refills
def test_malformed_json_array_names_file_position_and_problem(monkeypatch, data, position, problem, read_size):
    monkeypatch.setattr(readers, "_READ", read_size)
    with pytest.raises(InputError) as info:
        chunks(data, "json", name="in/x.json")
    assert (info.value.name, info.value.position, info.value.problem) == ("in/x.json", position, problem)


def test_json_array_is_streamed_not_loaded():
    """A reader that has given the first chunk of a large array has read about one buffer."""
    item = json.dumps({"id": "x" * 20, "pad": "y" * 200})
    data = ("[" + ",".join([item] * 40_000) + "]").encode()  # ~9 MB
    stream = io.BytesIO(data)
    reader = read_chunks(stream, "json", "big.json", 100)
    first = next(iter(reader))
    assert first.rows == 100
    assert stream.tell() <= 3 * readers._READ < len(data) / 2


# --- Parquet ------------------------------------------------------------------------------


def parquet_bytes(table: pa.Table, row_group_size: int) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_size)
    return buf.getvalue()


def test_parquet_chunks_are_regrouped_across_row_groups_and_keep_types():
    table = pa.table({"id": [f"r{i}" for i in range(23)], "n": pa.array(range(23), pa.int16())})
    got = chunks(parquet_bytes(table, 7), "parquet", rows=10)
    assert [(c.first_row, c.rows) for c in got] == [(0, 10), (10, 10), (20, 3)]
    assert got[1].table.schema == table.schema
    assert got[2].records == [{"id": "r20", "n": 20}, {"id": "r21", "n": 21}, {"id": "r22", "n": 22}]


def test_not_a_parquet_file_is_named():
    with pytest.raises(InputError, match=r"in/x.parquet: footer: not a Parquet file"):
        chunks(b"id,v\n1,2\n", "parquet", name="in/x.parquet")


# --- input files and partition keys ---------------------------------------------------------


@pytest.mark.parametrize(
    "key, expected",
    [
        ("enrichment/input/a.csv", "a.csv"),
        ("enrichment/input/2024/06/customers.ndjson.gz", "2024/06/customers.ndjson.gz"),
        ("enrichment/input/a,b c.json", "a%2Cb%20c.json"),
        ("enrichment/input/odd...name.parquet", "odd%2E%2E%2Ename.parquet"),
        ("enrichment/input/tab\tand\nnewline.jsonl", "tab%09and%0Anewline.jsonl"),
        ("enrichment/input/notes.txt", None),
        ("enrichment/input/.a.csv.partial", None),
        ("enrichment/input/.hidden.csv", None),
        ("elsewhere/a.csv", None),
    ],
)
def test_partition_keys_are_safe_stable_and_reversible(key, expected):
    got = partition_key(key, "enrichment/input/")
    assert got == expected
    if expected is not None:
        assert "," not in got and "..." not in got
        assert input_key(got, "enrichment/input") == key
        assert partition_key(key, "enrichment/input") == got  # the prefix's slash does not matter


@pytest.mark.parametrize("bad", ["../a.csv", "a/../../b.csv", "/a.csv", "a.txt", "a,b.csv"])
def test_partition_keys_that_are_not_ours_are_refused(bad):
    with pytest.raises(ValueError):
        check_partition_key(bad)


def test_formats_by_suffix():
    assert [file_format(n) for n in ("a.CSV", "a.csv.gz", "a.jsonl", "a.json", "a.parquet", "a.gz", ".csv")] == [
        "csv", "csv", "ndjson", "json", "parquet", None, None,
    ]

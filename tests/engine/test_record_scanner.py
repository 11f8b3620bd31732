"""The native scanner (record_scanner.c through record_scanner.py) called directly."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

import st_report_builder as rb
from engine.search_terms import record_scanner as scanner
from engine.search_terms.records import PARSED_SCHEMA


def rec(i: int = 0, **overrides) -> str:
    return rb.compact(rb.good_record(i, **overrides))


def scan(text: str | bytes, start: int = 0, expect_comma: bool = False, max_rows: int = 100) -> scanner.ScanResult:
    data = text.encode() if isinstance(text, str) else text
    return scanner.scan(pa.py_buffer(data), start, expect_comma, max_rows)


def test_library_builds_and_matches_the_struct():
    lib = scanner.library()
    assert lib.scanner_struct_size() == scanner.ctypes.sizeof(scanner._Scan)
    assert scanner.build_library().exists()


def test_whole_elements_then_end_of_range():
    text = "\n " + rec(0) + " ,\n" + rec(1) + "  "
    result = scan(text)
    assert (result.status, result.n_elements, result.consumed) == (scanner.CHUNK_END, 2, len(text))
    assert result.table.schema == PARSED_SCHEMA
    assert result.table.column("search_term").to_pylist() == ["term 0", "term 1"]
    assert result.rejects == []


def test_array_end():
    text = rec(0) + "\n]\n}"
    result = scan(text)
    assert (result.status, result.n_elements, result.consumed) == (scanner.ARRAY_END, 1, text.index("]") + 1)


def test_empty_array():
    result = scan("  ] , ")
    assert (result.status, result.n_elements, result.consumed) == (scanner.ARRAY_END, 0, 3)


def test_range_ending_inside_an_element_reports_the_last_whole_one():
    first, second = rec(0), rec(1)
    text = first + ",\n" + second + "," + rec(2)
    for cut in (len(first) + 1, len(first) + 3, len(first) + 40, len(first) + 2 + len(second) - 1):
        result = scan(text[:cut])
        assert (result.status, result.n_elements, result.consumed) == (scanner.INCOMPLETE, 1, len(first))
    cut = len(first) + 2 + len(second) + 5
    result = scan(text[:cut])
    assert (result.status, result.n_elements, result.consumed) == (scanner.INCOMPLETE, 2, len(first) + 2 + len(second))


def test_range_ending_inside_the_first_element():
    result = scan(rec(0)[:50])
    assert (result.status, result.n_elements, result.consumed) == (scanner.INCOMPLETE, 0, 0)
    assert result.table.num_rows == 0


@pytest.mark.parametrize(
    "tail",
    [b'"\\', b'"\\u12', b"tr", b"nul", b"fals", b"1.", b"1e", b"1e-", b"-", b'"\xc3', b'"\xf0\x9f\x98', b'"ab',
     b"[1,", b'{"k"', b'{"k":', b"[", b" "],
)
def test_range_cut_inside_a_token_is_incomplete_not_an_error(tail):
    data = (rec(0) + ',{"x":').encode() + tail
    result = scan(data)
    assert (result.status, result.n_elements, result.consumed) == (scanner.INCOMPLETE, 1, len(rec(0)))
    assert result.table.num_rows == 1


def test_a_number_at_the_very_end_may_go_on():
    text = rec(0) + ',{"x":12'
    assert scan(text).status == scanner.INCOMPLETE


def test_expect_comma():
    text = ",\n" + rec(5) + "," + rec(6)
    result = scan(text, expect_comma=True)
    assert (result.status, result.n_elements) == (scanner.CHUNK_END, 2)
    bad = scan(rec(5), expect_comma=True)
    assert (bad.status, bad.error_code, bad.error_pos) == (scanner.SYNTAX, 10, 0)
    assert scanner.SYNTAX_ERRORS[bad.error_code] == "expected ',' or a closing bracket"


def test_comma_then_end_of_range_is_incomplete():
    result = scan(rec(0) + " , ")
    assert (result.status, result.n_elements, result.consumed) == (scanner.INCOMPLETE, 1, len(rec(0)))


def test_comma_then_closing_bracket_is_an_error():
    text = rec(0) + ", ]"
    result = scan(text)
    assert (result.status, result.error_pos) == (scanner.SYNTAX, text.index("]"))
    assert scanner.SYNTAX_ERRORS[result.error_code] == "unexpected character"


def test_rows_full_then_continue():
    texts = [rec(i) for i in range(5)]
    data = pa.py_buffer(",".join(texts).encode())
    first = scanner.scan(data, 0, False, 2)
    assert (first.status, first.n_elements, first.consumed) == (scanner.ROWS_FULL, 2, len(texts[0]) + 1 + len(texts[1]))
    second = scanner.scan(data, first.consumed, True, 2)
    assert (second.status, second.n_elements) == (scanner.ROWS_FULL, 2)
    third = scanner.scan(data, second.consumed, True, 2)
    assert (third.status, third.n_elements, third.consumed) == (scanner.CHUNK_END, 1, data.size)
    terms = [r.table.column("search_term").to_pylist() for r in (first, second, third)]
    assert terms == [["term 0", "term 1"], ["term 2", "term 3"], ["term 4"]]


def test_syntax_error_position_counts_from_the_buffer_start():
    good = rec(0)
    text = good + "," + rec(1).replace("term 1", "te\x01rm")
    data = pa.py_buffer(text.encode())
    result = scanner.scan(data, len(good), True, 10)
    assert result.status == scanner.SYNTAX
    assert result.error_pos == text.index("\x01")
    assert scanner.SYNTAX_ERRORS[result.error_code] == "unescaped control character in a string"


def test_item_name_validity_bitmap_over_many_rows():
    names = [None if i % 3 == 0 or i in (9, 10, 17) else f"n{i}" for i in range(29)]
    texts = []
    for i, name in enumerate(names):
        record = rb.good_record(i, clickedItemName=name)
        if i % 6 == 0:
            del record["clickedItemName"]  # absent, as good as null
        texts.append(rb.compact(record))
    texts.insert(13, rec(99, searchTerm=5))  # a reject in between does not shift the bits
    result = scan(",".join(texts))
    assert result.table.column("clicked_item_name").to_pylist() == names
    assert result.table.column("clicked_item_name").null_count == names.count(None)
    assert [(r.element, r.reason, r.field) for r in result.rejects] == [(13, scanner.WRONG_TYPE, "searchTerm")]
    result.table.validate(full=True)


def test_lone_surrogate_leaves_no_bytes_behind():
    bad = rec(1).replace('"B000000001"', '"\\udc00"').replace('"term 1"', '"caf\\u00e9 \\ud83d\\ude00"')
    texts = [rec(0), bad, rec(2)]
    result = scan(",".join(texts))
    assert [(r.element, r.reason, r.field) for r in result.rejects] == [(1, scanner.LONE_SURROGATE, "clickedAsin")]
    table = result.table
    table.validate(full=True)
    assert table.column("department_name").to_pylist() == ["Amazon.com"] * 2
    assert table.column("search_term").to_pylist() == ["term 0", "term 2"]
    assert table.column("clicked_asin").to_pylist() == ["B000000000", "B000000002"]


def test_reject_byte_range_covers_the_element():
    bad = '{"a" : [1, {"b": "}"}] }'
    text = rec(0) + " ,  " + bad + "," + rec(2)
    result = scan(text)
    [reject] = result.rejects
    assert (reject.element, reject.reason, reject.field) == (1, scanner.MISSING, "departmentName")
    assert text[reject.start : reject.end] == bad


@pytest.mark.parametrize(
    "overrides, reason, field",
    [
        ({"searchFrequencyRank": 2**63 - 1}, None, None),
        ({"searchFrequencyRank": 2**63}, scanner.OUT_OF_RANGE, "searchFrequencyRank"),
        ({"searchFrequencyRank": 10**30}, scanner.OUT_OF_RANGE, "searchFrequencyRank"),
        ({"clickShareRank": -1}, scanner.OUT_OF_RANGE, "clickShareRank"),
        ({"clickShareRank": 1.5}, scanner.WRONG_TYPE, "clickShareRank"),
        ({"clickShare": 1.0000001}, scanner.OUT_OF_RANGE, "clickShare"),
        ({"clickShare": -1e-300}, scanner.OUT_OF_RANGE, "clickShare"),
        ({"clickShare": 1e-300}, None, None),
        ({"conversionShare": None}, scanner.MISSING, "conversionShare"),
        ({"departmentName": None, "searchTerm": 1}, scanner.MISSING, "departmentName"),  # the first field broken
        ({"searchTerm": 1, "clickShare": 9}, scanner.WRONG_TYPE, "searchTerm"),
    ],
)
def test_row_rules(overrides, reason, field):
    result = scan(rec(0, **overrides))
    if reason is None:
        assert result.rejects == [] and result.table.num_rows == 1
    else:
        assert [(r.reason, r.field) for r in result.rejects] == [(reason, field)]
        assert result.table.num_rows == 0


def test_rank_written_as_exponent_is_a_float():
    result = scan(rec(0).replace('"clickShareRank":1', '"clickShareRank":1E2'))
    assert [(r.reason, r.field) for r in result.rejects] == [(scanner.WRONG_TYPE, "clickShareRank")]


@pytest.mark.parametrize("depth, ok", [(500, True), (600, False)])
def test_nesting_limit(depth, ok):
    text = rec(0)[:-1] + ',"x":' + "[" * depth + "]" * depth + "}"
    json.loads(text)  # fine for json.loads either way
    result = scan(text)
    if ok:
        assert (result.status, result.table.num_rows) == (scanner.CHUNK_END, 1)
    else:
        assert result.status == scanner.SYNTAX
        assert scanner.SYNTAX_ERRORS[result.error_code] == "values nested too deeply"


def test_strings_with_every_escape():
    value = 'q"b\\s/ \b\f\n\r\t \x00\x1f é € 😀 \u2028'
    escaped = '"q\\"b\\\\s\\/ \\b\\f\\n\\r\\t \\u0000\\u001F \\u00e9 \\u20AC \\uD83D\\uDE00 \\u2028"'
    assert json.loads(escaped) == value
    result = scan(rec(0).replace('"term 0"', escaped))
    assert result.table.column("search_term").to_pylist() == [value]


def test_large_range_with_many_rows_and_long_strings():
    long = "x" * 100_000 + "é" * 1000
    texts = [rec(i, clickedItemName=long if i % 50 == 0 else None) for i in range(2000)]
    result = scan(",".join(texts), max_rows=5000)
    assert (result.status, result.n_elements, result.table.num_rows) == (scanner.CHUNK_END, 2000, 2000)
    names = result.table.column("clicked_item_name").to_pylist()
    assert names[0] == names[1950] == long and names[1] is None
    assert result.table.column("search_frequency_rank").to_pylist() == list(range(1, 2001))

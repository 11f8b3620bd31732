"""ReportReader on hand-made documents: bad documents, row rejects, the spec, gzip and
generated reports. Property tests are in test_report_reader_properties.py."""

from __future__ import annotations

import gzip
import io
import json
import zlib
from datetime import date

import pytest

import st_report_builder as rb
from engine.search_terms import sample_report
from engine.search_terms.records import DATA_KEY, REPORT_TYPE, SPEC_KEY
from engine.search_terms.report_reader import ReportError, ReportReader, parse_spec

NAME = "report.json"
# Settings that put range cuts everywhere, next to the defaults.
READ_SETTINGS = [
    pytest.param({}, id="defaults"),
    pytest.param({"chunk_bytes": 64, "workers": 1, "max_rows_per_scan": 1}, id="chunk64-w1-rows1"),
    pytest.param({"chunk_bytes": 333, "workers": 2, "max_rows_per_scan": 7}, id="chunk333-w2-rows7"),
    pytest.param({"chunk_bytes": 4096, "workers": 2, "max_rows_per_scan": 65536}, id="chunk4096-w2"),
]


def read_error(data: bytes | io.RawIOBase, name: str = NAME, **kwargs) -> ReportError:
    with pytest.raises(ReportError) as info:
        rb.read_all(data, name, **kwargs)
    error = info.value
    assert str(error).startswith(name)
    return error


def lines(n: int, **overrides) -> list[str]:
    return [rb.compact(rb.good_record(i, **overrides)) for i in range(n)]


@pytest.fixture(scope="module")
def big_report() -> bytes:
    """A generated report of about 290 KB: the array goes well past what the header reads ahead."""
    out = io.BytesIO()
    sample_report.write_report(out, rb.WEEK, terms=400, seed=7)
    return out.getvalue()


def nth_element(doc: bytes, i: int) -> int:
    """Offset of the i-th element in a sample_report document (one element per line)."""
    start = doc.index(b"[\n") + 2
    pos = start
    for _ in range(i):
        pos = doc.index(b",\n{", pos) + 2
    assert doc[pos : pos + 1] == b"{"
    return pos


# ------------------------------------------------------------------ valid documents


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="defaults"),
        pytest.param({"chunk_bytes": 4096, "workers": 1, "max_rows_per_scan": 100}, id="chunk4096-w1-rows100"),
        pytest.param({"chunk_bytes": 50_000, "workers": 2, "max_rows_per_scan": 777}, id="chunk50000-w2-rows777"),
    ],
)
def test_sample_report_equals_json_loads(kwargs):
    out = io.BytesIO()
    n_rows = sample_report.write_report(out, rb.WEEK, terms=3000, seed=11)
    doc = out.getvalue()
    expected = rb.expected_rows(json.loads(doc)[DATA_KEY])
    assert len(expected) == n_rows > 3000
    for data in (doc, rb.gzipped(doc)):
        result = rb.read_all(data, expected_week=rb.WEEK, **kwargs)
        assert rb.table_rows(result.table) == expected
        assert result.rejects == []
        assert result.stats.records == result.stats.rows == result.batch_records == n_rows
        assert result.stats.bytes_read == len(doc)  # counted after decompression
        spec = result.stats.spec
        assert (spec.report_type, spec.report_period, spec.week_start, spec.week_end, spec.marketplace_ids) == (
            REPORT_TYPE,
            "WEEK",
            date(2024, 1, 7),
            date(2024, 1, 13),
            ("ATVPDKIKX0DER",),
        )


def test_sample_report_rows_match_the_generator():
    out = io.BytesIO()
    sample_report.write_report(out, rb.WEEK, terms=200, seed=3)
    result = rb.read_all(out.getvalue(), chunk_bytes=1000)
    assert rb.table_rows(result.table) == rb.expected_rows(list(sample_report.records(rb.WEEK, 200, 3)))


def test_small_chunks_do_rescan_and_change_nothing(big_report):
    # Braces inside strings make ranges end inside records.
    doc = json.loads(big_report)
    for i, record in enumerate(doc[DATA_KEY]):
        record["clickedItemName"] = "}" * (i % 7) + record["clickedItemName"] + '"},{' * (i % 3)
    data = json.dumps(doc, indent=1).encode()
    expected = rb.expected_rows(doc[DATA_KEY])
    for workers in (1, 2):
        tiny = rb.read_all(data, chunk_bytes=64, workers=workers, max_rows_per_scan=3)
        assert tiny.stats.rescans > 100  # the cuts fell inside records
        assert rb.table_rows(tiny.table) == expected
    whole = rb.read_all(data, chunk_bytes=1 << 22)
    assert whole.stats.rescans == 0
    assert rb.table_rows(whole.table) == expected


def test_spec_after_the_array_and_unknown_members():
    doc = (
        '{"x":{"nested":[1,{"}":"]"}]},"' + DATA_KEY + '":[' + ",".join(lines(3)) + '],"y":"}]",'
        '"' + SPEC_KEY + '":' + rb.compact(rb.spec(extra={"a": [1, 2]})) + ',"z":[]}'
    ).encode()
    result = rb.read_all(doc, expected_week=rb.WEEK)
    assert result.table.column("search_term").to_pylist() == ["term 0", "term 1", "term 2"]
    assert result.stats.spec.week_start == rb.WEEK
    assert result.stats.extra_members == ["x", "y", "z"]


def test_escaped_top_level_keys_are_decoded():
    doc = rb.report_bytes(lines(2)).replace(b'"dataBy', b'"\\u0064ataBy', 1).replace(b'"reportS', b'"\\u0072eportS', 1)
    assert json.loads(doc)[DATA_KEY]
    result = rb.read_all(doc)
    assert result.stats.rows == 2 and result.stats.spec is not None


def test_empty_array_and_whitespace_everywhere():
    doc = ('\n\t{ "' + SPEC_KEY + '" :\r\n' + rb.compact(rb.spec()) + ' ,\n "' + DATA_KEY + '" : [ \n\t ] \n}\n\n').encode()
    result = rb.read_all(doc)
    assert result.table.num_rows == 0
    assert result.stats.records == 0 and result.stats.spec is not None


def test_utf8_byte_order_mark_is_allowed():
    doc = b"\xef\xbb\xbf" + rb.report_bytes(lines(1))
    assert rb.read_all(doc).stats.rows == 1


def test_concatenated_gzip_members():
    doc = rb.report_bytes(lines(50))
    data = rb.gzipped(doc[:1000]) + rb.gzipped(doc[1000:])
    result = rb.read_all(data, chunk_bytes=64)
    assert rb.table_rows(result.table) == rb.expected_rows(json.loads(doc)[DATA_KEY])


def test_batches_cover_every_element_once(big_report):
    reader = ReportReader(io.BytesIO(big_report), NAME, chunk_bytes=500, max_rows_per_scan=10)
    batches = list(reader)
    assert len(batches) > 10
    assert all(b.table.num_rows <= 10 for b in batches)
    assert sum(b.records for b in batches) == reader.stats.records == len(json.loads(big_report)[DATA_KEY])


# ------------------------------------------------------------------ truncated documents


def _truncations(doc: bytes):
    data_at = doc.index(b"[\n") + 2
    second = doc.index(b",\n{", data_at) + 2  # start of element 1
    return {
        "empty": (0, "truncated: the file ends where the report must be a JSON object"),
        "after-open-brace": (1, "truncated: the file ends inside the top-level object"),
        "after-spec-key-colon": (doc.index(b":") + 1, "truncated"),
        "inside-spec-after-comma": (doc.index(b'"reportOptions"') - 1, "truncated"),
        "after-spec": (doc.index(b',"' + DATA_KEY.encode()), "truncated"),
        "after-data-key": (data_at - 3, "truncated"),
        "after-data-colon": (data_at - 2, "truncated: the file ends where"),
        "after-open-bracket": (data_at, f"truncated: the file ends inside {DATA_KEY} after 0 records"),
        "inside-first-record": (data_at + 30, f"truncated: the file ends inside {DATA_KEY} after 0 records"),
        "inside-a-string": (doc.index(b"term 1") + 3, f"truncated: the file ends inside {DATA_KEY} after 1 records"),
        "inside-a-number": (doc.index(b"0.125", second) + 3, f"truncated: the file ends inside {DATA_KEY} after 1 records"),
        "after-a-record": (second - 2, f"truncated: the file ends inside {DATA_KEY} after 1 records"),
        "after-comma": (second, f"truncated: the file ends inside {DATA_KEY} after 1 records"),
        "after-close-bracket": (len(doc) - 2, "truncated: the file ends where expected ',' or '}' in the top-level object"),
    }


_DOC = rb.report_bytes(lines(3))


@pytest.mark.parametrize("case", list(_truncations(_DOC)))
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_truncated_document(case, compress):
    cut, problem = _truncations(_DOC)[case]
    data = _DOC[:cut]
    error = read_error(rb.gzipped(data) if compress else data, chunk_bytes=16)
    assert problem in error.problem
    assert error.byte_offset == cut  # the end of what the file holds
    if DATA_KEY in problem:
        records = int(problem.split(" after ")[1].split()[0])
        assert error.record == records
        assert str(error) == f"{NAME} at byte {cut}, record {records}: {problem}"


@pytest.mark.parametrize(
    "cut_after",
    [b'{"reportSpec', b'{"reportSpecification":{"reportType":"GET_BRAND', b'"dataBy'],
    ids=["in-top-level-key", "in-spec-string", "in-data-key"],
)
def test_truncated_inside_a_header_string(cut_after):
    cut = _DOC.index(cut_after) + len(cut_after)
    error = read_error(_DOC[:cut])
    assert "truncated" in error.problem
    assert error.byte_offset == cut


@pytest.mark.parametrize("kwargs", READ_SETTINGS)
def test_truncated_deep_in_a_large_report(big_report, kwargs):
    n = len(json.loads(big_report)[DATA_KEY])
    for i in (n // 2, n - 3):
        at = nth_element(big_report, i)
        for cut in (at - 2, at + 5, big_report.index(b'"clickedItemName":"', at) + 25):
            error = read_error(big_report[:cut], **kwargs)
            # elements 0..i-1 are whole in every case, element i never is
            assert str(error) == (
                f"{NAME} at byte {cut}, record {i}: truncated: the file ends inside {DATA_KEY} after {i} records"
            )


# ------------------------------------------------------------------ invalid JSON in the array


def _bad(doc: bytes, at: int, old: bytes, new: bytes) -> tuple[bytes, int]:
    """Replace `old` (found from `at`) by `new`; return the document and where `old` was."""
    pos = doc.index(old, at)
    return doc[:pos] + new + doc[pos + len(old) :], pos


# (name, how to break record i, offset of the bad byte from where `old` was, problem)
_ARRAY_ERRORS = {
    "missing-comma": (b",\n{", b"\n{", 1, "expected ',' or a closing bracket"),
    "missing-comma-in-record": (b',"searchTerm"', b' "searchTerm"', 1, "expected ',' or a closing bracket"),
    "bad-escape": (b'"searchTerm":"', b'"searchTerm":"ab\\x', 16, "invalid escape sequence in a string"),
    "bad-unicode-escape": (b'"searchTerm":"', b'"searchTerm":"\\u12G4', 14, "invalid escape sequence in a string"),
    "invalid-utf8": (b'"searchTerm":"', b'"searchTerm":"ok\xff', 16, "invalid UTF-8 in a string"),
    "overlong-utf8": (b'"searchTerm":"', b'"searchTerm":"\xc0\xaf', 14, "invalid UTF-8 in a string"),
    "utf8-surrogate": (b'"searchTerm":"', b'"searchTerm":"\xed\xa0\x80', 14, "invalid UTF-8 in a string"),
    "cut-utf8-sequence": (b'"searchTerm":"', b'"searchTerm":"\xe2\x82', 14, "invalid UTF-8 in a string"),
    "control-char": (b'"searchTerm":"', b'"searchTerm":"tab\there', 17, "unescaped control character in a string"),
    "raw-newline": (b'"searchTerm":"', b'"searchTerm":"\n', 14, "unescaped control character in a string"),
    "leading-zero": (b'"clickShareRank":', b'"clickShareRank":01', 18, "expected ',' or a closing bracket"),
    "bare-fraction": (b'"clickShare":', b'"clickShare":.5', 13, "unexpected character"),
    "dot-no-digit": (b'"clickShare":', b'"clickShare":1.e5', 15, "invalid number"),
    "minus-alone": (b'"clickShare":', b'"clickShare":-x', 14, "invalid number"),
    "nan": (b'"clickShare":', b'"clickShare":NaN', 13, "unexpected character"),
    "bad-literal": (b'"clickedItemName":', b'"clickedItemName":nul', 18, "invalid literal (expected true, false or null)"),
    "unquoted-key": (b'"searchTerm"', b"searchTerm", 0, "expected a quoted key"),
    "missing-colon": (b'"searchTerm":', b'"searchTerm" ', 13, "expected ':' after a key"),
    "single-quotes": (b'"searchTerm":"', b"\"searchTerm\":'x',\"a\":\"", 13, "unexpected character"),
}


@pytest.mark.parametrize("case", list(_ARRAY_ERRORS))
@pytest.mark.parametrize("kwargs", READ_SETTINGS)
def test_invalid_json_in_the_array_points_at_the_bad_byte(big_report, case, kwargs):
    old, new, delta, problem = _ARRAY_ERRORS[case]
    n = len(json.loads(big_report)[DATA_KEY])
    i = n - 40  # far enough that the header's read-ahead does not hold it
    at = nth_element(big_report, i)
    assert at > 140_000 or at > len(big_report) - 20_000
    data, pos = _bad(big_report, at - 2 if old.startswith(b",") else at, old, new)
    if case != "utf8-surrogate":  # json.loads reads bytes with surrogatepass and takes that one
        with pytest.raises(ValueError):
            json.loads(data)
    error = read_error(data, **kwargs)
    assert error.byte_offset == pos + delta, (data[pos : pos + 30], data[error.byte_offset - 5 : error.byte_offset + 5])
    assert error.record == i
    assert str(error) == f"{NAME} at byte {pos + delta}, record {i}: invalid JSON in {DATA_KEY}: {problem}"


@pytest.mark.parametrize("kwargs", READ_SETTINGS)
def test_trailing_comma_in_the_array(kwargs):
    doc = rb.report_bytes(lines(5)).replace(b"\n]", b",\n]")
    pos = doc.index(b"\n]") + 1
    error = read_error(doc, **kwargs)
    assert str(error) == f"{NAME} at byte {pos}, record 5: invalid JSON in {DATA_KEY}: unexpected character"


def test_invalid_json_in_a_gzip_report_uses_decompressed_offsets(big_report):
    at = nth_element(big_report, 300)
    data, pos = _bad(big_report, at, b'"searchTerm":"', b'"searchTerm":"\\q')
    error = read_error(rb.gzipped(data), chunk_bytes=1000)
    assert (error.byte_offset, error.record) == (pos + 14, 300)
    assert "invalid escape sequence" in error.problem


def test_invalid_utf8_near_the_start_is_reported_at_its_byte():
    # Within the header's read-ahead, so the top-level decoder may be the one to see it.
    doc = rb.report_bytes(lines(3))
    pos = doc.index(b"term 1")
    data = doc[:pos] + b"\xff" + doc[pos + 1 :]
    for kwargs in ({}, {"chunk_bytes": 64, "workers": 1}):
        error = read_error(data, **kwargs)
        assert error.byte_offset == pos
        assert "invalid UTF-8" in error.problem


def test_invalid_json_inside_an_unknown_member_of_a_record():
    doc = rb.report_bytes([rb.compact(rb.good_record(0)), '{"x":{"a":[1,2}]}}'])
    pos = doc.index(b"2}") + 1
    error = read_error(doc)
    assert str(error) == f"{NAME} at byte {pos}, record 1: invalid JSON in {DATA_KEY}: expected ',' or a closing bracket"


def test_nesting_too_deep_is_an_error_not_a_crash():
    deep = '{"x":' + "[" * 600 + "]" * 600 + "}"
    error = read_error(rb.report_bytes([deep]))
    assert "values nested too deeply" in error.problem
    assert error.record == 0


# ------------------------------------------------------------------ the top level and the spec


def test_trailing_garbage_after_the_object():
    doc = rb.report_bytes(lines(2))
    for garbage in (b"x", b"  {}", b"\n]", b"\x00"):
        data = doc + garbage
        pos = len(doc) + len(garbage) - len(garbage.lstrip(b" \n"))
        error = read_error(data, chunk_bytes=64)
        assert str(error) == f"{NAME} at byte {pos}: unexpected data after the end of the report"


def test_trailing_garbage_after_a_gzip_stream():
    error = read_error(rb.gzipped(rb.report_bytes(lines(2))) + b"garbage")
    assert "corrupt gzip stream" in error.problem


def test_not_an_object():
    error = read_error(b'  ["a"]')
    assert str(error) == f"{NAME} at byte 2: invalid JSON: the report must be a JSON object, found b'[\"a\"]'"


def test_missing_report_specification():
    doc = ('{"' + DATA_KEY + '":[' + ",".join(lines(2)) + "]}").encode()
    error = read_error(doc)
    assert str(error) == f"{NAME}: the report has no {SPEC_KEY}"


def test_missing_data_array():
    doc = ('{"' + SPEC_KEY + '":' + rb.compact(rb.spec()) + ',"other":[]}').encode()
    error = read_error(doc)
    assert str(error) == f"{NAME}: the report has no {DATA_KEY} array"


def test_data_is_not_an_array():
    doc = ('{"' + SPEC_KEY + '":' + rb.compact(rb.spec()) + ',"' + DATA_KEY + '":{"a":1}}').encode()
    error = read_error(doc)
    assert f"{DATA_KEY} must be an array" in error.problem
    assert error.byte_offset == doc.index(b'{"a"')


def test_data_array_twice():
    doc = ('{"' + SPEC_KEY + '":' + rb.compact(rb.spec()) + ',"' + DATA_KEY + '":[],"' + DATA_KEY + '":[]}').encode()
    assert "appears twice" in read_error(doc).problem


def test_invalid_json_in_the_header():
    doc = ('{"' + SPEC_KEY + '":{"reportType":"x",},"' + DATA_KEY + '":[]}').encode()
    error = read_error(doc)
    assert error.problem.startswith("invalid JSON")
    assert error.byte_offset == doc.index(b",}") + 1


def test_missing_comma_between_top_level_members():
    doc = ('{"' + SPEC_KEY + '":' + rb.compact(rb.spec()) + ' "' + DATA_KEY + '":[]}').encode()
    error = read_error(doc)
    assert "expected ',' or '}' in the top-level object" in error.problem
    assert error.byte_offset == doc.index(b' "' + DATA_KEY.encode()) + 1


def _spec_error(spec_value, *, expected_week=None, spec_first=True):
    doc = rb.report_bytes(lines(2), spec_value, spec_first=spec_first)
    error = read_error(doc, expected_week=expected_week)
    assert error.byte_offset == doc.index(b":", doc.index(SPEC_KEY.encode())) + 1
    assert error.problem.startswith(f"{SPEC_KEY}: ")
    return error


def test_wrong_report_type():
    error = _spec_error(rb.spec(reportType="GET_BRAND_ANALYTICS_MARKET_BASKET_REPORT"))
    assert str(error) == (
        f"{NAME} at byte {error.byte_offset}: {SPEC_KEY}: wrong report type "
        f"'GET_BRAND_ANALYTICS_MARKET_BASKET_REPORT', expected '{REPORT_TYPE}'"
    )


def test_wrong_report_type_after_the_array():
    error = _spec_error(rb.spec(reportType=None), spec_first=False)
    assert "wrong report type None" in error.problem


@pytest.mark.parametrize("options", [{"reportPeriod": "DAY"}, {}, None, {"reportPeriod": "week"}, "WEEK"])
def test_wrong_report_period(options):
    error = _spec_error(rb.spec(reportOptions=options))
    period = options.get("reportPeriod") if isinstance(options, dict) else None
    assert error.problem == f"{SPEC_KEY}: wrong report period {period!r}, expected 'WEEK' (weekly reports only)"


def test_week_not_the_expected_one():
    error = _spec_error(rb.spec(), expected_week=date(2024, 1, 14))
    assert error.problem == (
        f"{SPEC_KEY}: the report covers the week of 2024-01-07, but the partition is the week of 2024-01-14"
    )


def test_expected_week_matching_is_fine():
    assert rb.read_all(rb.report_bytes(lines(1)), expected_week=date(2024, 1, 7)).stats.rows == 1


def test_week_not_starting_on_sunday():
    error = _spec_error(rb.spec(dataStartTime="2024-01-08", dataEndTime="2024-01-14"))
    assert error.problem == f"{SPEC_KEY}: 2024-01-08..2024-01-14 is not a Sunday-to-Saturday week"


def test_week_not_seven_days():
    error = _spec_error(rb.spec(dataEndTime="2024-01-20"))
    assert "2024-01-07..2024-01-20 is not a Sunday-to-Saturday week" in error.problem


@pytest.mark.parametrize("start", ["last week", None, "2024-13-01", ""])
def test_dates_not_iso(start):
    error = _spec_error(rb.spec(dataStartTime=start))
    assert "are not ISO dates" in error.problem and repr(start) in error.problem


@pytest.mark.parametrize("ids", [[], None, "ATVPDKIKX0DER", [1]])
def test_bad_marketplace_ids(ids):
    error = _spec_error(rb.spec(marketplaceIds=ids))
    assert f"marketplaceIds {ids!r} is not a non-empty list of strings" in error.problem


def test_spec_not_an_object():
    assert _spec_error(["x"]).problem == f"{SPEC_KEY}: expected an object"


def test_spec_error_comes_before_any_batch_when_the_spec_comes_first():
    doc = rb.report_bytes(lines(2), rb.spec(reportType="x"))
    reader = iter(ReportReader(io.BytesIO(doc), NAME))
    with pytest.raises(ReportError, match="wrong report type"):
        next(reader)


def test_parse_spec_accepts_datetimes_and_several_marketplaces():
    spec = parse_spec(
        NAME,
        rb.spec(dataStartTime="2024-01-07T00:00:00Z", dataEndTime="2024-01-13T23:59:59Z", marketplaceIds=["A", "B"]),
        0,
        date(2024, 1, 7),
    )
    assert (spec.week_start, spec.week_end, spec.marketplace_id) == (date(2024, 1, 7), date(2024, 1, 13), "A,B")


# ------------------------------------------------------------------ gzip


@pytest.fixture(scope="module")
def gzip_report(big_report) -> bytes:
    return rb.gzipped(big_report)


def test_corrupt_gzip_stream(big_report, gzip_report):
    """Bytes flipped in the middle of the deflate data mostly inflate to wrong bytes, which the
    JSON checks catch (the CRC would at the end): no flip may go unnoticed."""
    for k in range(10):
        pos = len(gzip_report) // 4 + k * len(gzip_report) // 20
        data = bytearray(gzip_report)
        data[pos : pos + 4] = bytes(b ^ 0x5A for b in data[pos : pos + 4])
        error = read_error(bytes(data), chunk_bytes=4096)
        assert error.byte_offset is not None and 0 <= error.byte_offset <= len(big_report)
        assert error.problem.startswith(
            ("corrupt gzip stream: ", "invalid JSON", "invalid UTF-8", "truncated", "unexpected data after")
        ), error.problem


def _gzip_with_bad_block_in_the_middle(doc: bytes, at: int) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    head = compressor.compress(doc[:at]) + compressor.flush(zlib.Z_FULL_FLUSH)  # ends on a block boundary
    tail = compressor.compress(doc[at:]) + compressor.flush()
    assert gzip.decompress(head + tail) == doc
    broken = bytearray(tail)
    broken[0] = (broken[0] & ~0x07) | 0x06  # BFINAL 0, BTYPE 11: a block type that does not exist
    return head + bytes(broken)


@pytest.mark.parametrize("chunk_bytes", [4096, 65536])
def test_gzip_damage_found_by_zlib_in_the_middle(big_report, chunk_bytes):
    at = len(big_report) // 2
    error = read_error(_gzip_with_bad_block_in_the_middle(big_report, at), chunk_bytes=chunk_bytes)
    assert error.problem == "corrupt gzip stream: Error -3 while decompressing data: invalid block type"
    # an offset in the decompressed stream, no later than the damage and within one read of it
    assert at - chunk_bytes <= error.byte_offset <= at
    assert str(error).startswith(f"{NAME} at byte {error.byte_offset}: corrupt gzip stream")


def test_gzip_with_a_bad_checksum(big_report, gzip_report):
    data = bytearray(gzip_report)
    data[-6] ^= 0xFF  # in the CRC-32 of the trailer: every byte inflates, the check fails
    error = read_error(bytes(data))
    assert error.problem == "corrupt gzip stream: Error -3 while decompressing data: incorrect data check"


@pytest.mark.parametrize("cut", [3, 10, 0.5, -9, -1])
def test_truncated_gzip_stream(big_report, gzip_report, cut):
    n = cut if isinstance(cut, int) and cut > 0 else int(len(gzip_report) * cut) if isinstance(cut, float) else len(gzip_report) + cut
    error = read_error(gzip_report[:n], chunk_bytes=4096)
    assert error.problem == "corrupt gzip stream: the compressed data ends before the end-of-stream marker"
    assert 0 <= error.byte_offset <= len(big_report)


def test_short_reads_of_a_plain_stream(big_report):
    result = rb.read_all(rb.ShortReads(big_report, 1, 13, 2, 7000), chunk_bytes=700)
    assert rb.table_rows(result.table) == rb.expected_rows(json.loads(big_report)[DATA_KEY])
    small = rb.report_bytes(lines(20))
    result = rb.read_all(rb.ShortReads(small, 1), chunk_bytes=64)
    assert rb.table_rows(result.table) == rb.expected_rows(json.loads(small)[DATA_KEY])


def test_short_reads_of_a_gzip_stream_of_two_bytes_or_more(big_report, gzip_report):
    result = rb.read_all(rb.ShortReads(gzip_report, 2, 1, 5, 3000), chunk_bytes=700)
    assert result.stats.rows == len(json.loads(big_report)[DATA_KEY])


def test_short_reads_of_a_gzip_stream_one_byte_at_a_time(big_report, gzip_report):
    result = rb.read_all(rb.ShortReads(gzip_report, 1, 5000), chunk_bytes=700)
    assert result.stats.rows == len(json.loads(big_report)[DATA_KEY])


# ------------------------------------------------------------------ row-level rejects


def _with_bad(bad_text: str, n_before: int = 2, n_after: int = 2, **kwargs):
    texts = lines(n_before) + [bad_text] + [rb.compact(rb.good_record(n_before + 1 + i)) for i in range(n_after)]
    doc = rb.report_bytes(texts)
    result = rb.read_all(doc, **kwargs)
    assert result.stats.records == n_before + 1 + n_after == result.batch_records
    return doc, result


_REJECTS = {
    "missing-department": (rb.good_record(9, departmentName=None), "departmentName", "missing required field departmentName"),
    "missing-term": ({k: v for k, v in rb.good_record(9).items() if k != "searchTerm"}, "searchTerm", "missing required field searchTerm"),
    "missing-asin": ({k: v for k, v in rb.good_record(9).items() if k != "clickedAsin"}, "clickedAsin", "missing required field clickedAsin"),
    "missing-rank": ({k: v for k, v in rb.good_record(9).items() if k != "clickShareRank"}, "clickShareRank", "missing required field clickShareRank"),
    "missing-share": ({k: v for k, v in rb.good_record(9).items() if k != "conversionShare"}, "conversionShare", "missing required field conversionShare"),
    "null-share": (rb.good_record(9, clickShare=None), "clickShare", "missing required field clickShare"),
    "empty-object": ({}, "departmentName", "missing required field departmentName"),
    "term-number": (rb.good_record(9, searchTerm=5), "searchTerm", "searchTerm must be a string, got int 5"),
    "asin-list": (rb.good_record(9, clickedAsin=["B0"]), "clickedAsin", "clickedAsin must be a string, got list ['B0']"),
    "department-object": (rb.good_record(9, departmentName={"a": 1}), "departmentName", "departmentName must be a string, got dict {'a': 1}"),
    "item-name-number": (rb.good_record(9, clickedItemName=7), "clickedItemName", "clickedItemName must be a string or null, got int 7"),
    "item-name-false": (rb.good_record(9, clickedItemName=False), "clickedItemName", "clickedItemName must be a string or null, got bool False"),
    "rank-float": (rb.good_record(9, searchFrequencyRank=1.0), "searchFrequencyRank", "searchFrequencyRank must be an integer, got float 1.0"),
    "rank-true": (rb.good_record(9, searchFrequencyRank=True), "searchFrequencyRank", "searchFrequencyRank must be an integer, got bool True"),
    "rank-string": (rb.good_record(9, clickShareRank="1"), "clickShareRank", "clickShareRank must be an integer, got str '1'"),
    "rank-zero": (rb.good_record(9, searchFrequencyRank=0), "searchFrequencyRank", "searchFrequencyRank 0 must be an integer of at least 1"),
    "rank-negative": (rb.good_record(9, clickShareRank=-3), "clickShareRank", "clickShareRank -3 must be an integer of at least 1"),
    "rank-beyond-int64": (rb.good_record(9, clickShareRank=2**63), "clickShareRank", f"clickShareRank {2**63} must be an integer of at least 1"),
    "share-above-1": (rb.good_record(9, clickShare=1.5), "clickShare", "clickShare 1.5 is outside 0–1"),
    "share-int-2": (rb.good_record(9, conversionShare=2), "conversionShare", "conversionShare 2 is outside 0–1"),
    "share-negative": (rb.good_record(9, conversionShare=-0.001), "conversionShare", "conversionShare -0.001 is outside 0–1"),
    "share-huge": (rb.good_record(9, clickShare=1e308), "clickShare", "clickShare 1e+308 is outside 0–1"),
    "share-string": (rb.good_record(9, clickShare="0.5"), "clickShare", "clickShare must be a number, got str '0.5'"),
    "share-true": (rb.good_record(9, clickShare=True), "clickShare", "clickShare must be a number, got bool True"),
}


@pytest.mark.parametrize("case", list(_REJECTS))
def test_row_rule_rejects_one_record(case):
    record, field, reason = _REJECTS[case]
    text = rb.compact(record)
    doc, result = _with_bad(text)
    assert len(result.rejects) == 1
    reject = result.rejects[0]
    assert (reject.record_index, reject.field, reject.reason) == (2, field, reason)
    assert reject.record == text
    assert reject.byte_offset == doc.index(text.encode())
    assert result.table.column("search_term").to_pylist() == ["term 0", "term 1", "term 3", "term 4"]
    assert (result.stats.rows, result.stats.rejects) == (4, 1)
    assert reject.as_json() == {
        "record_index": 2,
        "byte_offset": reject.byte_offset,
        "field": field,
        "reason": reason,
        "record": text,
    }


@pytest.mark.parametrize("element", ["5", '"a string"', "[1,2]", '[{"departmentName":"x"}]', "null", "true", "[]"])
def test_element_not_an_object(element):
    doc, result = _with_bad(element)
    [reject] = result.rejects
    assert (reject.record_index, reject.field, reject.reason, reject.record) == (
        2,
        None,
        "the element is not a JSON object",
        element,
    )
    assert reject.byte_offset == doc.index(b"\n" + element.encode() + b",") + 1
    assert result.stats.rows == 4


@pytest.mark.parametrize(
    "escaped, field",
    [
        ('"searchTerm":"\\ud800"', "searchTerm"),
        ('"searchTerm":"a\\uDC00b"', "searchTerm"),
        ('"departmentName":"\\ud83d\\u0041"', "departmentName"),
        ('"clickedAsin":"\\ude00\\ud83d"', "clickedAsin"),
        ('"clickedItemName":"x\\ud83d"', "clickedItemName"),
        ('"clickedItemName":"\\ud83d\\ud83d\\ude00"', "clickedItemName"),
    ],
)
def test_lone_surrogate_escape_is_rejected(escaped, field):
    base = rb.compact(rb.good_record(9))
    key = escaped.split(":")[0]
    start = base.index(key)
    end = base.index('",', start) + 1
    text = base[:start] + escaped + base[end:]
    assert json.loads(text)[field]  # valid JSON: a string holding a lone surrogate
    doc, result = _with_bad(text)
    [reject] = result.rejects
    assert (reject.record_index, reject.field) == (2, field)
    assert reject.reason == f"{field} holds a lone UTF-16 surrogate escape, which is not text"
    assert reject.record == text
    assert result.table.column("search_term").to_pylist() == ["term 0", "term 1", "term 3", "term 4"]
    # the good rows around it keep their strings intact
    assert result.table.column("clicked_item_name").to_pylist() == ["item 0", "item 1", "item 3", "item 4"]


def test_surrogate_pair_escape_is_text():
    text = rb.compact(rb.good_record(9)).replace('"term 9"', '"\\ud83d\\ude00 \\uD834\\uDD1E"')
    doc, result = _with_bad(text)
    assert result.rejects == []
    assert result.table.column("search_term").to_pylist()[2] == "😀 𝄞"


def test_a_lone_surrogate_in_an_unknown_key_is_ignored():
    text = rb.compact(rb.good_record(9, note="x")).replace('"x"', '"\\ud800"')
    _, result = _with_bad(text)
    assert result.rejects == [] and result.stats.rows == 5


def test_several_rejects_keep_their_indexes():
    texts = [
        rb.compact(rb.good_record(0)),
        "7",
        rb.compact(rb.good_record(2, clickShare=3)),
        rb.compact(rb.good_record(3)),
        rb.compact(rb.good_record(4, searchTerm=None)),
        rb.compact(rb.good_record(5)),
    ]
    doc = rb.report_bytes(texts)
    result = rb.read_all(doc)
    assert [(r.record_index, r.field) for r in result.rejects] == [(1, None), (2, "clickShare"), (4, "searchTerm")]
    assert [r.byte_offset for r in result.rejects] == [doc.index(t.encode()) for t in (texts[1] + ",", texts[2], texts[4])]
    assert result.table.column("search_term").to_pylist() == ["term 0", "term 3", "term 5"]


@pytest.mark.parametrize(
    "kwargs",
    READ_SETTINGS + [pytest.param({"chunk_bytes": 100, "workers": 2, "max_rows_per_scan": 65536}, id="chunk100-w2")],
)
def test_reject_indexes_with_range_cuts(big_report, kwargs):
    doc = json.loads(big_report)
    records = doc[DATA_KEY]
    bad = {5, 6, 77, len(records) - 1}
    for i in bad:
        records[i]["clickShare"] = 7
    data = json.dumps(doc).encode()
    result = rb.read_all(data, **kwargs)
    assert sorted((r.record_index, r.field) for r in result.rejects) == [(i, "clickShare") for i in sorted(bad)]
    assert result.stats.rows == len(records) - len(bad)
    assert result.table.column("search_frequency_rank").to_pylist() == [
        r["searchFrequencyRank"] for i, r in enumerate(records) if i not in bad
    ]
    for r in result.rejects:
        assert r.reason == "clickShare 7 is outside 0–1"
        assert json.loads(r.record) == records[r.record_index]
        assert data[r.byte_offset : r.byte_offset + len(r.record)].decode() == r.record


def test_reject_offset_and_text_with_several_scans_per_range():
    texts = lines(3) + [rb.compact(rb.good_record(3, clickShare=2))] + lines(1)
    doc = rb.report_bytes(texts)
    [reject] = rb.read_all(doc, max_rows_per_scan=2).rejects
    assert reject.record_index == 3
    assert reject.reason == "clickShare 2 is outside 0–1"
    assert reject.byte_offset == doc.index(texts[3].encode())
    assert reject.record == texts[3]


def test_reject_offset_and_text_with_one_scan_per_range():
    texts = lines(3) + [rb.compact(rb.good_record(3, clickShare=2))] + lines(1)
    doc = rb.report_bytes(texts)
    [reject] = rb.read_all(doc, max_rows_per_scan=100).rejects
    assert (reject.record_index, reject.byte_offset, reject.record) == (3, doc.index(texts[3].encode()), texts[3])


# ------------------------------------------------------------------ valid edge cases of rows


def test_null_and_absent_item_name_are_valid_rows():
    absent = {k: v for k, v in rb.good_record(1).items() if k != "clickedItemName"}
    doc = rb.report_bytes([rb.compact(rb.good_record(0, clickedItemName=None)), rb.compact(absent), rb.compact(rb.good_record(2))])
    result = rb.read_all(doc)
    assert result.rejects == []
    names = result.table.column("clicked_item_name")
    assert names.to_pylist() == [None, None, "item 2"]
    assert names.null_count == 2


def test_integer_shares_zero_and_one_are_accepted_as_floats():
    doc = rb.report_bytes([rb.compact(rb.good_record(0, clickShare=0, conversionShare=1))])
    result = rb.read_all(doc)
    assert result.rejects == []
    assert result.table.column("click_share").to_pylist() == [0.0]
    assert result.table.column("conversion_share").to_pylist() == [1.0]
    assert rb.table_rows(result.table) == rb.expected_rows(json.loads(doc)[DATA_KEY])


def test_share_edge_spellings():
    spellings = ["0.0", "1.0", "1e0", "10E-1", "0.5", "5e-1", "0.50", "-0.0", "1e-400", "1.0000000000000000000001"]
    texts = [
        rb.compact(rb.good_record(i)).replace('"clickShare":0.25', f'"clickShare":{s}') for i, s in enumerate(spellings)
    ]
    doc = rb.report_bytes(texts)
    result = rb.read_all(doc)
    assert result.rejects == []
    assert rb.table_rows(result.table) == rb.expected_rows(json.loads(doc)[DATA_KEY])


def test_share_written_as_minus_zero_integer():
    doc = rb.report_bytes([rb.compact(rb.good_record(0)).replace('"clickShare":0.25', '"clickShare":-0')])
    result = rb.read_all(doc)
    assert result.rejects == []
    assert rb.table_rows(result.table) == rb.expected_rows(json.loads(doc)[DATA_KEY])


def test_largest_rank_is_accepted():
    doc = rb.report_bytes([rb.compact(rb.good_record(0, searchFrequencyRank=2**63 - 1))])
    assert rb.read_all(doc).table.column("search_frequency_rank").to_pylist() == [2**63 - 1]


@pytest.mark.parametrize(
    "text, expected",
    [
        # the last value wins, as in json.loads, whatever the earlier one was
        ('"clickShare":0.9,"clickShare":0.1', 0.1),
        ('"clickShare":"bad","clickShare":0.1', 0.1),
        ('"clickShare":7,"clickShare":0.3', 0.3),
        ('"clickShare":{"a":[1]},"clickShare":0.2', 0.2),
    ],
)
def test_repeated_key_takes_the_last_value(text, expected):
    record = rb.compact(rb.good_record(0)).replace('"clickShare":0.25', text)
    assert json.loads(record)["clickShare"] == expected
    result = rb.read_all(rb.report_bytes([record]))
    assert result.rejects == []
    assert result.table.column("click_share").to_pylist() == [expected]


def test_repeated_key_with_a_bad_last_value_is_rejected():
    record = rb.compact(rb.good_record(0)).replace('"clickShare":0.25', '"clickShare":0.25,"clickShare":2')
    [reject] = rb.read_all(rb.report_bytes([record])).rejects
    assert reject.reason == "clickShare 2 is outside 0–1"


def test_repeated_string_key_takes_the_last_value():
    record = rb.compact(rb.good_record(0)).replace('"searchTerm":"term 0"', '"searchTerm":"first","searchTerm":"l\\u0061st"')
    result = rb.read_all(rb.report_bytes([record]))
    assert result.table.column("search_term").to_pylist() == ["last"]


def test_repeated_null_item_name_after_a_string():
    record = rb.compact(rb.good_record(0)).replace('"clickedItemName":"item 0"', '"clickedItemName":"x","clickedItemName":null')
    result = rb.read_all(rb.report_bytes([record]))
    assert result.table.column("clicked_item_name").to_pylist() == [None]


def test_field_names_with_short_escapes_are_recognised():
    record = rb.compact(rb.good_record(0)).replace('"searchTerm"', '"search\\u0054erm"').replace('"clickShare"', '"\\u0063lickShare"')
    result = rb.read_all(rb.report_bytes([record]))
    assert result.rejects == []
    assert result.table.column("search_term").to_pylist() == ["term 0"]


def test_keys_that_only_look_like_field_names_are_unknown():
    record = rb.compact(rb.good_record(0, searchterm=1, clickShareX=5, clickShar=9, conversionSharf=3))
    result = rb.read_all(rb.report_bytes([record]))
    assert result.rejects == [] and result.table.column("click_share").to_pylist() == [0.25]


def test_field_name_with_long_escape_is_recognised():
    escaped = "".join(f"\\u{ord(c):04x}" for c in "departmentName")
    record = rb.compact(rb.good_record(0)).replace('"departmentName"', f'"{escaped}"')
    assert json.loads(record)["departmentName"] == "Amazon.com"
    result = rb.read_all(rb.report_bytes([record]))
    assert result.rejects == []
    assert result.table.column("department_name").to_pylist() == ["Amazon.com"]


def test_report_error_attributes():
    error = ReportError("f.json", "boom", 12, 3)
    assert (str(error), error.name, error.problem, error.byte_offset, error.record) == ("f.json at byte 12, record 3: boom", "f.json", "boom", 12, 3)
    assert str(ReportError("f.json", "boom")) == "f.json: boom"
    assert isinstance(error, ValueError)

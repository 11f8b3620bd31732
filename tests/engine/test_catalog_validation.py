"""Columns and validation (issue 5, items 2 and 3): header aliases, every reject reason, the
rejects file, SKUs repeated in a file, the reject limit."""

import contextlib
import csv
import io
import tempfile
from decimal import Decimal

import numpy as np

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.catalog.columns import ALIASES, HeaderError, match_headers, normalize_header
from engine.catalog.repeated_skus import Superseded, SkuTracker, sku_hashes
from engine.catalog.validated_file import ReadOptions, validate_upload
from engine.catalog.validate import _may_need_trim
from engine.catalog.validated_rows import read_validated_rows


def as_tuples(superseded: Superseded) -> list[tuple[int, str, int]]:
    """(row, sku, kept row) of each superseded row, as the rejects file lists them."""
    return [t for chunk in superseded.chunks() for t in chunk]


def find_superseded(skus: list[pa.Array], rows: list[pa.Array]) -> list[tuple[int, str, int]]:
    with SkuTracker() as tracker:
        for s, r in zip(skus, rows):
            tracker.add(s, r)
        return as_tuples(tracker.superseded())


@contextlib.contextmanager
def _kept(outputs: dict):
    validated, rejects = io.BytesIO(), io.BytesIO()
    yield validated, rejects
    outputs["validated"], outputs["rejects"] = validated.getvalue(), rejects.getvalue()


def validate(text: str, **kwargs):
    outputs: dict = {}
    summary = validate_upload(
        lambda: contextlib.nullcontext(io.BytesIO(text.encode())), "catalog.csv", lambda: _kept(outputs),
        options=ReadOptions(), **kwargs,
    )
    rows = pa.ipc.open_file(io.BytesIO(outputs["validated"])).read_all().to_pylist()
    rejects = list(csv.DictReader(io.StringIO(outputs["rejects"].decode("utf-8-sig"))))
    return summary, rows, rejects


# -- headers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, field",
    [("SKU", "sku"), (" Product_ID ", "sku"), ("item-number", "sku"), ("Product Name", "name"), ("TITLE", "name"),
     ("Unit Price", "price"), ("qty", "stock"), ("Quantity On Hand", "stock"), ("Is_Active", "active"),
     ("enabled", "active"), ("Long.Description", "description")],
)
def test_headers_match_case_and_space_insensitively_with_aliases(header, field):
    mapping = match_headers(["sku" if field != "sku" else header, header if field != "sku" else "x"], "f.csv")
    assert mapping.fields[field] == (1 if field != "sku" else 0)


def test_every_alias_is_in_normal_form():
    for aliases in ALIASES.values():
        assert all(normalize_header(a) == a for a in aliases)


def test_unknown_columns_are_kept_as_attributes_and_unnamed_ones_get_a_key():
    mapping = match_headers(["sku", "Colour", "", "Size "], "f.csv")
    assert mapping.extras == (("Colour", 1), ("column_3", 2), ("Size", 3))


def test_two_columns_for_one_field_are_refused():
    with pytest.raises(HeaderError, match=r"f.csv: columns 2 \('Price'\) and 3 \('unit price'\) both give price"):
        match_headers(["sku", "Price", "unit price"], "f.csv")


# -- rows ----------------------------------------------------------------------------------------

HEADER = "sku,name,description,price,stock,active,colour\n"


def test_values_are_typed_trimmed_and_empty_cells_are_null():
    _, rows, _ = validate(HEADER + " A1 , Lamp ,,\"1,234.50\",\"1,200\",YES,red\nA2,Chair,d,1234.5,12.0,,\n")
    assert rows == [
        {"row": 2, "sku": "A1", "name": "Lamp", "description": None, "price": Decimal("1234.5"), "stock": 1200,
         "active": True, "attr_0": "red"},
        {"row": 3, "sku": "A2", "name": "Chair", "description": "d", "price": Decimal("1234.5"), "stock": 12,
         "active": True, "attr_0": None},  # an empty active cell means true
    ]


@pytest.mark.parametrize(
    "cells, reasons",
    [
        (",Lamp,,1,1,true,", ["sku is empty"]),
        (f"{'S' * 256},Lamp,,1,1,true,", ["sku is longer than 255 characters"]),
        ("A1,Lamp,,abc,1,true,", ["price 'abc' is not a number like 1234.5 or 1,234.50"]),
        ('A1,Lamp,,"12,50",1,true,', ["price '12,50' is not a number like 1234.5 or 1,234.50"]),
        ("A1,Lamp,,-3.50,1,true,", ["price '-3.50' is negative"]),
        ("A1,Lamp,,1.23456,1,true,", ["price '1.23456' has more than 4 decimal places"]),
        ("A1,Lamp,,123456789012345,1,true,", ["price '123456789012345' is too large (at most 14 digits before the point)"]),
        ("A1,Lamp,,1,1.5,true,", ["stock '1.5' is not a whole number"]),
        ("A1,Lamp,,1,-2,true,", ["stock '-2' is negative"]),
        ("A1,Lamp,,1,3000000000,true,", ["stock '3000000000' is larger than 2,147,483,647"]),
        ("A1,Lamp,,1,99999999999999999999,true,", ["stock '99999999999999999999' is larger than 2,147,483,647"]),
        ("A1,Lamp,,1,0x1F,true,", ["stock '0x1F' is not a whole number"]),  # Arrow's cast would read hex
        ("A1,Lamp,,1,1,maybe,", ["active 'maybe' is not one of true/false/yes/no/1/0"]),
        (",Lamp,,-1,x,maybe,", ["sku is empty", "price '-1' is negative", "stock 'x' is not a whole number",
                                "active 'maybe' is not one of true/false/yes/no/1/0"]),
    ],
)
def test_each_bad_cell_is_refused_with_every_reason(cells, reasons):
    summary, rows, rejects = validate(HEADER + "OK1,Good,,1,1,true,\n" + cells + "\n", max_reject_fraction=1.0)
    assert [r["sku"] for r in rows] == ["OK1"]
    assert summary.rejected == 1 and len(rejects) == 1
    assert rejects[0]["row"] == "3" and rejects[0]["reasons"].split("; ") == reasons
    assert [rejects[0][h] for h in HEADER.strip().split(",")] == next(csv.reader([cells]))  # the cells as they were


def test_a_nul_character_is_refused_in_whichever_column_it_is():
    summary, rows, rejects = validate(HEADER + "A1,La\x00mp,,1,1,true,\nA2,Chair,,1,1,true,\n", max_reject_fraction=1.0)
    assert [r["sku"] for r in rows] == ["A2"] and rejects[0]["reasons"] == "name contains a NUL character"


def test_cells_are_trimmed_of_unicode_and_control_whitespace_only_at_their_ends():
    text = HEADER + "A1,\u00a0Lamp\t,Caf\u00e9 au lait,+12.50,7,true,\u3000red\nA2,Chair,d\u00a0e,1,8,no,blue\n"
    _, rows, _ = validate(text)
    assert [(r["name"], r["description"], r["price"], r["attr_0"]) for r in rows] == [
        ("Lamp", "Café au lait", Decimal("12.5"), "red"), ("Chair", "d\u00a0e", Decimal("1"), "blue"),
    ]


@pytest.mark.parametrize(
    "values, sliced, needs",
    [(["a", "b c", ""], None, False), (["a", " b"], None, True), (["a", "b\t"], None, True),
     (["a", "é"], None, True), ([" a", "b", "c "], (1, 1), False), ([" a", "b", "c "], (1, 2), True)],
)
def test_a_column_is_trimmed_when_a_cell_may_begin_or_end_with_whitespace(values, sliced, needs):
    column = pa.array(values, pa.string())
    if sliced:
        column = column.slice(*sliced)
    assert _may_need_trim(column) is needs
    assert _may_need_trim(column.cast(pa.large_string())) is needs


def test_minus_zero_is_zero_not_negative():
    _, rows, _ = validate(HEADER + "A1,Lamp,,-0.00,-0,true,\n")
    assert rows[0]["price"] == Decimal("0") and rows[0]["stock"] == 0


def test_a_repeated_sku_keeps_its_last_valid_row_and_reports_the_earlier_ones():
    text = HEADER + "A1,first,,1,1,true,\nB1,b,,1,1,true,\nA1,second,,2,1,true,\nA1,third,,-1,1,true,\n"
    summary, rows, rejects = validate(text, max_reject_fraction=0.5)
    assert summary.superseded == 1  # row 4 is the last valid A1 (row 5 is refused)
    assert summary.applied_rows == 2 and summary.rejected == 1
    by_row = {int(r["row"]): r for r in rejects}
    assert by_row[5]["reasons"] == "price '-1' is negative"
    assert by_row[2]["reasons"] == "superseded: sku 'A1' appears again at row 4, which is kept" and by_row[2]["sku"] == "A1"


def test_the_reject_limit_is_a_fraction_of_the_rows():
    text = HEADER + "".join(f"A{i},n,,1,1,true,\n" for i in range(99)) + "BAD,n,,x,1,true,\n"
    assert not validate(text, max_reject_fraction=0.01)[0].too_many_rejects  # 1 of 100: at the limit
    text += "BAD2,n,,x,1,true,\n"
    summary = validate(text, max_reject_fraction=0.01)[0]
    assert summary.too_many_rejects and summary.rejected == 2 and summary.rows == 101
    assert summary.examples[0] == {"row": 101, "reasons": ["price 'x' is not a number like 1234.5 or 1,234.50"]}


def test_a_file_of_skus_only_is_valid():
    summary, rows, _ = validate("sku\nA1\nA2\n")
    assert summary.fields == {"sku": "sku"} and [r["sku"] for r in rows] == ["A1", "A2"]


# -- repeated SKUs --------------------------------------------------------------------------------


def test_sku_hashes_are_equal_exactly_for_equal_skus():
    skus = pa.array(["a", "b", "a", "", "ab", "ba", "é", "é"])
    hashes = sku_hashes(skus).tolist()
    assert hashes[0] == hashes[2] and hashes[6] == hashes[7]
    assert len({hashes[i] for i in (0, 1, 3, 4, 5, 6)}) == 6
    assert sku_hashes(skus.slice(2, 3)).tolist() == hashes[2:5]  # an array with an offset


def _superseded_by_dictionary(skus: list[str], rows: list[int]) -> list[tuple[int, str, int]]:
    last = {}
    for row, sku in zip(rows, skus):
        last[sku] = row
    return [(row, sku, last[sku]) for row, sku in zip(rows, skus) if last[sku] != row]


def _chunks(skus: list[str], rows: list[int], size: int) -> list[tuple[pa.Array, pa.Array]]:
    return [(pa.array(skus[i : i + size], pa.string()), pa.array(rows[i : i + size], pa.int64())) for i in range(0, len(skus), size)]


_SKUS = st.lists(st.sampled_from(["A", "B", "C", "Ä", "A1", "AB", ""]), min_size=0, max_size=40)


@settings(max_examples=60, deadline=None)
@given(_SKUS, st.integers(1, 7))
def test_find_superseded_agrees_with_a_plain_dictionary(skus, chunk):
    rows = list(range(2, len(skus) + 2))
    chunks = _chunks(skus, rows, chunk)
    assert find_superseded([c[0] for c in chunks], [c[1] for c in chunks]) == _superseded_by_dictionary(skus, rows)


@settings(max_examples=40, deadline=None)
@given(_SKUS, st.integers(1, 7), st.integers(1, 5))
def test_superseded_agrees_when_the_hashes_are_sorted_a_range_at_a_time(skus, chunk, sort_rows):
    """A file of more than SORT_ROWS rows (GROUP_ROWS rows whose SKU may repeat) is gone
    through once per range of hash values."""
    rows = list(range(2, len(skus) + 2))
    with SkuTracker() as tracker:
        tracker.SORT_ROWS = tracker.GROUP_ROWS = sort_rows
        for sku_chunk, row_chunk in _chunks(skus, rows, chunk):
            tracker.add(sku_chunk, row_chunk)
        assert as_tuples(tracker.superseded()) == _superseded_by_dictionary(skus, rows)


def test_equal_hashes_of_different_skus_are_not_merged(monkeypatch):
    import engine.catalog.repeated_skus as repeated_skus

    monkeypatch.setattr(repeated_skus, "sku_hashes", lambda skus: np.zeros(len(skus), np.uint64))  # every SKU collides
    skus, rows = ["A", "B", "A", "C", "B", "D"], [2, 3, 4, 5, 6, 7]
    chunks = _chunks(skus, rows, 4)
    assert find_superseded([c[0] for c in chunks], [c[1] for c in chunks]) == [(2, "A", 4), (3, "B", 6)]


def test_closing_the_tracker_removes_its_scratch_file(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    tracker = SkuTracker()
    tracker.add(pa.array(["A", "A"]), pa.array([2, 3], pa.int64()))
    assert [p.name.startswith("floodgate-skus-") for p in tmp_path.iterdir()] == [True]
    assert as_tuples(tracker.superseded()) == [(2, "A", 3)]
    tracker.close()
    assert list(tmp_path.iterdir()) == []


def test_the_skus_scratch_file_is_removed_after_the_upload_and_after_a_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where TemporaryDirectory makes the scratch folder
    summary, _, _ = validate("sku,name\nA1,x\nA2,y\nA1,z\n")
    assert summary.superseded == 1
    with pytest.raises(HeaderError):
        validate("name\nx\n")  # no sku column: fails before any row
    with pytest.raises(RuntimeError, match="the database went away"):
        validate("sku,name\nA1,x\nA2,y\n", staging=_FailingStaging)
    assert list(tmp_path.iterdir()) == []


class _FailingStaging:
    """A staging whose first write fails, as a lost database connection would."""

    def __init__(self, plan):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, table):
        raise RuntimeError("the database went away")

    def finish(self, superseded):
        raise AssertionError("not reached")


def test_superseded_rows_past_two_to_the_31_are_ordered_too():
    """Rows and kept rows are sorted packed into one integer when they fit in 31 bits; a
    file of more rows takes the general path."""
    big = 1 << 31
    skus, rows = ["A", "B", "A", "B"], [big - 2, big - 1, big + 5, big + 9]
    chunks = _chunks(skus, rows, 3)
    assert find_superseded([c[0] for c in chunks], [c[1] for c in chunks]) == [(big - 2, "A", big + 5), (big - 1, "B", big + 9)]


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_the_validated_rows_file_reads_back_a_batch_at_a_time_compressed_or_not(compression):
    lines = ["sku,name,price,stock,active,colour"] + [f"S{i},Widget {i % 7},{i}.50,{i},yes,red" for i in range(40_000)]
    files = {}
    for chosen in ("none", compression):
        outputs: dict = {}
        validate_upload(
            lambda: contextlib.nullcontext(io.BytesIO("\n".join(lines).encode())), "catalog.csv", lambda: _kept(outputs),
            options=ReadOptions(validated_compression=chosen),
        )
        files[chosen] = outputs["validated"]
    batches = list(read_validated_rows(io.BytesIO(files[compression])))
    assert len(batches) > 1 and sum(b.num_rows for b in batches) == 40_000
    assert pa.concat_tables(batches).to_pylist() == pa.ipc.open_file(io.BytesIO(files["none"])).read_all().to_pylist()
    assert len(files[compression]) < 0.75 * len(files["none"])  # the buffers were compressed

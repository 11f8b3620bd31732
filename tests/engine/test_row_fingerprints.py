"""Row fingerprints of COPY payloads (engine/catalog/row_fingerprints.c through its Python
side): what is hashed, what is appended, and which rows a known set leaves out. The
database side (the column, its trigger, the re-import that sends nothing) is in
tests/resources/test_catalog_db.py."""

import csv
import io

import numpy as np
import pytest

from engine.catalog.row_fingerprints import RowFilter, seed
from engine.catalog.upsert import UpsertPlan

PLAN = UpsertPlan(fields=["sku", "name", "price"], attributes=["Colour"])


def sent(payload: bytes, known=None, plan=PLAN, csv_format=False, rows=None) -> tuple[bytes, int, int]:
    rows = payload.count(b"\n") if rows is None else rows
    out, kept, skipped = RowFilter(plan, known)(memoryview(bytearray(payload)), rows, csv=csv_format)
    return bytes(out), kept, skipped


def fingerprints(out: bytes, separator: bytes = b"\t") -> list[int]:
    """The fingerprints appended to a filtered text payload, as the unsigned values stored."""
    return [int(line.rsplit(separator, 1)[1]) & (2**64 - 1) for line in out.splitlines()]


def test_each_row_gets_the_hash_of_its_values_after_the_row_number():
    payload = b"2\tS1\tName\t1.5000\t\\N\n3\tS2\tName\t1.5000\t\\N\n17\tS1\tName\t1.5000\t\\N\n4\tS1\tName\t1.5001\t\\N\n"
    out, kept, skipped = sent(payload)
    assert (kept, skipped) == (4, 0)
    lines = out.splitlines()
    assert [line.rsplit(b"\t", 1)[0] for line in lines] == payload.splitlines()  # rows as they were, plus one field
    first, other_sku, same_values_other_row, other_price = fingerprints(out)
    assert first == same_values_other_row  # the row number is not the product's
    assert len({first, other_sku, other_price}) == 3
    assert all(-(2**63) <= int(line.rsplit(b"\t", 1)[1]) < 2**63 for line in lines)  # a PostgreSQL bigint


def test_rows_whose_fingerprint_is_known_are_left_out():
    payload = b"".join(f"{n}\tS{n}\tName {n}\t{n}.0000\tred\n".encode() for n in range(2, 1002))
    everything, _, _ = sent(payload)
    all_fingerprints = fingerprints(everything)
    known = np.array(sorted(all_fingerprints[::2]), np.uint64)  # every other row is in the table
    out, kept, skipped = sent(payload, known)
    assert (kept, skipped) == (500, 500)
    assert out == b"".join(line + b"\n" for line in everything.splitlines()[1::2])
    # known values at the edges of the 64-bit range, around the rows' own
    edges = np.array(sorted([0, 2**63 - 1, 2**63, 2**64 - 1, *all_fingerprints[:1]]), np.uint64)
    out, kept, skipped = sent(payload, edges)
    assert (kept, skipped) == (999, 1) and out == b"".join(line + b"\n" for line in everything.splitlines()[1:])


def test_csv_rows_end_at_the_first_line_break_outside_quotes():
    rows = [[2, "S1", 'a "quoted"\nname, on two lines', "1.5000"], [3, "S2", "", "2.0000"], [4, "S3", "x\r\ny", ""]]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    payload = buffer.getvalue().encode()
    out, kept, skipped = sent(payload, csv_format=True, rows=3)
    assert (kept, skipped) == (3, 0)
    parsed = list(csv.reader(io.StringIO(out.decode())))
    assert [r[:-1] for r in parsed] == [[str(v) for v in r] for r in rows]
    assert len({r[-1] for r in parsed}) == 3
    # the same values in text format are another fingerprint (another format, another seed)
    assert seed(PLAN, csv=True) != seed(PLAN, csv=False)


def test_the_same_text_under_other_columns_is_another_fingerprint():
    payload = b"2\tS1\tName\t1.5000\tred\n"
    colour = fingerprints(sent(payload)[0])
    size = fingerprints(sent(payload, plan=UpsertPlan(fields=["sku", "name", "price"], attributes=["Size"]))[0])
    stock = fingerprints(sent(payload, plan=UpsertPlan(fields=["sku", "name", "stock"], attributes=["Colour"]))[0])
    assert len({colour[0], size[0], stock[0]}) == 3


def test_the_output_buffer_grows_for_a_larger_payload_and_is_reused():
    rows = RowFilter(PLAN, None)
    small = b"2\tS1\tA\t1.0000\t\\N\n"
    large = b"".join(f"{n}\tS{n}\t{'d' * 300}\t1.0000\t\\N\n".encode() for n in range(2, 500))
    first, _, _ = rows(memoryview(bytearray(small)), 1, csv=False)
    first = bytes(first)
    grown, kept, _ = rows(memoryview(bytearray(large)), 498, csv=False)
    assert kept == 498 and bytes(grown).count(b"\n") == 498
    again, _, _ = rows(memoryview(bytearray(small)), 1, csv=False)
    assert bytes(again) == first


@pytest.mark.parametrize("payload", [b"2\tS1\tA", b"2S1A\n", b"2,S1,A\n"])
def test_a_payload_row_without_its_separator_or_line_break_is_refused(payload):
    with pytest.raises(ValueError, match="COPY payload"):
        sent(payload, rows=1)

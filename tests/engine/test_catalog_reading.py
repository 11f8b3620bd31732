"""Reading catalog uploads (issue 5, item 1): encodings, delimiters, quoting, gzip, .xlsx.

Each file is validated end to end by validate_upload (no database) and the typed rows
read back from the validated file, so every case shows what a merchant's file becomes.
"""

import contextlib
import csv
import gzip
import io
import subprocess
import sys
import tempfile
import zipfile
from datetime import date
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.catalog.columns import HeaderError
from engine.catalog.csv_reader import CsvSource
from engine.catalog.numpy_arrays import arrow_array
from engine.catalog.sample_catalog import sample_rows, write_xlsx
from engine.catalog.text_stream import UploadFormatError, Utf8Stream, detect_format, sniff_delimiter
from engine.catalog.validated_file import ReadOptions, validate_upload
from engine.catalog.xlsx_reader import XlsxSource


class Outputs:
    """The two outputs of a validation, kept in memory; published only when the block succeeds."""

    def __init__(self):
        self.validated: bytes | None = None
        self.rejects: bytes | None = None

    @contextlib.contextmanager
    def __call__(self):
        validated, rejects = io.BytesIO(), io.BytesIO()
        yield validated, rejects
        self.validated, self.rejects = validated.getvalue(), rejects.getvalue()

    def rows(self) -> list[dict]:
        return pa.ipc.open_file(io.BytesIO(self.validated)).read_all().to_pylist()

    def reject_lines(self) -> list[dict]:
        return list(csv.DictReader(io.StringIO(self.rejects.decode("utf-8-sig"))))


def validate(data: bytes, name: str = "upload.csv", **options):
    outputs = Outputs()
    summary = validate_upload(lambda: contextlib.nullcontext(io.BytesIO(data)), name, outputs, options=ReadOptions(**options))
    return summary, outputs


HEADER = "sku,name,price\n"


@pytest.mark.parametrize(
    "encoding, text, expected_encoding",
    [
        ("utf-8", "Café crème", "utf-8"),
        ("utf-8-sig", "Café crème", "utf-8 (BOM)"),
        ("latin-1", "Café crème", "windows-1252"),  # Latin-1 text reads the same as Windows-1252
        ("cp1252", "“Smart” quotes – €5", "windows-1252"),
        ("utf-8", "plain ascii", "ascii"),
    ],
)
def test_encodings_are_detected(encoding, text, expected_encoding):
    data = f"sku,name,price\nA1,{text},1.5\n".encode(encoding)
    summary, outputs = validate(data)
    assert summary.source["encoding"] == expected_encoding
    assert outputs.rows()[0]["name"] == text


def test_a_utf16_file_with_bom_is_read():
    summary, outputs = validate("sku,name\nA1,Ünïcode\n".encode("utf-16"))
    assert summary.source["encoding"] == "utf-16 (BOM)"
    assert outputs.rows()[0]["name"] == "Ünïcode"


def test_a_declared_encoding_wins_over_detection():
    data = "sku,name\nA1,\u0080 and é\n".encode("latin-1")  # 0x80 is € in Windows-1252, a C1 control in Latin-1
    assert validate(data)[1].rows()[0]["name"] == "€ and é"
    assert validate(data, encoding="latin-1")[1].rows()[0]["name"] == "\u0080 and é"


def test_detection_waits_for_the_first_byte_that_is_not_ascii():
    """A Latin-1 byte far into a file that began as ASCII still decides Windows-1252."""
    rows = "".join(f"A{i},plain,1\n" for i in range(200_000))  # over the 1 MiB a chunk holds
    data = (HEADER + rows + "Z1,Crème brûlée,2\n").encode("latin-1")
    summary, outputs = validate(data)
    assert summary.source["encoding"] == "windows-1252"
    assert outputs.rows()[-1]["name"] == "Crème brûlée"


@pytest.mark.parametrize("before_end", [1, 2, 3, 4])
@pytest.mark.parametrize("encoded", [b"\xe9", "é".encode("utf-8")])
def test_the_first_byte_that_is_not_ascii_at_the_end_of_a_read_decides_as_anywhere(before_end, encoded):
    """Whether the first non-ASCII character ends a 1 MiB read of the stream or not."""
    at = (1 << 20) - before_end  # where the character starts: its first byte the last of a read, or near it
    data, n = bytearray((HEADER + "A0,plain,1\n").encode()), 1
    while len(data) + 40 < at:
        data += b"A%d,plain,1\n" % n
        n += 1
    data += b"Z1," + b"x" * (at - len(data) - 3) + encoded + b"ve,2\n"
    data += b"".join(b"B%d,plain,1\n" % i for i in range(10))
    assert data.index(encoded) == at
    summary, outputs = validate(data)
    assert summary.source["encoding"] == ("windows-1252" if encoded == b"\xe9" else "utf-8")
    (row,) = [r for r in outputs.rows() if r["sku"] == "Z1"]
    assert row["name"].endswith("éve") and summary.rejected == 0


@pytest.mark.parametrize("values", [np.arange(5, dtype=np.int64), np.array([3, 1, 2], np.uint64)[::-1],
                                    np.arange(10, dtype=np.int64)[2:7], np.array([], np.int64)])
def test_numpy_arrays_become_arrow_arrays_of_the_same_values_and_type(values):
    array = arrow_array(values)
    assert array.type == pa.from_numpy_dtype(values.dtype) and array.to_pylist() == values.tolist()


def test_a_csv_import_does_not_load_numpy_ma():
    """pa.array(ndarray) and np.unique load numpy.ma (1.3 MB, 10 ms): the CSV path uses neither."""
    script = """
import contextlib, io, sys
from engine.catalog.validated_file import validate_upload
text = "sku,name,price\\n" + "".join(f"A{i % 700},n,{i}.5\\n" for i in range(3000))  # SKUs repeated
outputs = lambda: contextlib.nullcontext((io.BytesIO(), io.BytesIO()))
summary = validate_upload(lambda: contextlib.nullcontext(io.BytesIO(text.encode())), "f.csv", outputs)
assert summary.superseded == 3000 - 700, summary.superseded
print("numpy.ma" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("encoding", ["utf-8", "cp1252"])
def test_buffers_read_from_the_stream_stay_whole_after_later_reads(encoding):
    """pyarrow reads through read_buffer, views of the stream's converted chunks, and holds
    them while it reads further: each must keep its bytes."""
    text = "".join(f"A{i},Crème {i},1\n" for i in range(150_000))  # about 2.5 MiB: several chunks
    stream = Utf8Stream(io.BytesIO(text.encode(encoding)), "big.csv")
    pieces = []
    while piece := stream.read_buffer(100_003):
        pieces.append(piece)
    assert len(pieces) > 20 and b"".join(pieces).decode("utf-8") == text
    stream = Utf8Stream(io.BytesIO(text.encode(encoding)), "big.csv")
    assert stream.read(7) == b"A0,Cr\xc3\xa8" and stream.read(3) == b"me "  # read and readinto share the position


def test_a_file_that_mixes_encodings_fails_with_the_byte_offset():
    good = "sku,name\nA1,Café\n".encode("utf-8")
    bad = "A2,Café\n".encode("latin-1")
    with pytest.raises(UploadFormatError) as caught:
        validate(good + bad, name="mixed.csv")
    message = str(caught.value)
    assert "mixed.csv" in message and f"byte {len(good) + 6:,}" in message and "UTF-8" in message


@pytest.mark.parametrize("delimiter, name", [(",", "comma"), (";", "semicolon"), ("\t", "tab")])
def test_the_delimiter_is_sniffed(delimiter, name):
    price = '"1,234.50"' if delimiter == "," else "1,234.50"  # quoted where the comma is the delimiter
    text = delimiter.join(["sku", "name", "price"]) + "\n" + delimiter.join(["A1", '"Lamp, brass"', price]) + "\n"
    summary, outputs = validate(text.encode())
    assert summary.source["delimiter"] == name and summary.source["delimiter_sniffed"]
    assert outputs.rows()[0]["price"] == Decimal("1234.5") and outputs.rows()[0]["name"] == "Lamp, brass"


def test_sniffing_prefers_the_delimiter_that_splits_every_line_alike():
    sample = "sku;name;price\nA1;Lamp, brass;12,50\nA2;Chair, oak;7\n"
    assert sniff_delimiter(sample, complete=True) == ";"


def test_quoted_fields_with_embedded_newlines_keep_their_row_numbers():
    data = b'sku,name,description\nA1,Lamp,"two\nlines"\nA2,"Chair ""Oak""",x\r\nA3,Desk,"a\r\nb"\n'
    summary, outputs = validate(data)
    rows = outputs.rows()
    assert [r["row"] for r in rows] == [2, 3, 4]
    assert rows[0]["description"] == "two\nlines" and rows[1]["name"] == 'Chair "Oak"' and rows[2]["description"] == "a\r\nb"
    assert not summary.exact_pass


def test_a_header_with_a_quoted_line_break_is_one_row():
    data = b'sku,"shelf\nlocation"\nA1,B-12\n'
    summary, outputs = validate(data)
    assert summary.attributes == ["shelf\nlocation"] and outputs.rows()[0]["row"] == 2 and outputs.rows()[0]["attr_0"] == "B-12"


def test_gzip_is_told_from_the_bytes_and_streamed():
    plain = (HEADER + "".join(f"A{i},N{i},{i}.5\n" for i in range(5000))).encode()
    summary, outputs = validate(gzip.compress(plain), name="upload.csv")  # the name does not say gzip
    assert summary.source["format"] == "csv.gz" and summary.rows == 5000
    assert outputs.rows()[-1] == {"row": 5001, "sku": "A4999", "name": "N4999", "price": Decimal("4999.5")}


def test_damaged_gzip_fails_clearly():
    data = gzip.compress((HEADER + "A1,x,1\n" * 10000).encode())
    with pytest.raises(UploadFormatError, match=r"broken\.csv\.gz: the gzip data is damaged"):
        validate(data[: len(data) // 2] + b"\x00" * 100 + data[len(data) // 2 :], name="broken.csv.gz")


def test_ragged_rows_are_read_again_exactly_and_keep_row_numbers():
    data = b"sku,name,price\nA1,Lamp,1\nA2,Chair\nA3,Desk,3,extra\nA4,Sofa,4,\nA5,Bed,5\n"
    summary, outputs = validate(data)
    assert summary.exact_pass  # the fast reader cannot number rows once one has the wrong width
    assert [r["row"] for r in outputs.rows()] == [2, 5, 6]  # A4's trailing delimiter loses nothing
    rejects = {int(r["row"]): r for r in outputs.reject_lines()}
    assert rejects[3]["reasons"] == "has 2 cells where the header has 3"
    assert rejects[4]["reasons"] == "has 4 cells where the header has 3" and rejects[4]["extra cells"] == '["extra"]'


def test_a_quote_left_open_is_named_in_the_reason():
    data = b'sku,name,price\nA1,Lamp,1\nA2,"Chair,2\nA3,Desk,3\n'
    _, outputs = validate(data)
    reasons = outputs.reject_lines()[0]["reasons"]
    assert outputs.reject_lines()[0]["row"] == "3" and "is a closing quote missing?" in reasons


def test_blank_lines_are_skipped_but_counted_in_row_numbers():
    data = b"sku,name\n\nA1,Lamp\n,\n\nA2,Chair\n"
    summary, outputs = validate(data)
    assert [r["row"] for r in outputs.rows()] == [3, 6] and summary.blank >= 1 and summary.rejected == 0


def test_formats_that_cannot_be_read_are_refused_clearly():
    with pytest.raises(UploadFormatError, match="old.xls: an Excel 97-2003 .xls file"):
        detect_format(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "old.xls")
    with pytest.raises(UploadFormatError, match="empty.csv: the file has no header row"):
        validate(b"", name="empty.csv")
    with pytest.raises(UploadFormatError, match="not.xlsx: not a readable .xlsx file"):
        validate(b"PK\x03\x04 not really a zip", name="not.xlsx")


def test_a_file_without_a_sku_column_names_what_it_found():
    with pytest.raises(HeaderError, match=r"nosku.csv: no sku column in the header row \(found 'name', 'price'\)"):
        validate(b"name,price\nLamp,1\n", name="nosku.csv")


def test_the_csv_reader_streams_in_bounded_batches():
    data = (HEADER + "".join(f"A{i},{'x' * 100},{i}\n" for i in range(30_000))).encode()
    source = CsvSource(Utf8Stream(io.BytesIO(data), "big.csv"), "big.csv", block_mb=0.25, batch_rows=4_000)
    batches = list(source.batches())
    sizes = [len(b.rows) for b in batches]
    # blocks of 0.25 MB (about 2,100 of these rows) are joined until a batch has 4,000 rows
    assert sum(sizes) == 30_000 and len(sizes) > 5 and max(sizes) < 4_000 + 2_200
    assert all(size >= 4_000 for size in sizes[:-1])
    numbers = np.concatenate([b.rows.to_numpy() for b in batches])
    assert (numbers == np.arange(2, 30_002)).all()  # rows keep their numbers across joined blocks
    assert [b.columns[0][0].as_py() for b in batches[:2]] == ["A0", f"A{sizes[0]}"]


# -- .xlsx ---------------------------------------------------------------------------------------


def xlsx_bytes(rows, tmp_path, **kwargs) -> bytes:
    path = write_xlsx(tmp_path / "upload.xlsx", rows, **kwargs)
    return path.read_bytes()


def test_xlsx_values_become_the_text_excel_shows(tmp_path):
    rows = [
        ["A1", "Lamp & shade", "desc", Decimal("1234.5"), 12, True, "red"],
        ["A2", "Chair", None, 7566.8900000000003, 0, False, date(2024, 3, 1)],
        ["A3", " padded ", "x", 1e-05, 3, True, "=1+1"],
    ]
    summary, outputs = validate(xlsx_bytes(rows, tmp_path), name="upload.xlsx")
    assert summary.source == {"format": "xlsx", "encoding": None, "delimiter": None, "delimiter_sniffed": False, "sheet": "Products"}
    got = outputs.rows()
    assert [r["row"] for r in got] == [2, 3] and summary.rejected == 1  # 0.00001 has five decimal places
    assert got[0]["name"] == "Lamp & shade" and got[0]["price"] == Decimal("1234.5") and got[0]["active"] is True
    assert got[1]["price"] == Decimal("7566.89") and got[1]["active"] is False and got[1]["description"] is None
    assert got[1]["attr_0"] == "2024-03-01"  # a number in a date format
    assert "price '0.00001' has more than 4 decimal places" in outputs.reject_lines()[0]["reasons"]


def test_xlsx_a_named_sheet_is_read_and_a_missing_one_is_named(tmp_path):
    data = xlsx_bytes(list(sample_rows(3)), tmp_path)
    with pytest.raises(HeaderError):  # the Notes sheet has no sku column
        validate(data, name="u.xlsx", sheet="Notes")
    with pytest.raises(UploadFormatError, match="no worksheet named 'Prices' \\(it has 'Products', 'Notes'\\)"):
        validate(data, name="u.xlsx", sheet="Prices")


def test_xlsx_inline_strings_rich_text_and_unusual_attribute_order(tmp_path):
    """What other writers produce: inline strings, rich-text runs, attributes in another order,
    a namespace prefix, cells right of the header, rows without a value."""
    sheet = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<x:worksheet xmlns:x="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><x:sheetData>'
        '<x:row r="1"><x:c r="A1" t="inlineStr"><x:is><x:t>SKU</x:t></x:is></x:c>'
        '<x:c t="inlineStr" r="B1"><x:is><x:t>Name</x:t></x:is></x:c></x:row>'
        '<x:row r="2"><x:c r="A2" t="inlineStr"><x:is><x:t>A1</x:t></x:is></x:c>'
        '<x:c r="B2" t="inlineStr"><x:is><x:r><x:t>Bold</x:t></x:r><x:r><x:t xml:space="preserve"> lamp</x:t></x:r></x:is></x:c></x:row>'
        '<x:row r="4"><x:c r="A4" s="0" t="inlineStr"><x:is><x:t>A2</x:t></x:is></x:c><x:c r="B4" s="0"/></x:row>'
        '<x:row r="5"><x:c r="A5" t="inlineStr"><x:is><x:t>A3</x:t></x:is></x:c><x:c r="D5"><x:v>9</x:v></x:c></x:row>'
        "</x:sheetData></x:worksheet>"
    )
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as z:
        z.writestr("xl/workbook.xml", '<workbook xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>')
        z.writestr("xl/_rels/workbook.xml.rels", '<Relationships><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="/xl/worksheets/sheet1.xml"/></Relationships>')
        z.writestr("xl/worksheets/sheet1.xml", sheet)
    summary, outputs = validate(data.getvalue(), name="other.xlsx")
    assert [(r["row"], r["sku"], r["name"]) for r in outputs.rows()] == [(2, "A1", "Bold lamp"), (4, "A2", None)]
    assert [(r["row"], r["reasons"]) for r in outputs.reject_lines()] == [("5", "has 4 cells where the header has 2")]


def test_xlsx_reader_streams_in_pieces(tmp_path):
    data = xlsx_bytes(list(sample_rows(40_000)), tmp_path)
    source = XlsxSource(io.BytesIO(data), "big.xlsx")
    sizes = [len(b.rows) for b in source.batches()]
    assert sum(sizes) == 40_000 and len(sizes) > 3


# -- any text survives the trip -------------------------------------------------------------------

_CELL = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(_CELL, _CELL), min_size=1, max_size=25),
    st.sampled_from([",", ";", "\t"]),
    st.sampled_from(["utf-8", "utf-8-sig"]),
    st.booleans(),
)
def test_any_cells_written_by_a_csv_writer_read_back_the_same(cells, delimiter, encoding, gzipped):
    """Quotes, delimiters, line breaks and any Unicode in cells: what csv.writer wrote is what
    the reader gives (trimmed, as the rules say), with the rows numbered as a spreadsheet would."""
    text = io.StringIO(newline="")
    writer = csv.writer(text, delimiter=delimiter)
    writer.writerow(["sku", "note"])
    rows = [(f"S{i}", note) for i, (_, note) in enumerate(cells)]
    writer.writerows(rows)
    data = text.getvalue().encode(encoding)
    summary, outputs = validate(gzip.compress(data) if gzipped else data, delimiter=delimiter)
    got = {r["sku"]: r["attr_0"] for r in outputs.rows()}
    for sku, note in rows:
        expected = note.strip() or None
        assert got[sku] == expected  # (the sku cell is never blank, so no row is a blank row)
    assert summary.rejected == 0 and summary.rows == len(rows)


def test_shared_strings_wait_in_a_scratch_file_and_any_order_of_lookups_finds_each_text():
    import os

    import pyarrow as pa

    from engine.catalog.xlsx_reader import _SharedStrings

    chunks = [pa.array([f"text {c}-{i} " + "é" * (i % 7) for i in range(500)]) for c in range(12)]
    plain = pa.concat_arrays(chunks)
    with _SharedStrings(iter(chunks)) as strings:
        scratch = strings._path
        assert len(strings) == len(plain) and os.path.getsize(scratch) > plain.nbytes / 2
        rng = np.random.default_rng(3)
        for _ in range(5):  # each lookup touches every chunk, more than are kept in memory
            index = rng.integers(0, len(plain), 2_000)
            assert strings.take(index).to_pylist() == plain.take(pa.array(index)).to_pylist()
            assert len(strings._kept) <= strings._KEPT
        with pytest.raises(IndexError):
            strings.take(np.array([len(plain)]))
    assert not os.path.exists(scratch)
    with _SharedStrings() as none:  # a workbook without shared strings: no scratch file
        assert len(none) == 0 and none._folder is None


def test_shared_strings_read_from_a_damaged_part_leave_no_scratch_file(tmp_path, monkeypatch):
    from engine.catalog.text_stream import UploadFormatError
    from engine.catalog.xlsx_reader import _SharedStrings

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # TMPDIR is read again

    def chunks():
        yield pa.array(["first", "second"])
        raise UploadFormatError("book.xlsx: the shared strings is damaged")

    try:
        _SharedStrings(chunks())
    except UploadFormatError:
        # removed before the error leaves, not when the half-made object is collected (the
        # traceback still holds it here)
        assert list(tmp_path.iterdir()) == []
    else:
        pytest.fail("the damaged part was read without an error")

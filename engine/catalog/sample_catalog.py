"""Generated catalogs for tests and the benchmark: CSV (any encoding, delimiter, gzip) and .xlsx.

The .xlsx writer writes what Excel writes (shared strings, numbers as numbers, booleans
as booleans, a date style), streamed into the zip, so a 500k-row workbook is made in
seconds and in little memory.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import random
import zipfile
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from xml.sax.saxutils import escape

from engine.catalog.xlsx_reader import column_letters

HEADERS = ["SKU", "Product Name", "Description", "Price", "Stock", "Active", "Color"]
_WORDS = (
    "alpha beta gamma delta red blue green large small cotton steel wooden linen oak brass copper "
    "ceramic glass round square vintage classic modern slim heavy soft"
).split()
_COLORS = ("red", "blue", "green", "black", "white", "grey")


def sample_rows(count: int, *, seed: int = 1, start: int = 0, price_shift: int = 0) -> Iterator[list]:
    """Typed rows [sku, name, description, price (Decimal), stock, active (bool), color]."""
    rng = random.Random(seed)
    for i in range(start, start + count):
        yield [
            f"SKU-{i:08d}",
            " ".join(rng.choices(_WORDS, k=3)).title(),
            " ".join(rng.choices(_WORDS, k=12)),
            Decimal(rng.randint(100, 99_999_99) + price_shift) / 100,
            rng.randint(0, 5000),
            rng.random() < 0.9,
            rng.choice(_COLORS),
        ]


def csv_text_row(row: list) -> list[str]:
    """A typed row as a merchant's export writes it: prices with thousands separators."""
    sku, name, description, price, stock, active, color = row
    return [sku, name, description, f"{price:,.2f}", str(stock), "true" if active else "false", color]


def write_csv(
    path: Path | str,
    rows: Iterable[list],
    *,
    headers: list[str] = HEADERS,
    delimiter: str = ",",
    encoding: str = "utf-8",
    gzipped: bool = False,
) -> Path:
    """Rows of text (or typed rows, written as csv_text_row) to a CSV file."""
    path = Path(path)
    raw = gzip.open(path, "wb", compresslevel=1) if gzipped else open(path, "wb")
    with raw, io.TextIOWrapper(raw, encoding=encoding, newline="") as text:
        writer = csv.writer(text, delimiter=delimiter)
        writer.writerow(headers)
        for row in rows:
            writer.writerow(csv_text_row(row) if row and isinstance(row[3], Decimal) else row)
    return path


def csv_bytes(rows: Iterable[list], **options) -> bytes:
    buffer = io.BytesIO()
    headers = options.pop("headers", HEADERS)
    delimiter = options.pop("delimiter", ",")
    encoding = options.pop("encoding", "utf-8")
    text = io.TextIOWrapper(buffer, encoding=encoding, newline="")
    writer = csv.writer(text, delimiter=delimiter)
    writer.writerow(headers)
    for row in rows:
        writer.writerow(csv_text_row(row) if row and isinstance(row[3], Decimal) else row)
    text.flush()
    data = buffer.getvalue()
    text.detach()
    return data


# -- .xlsx ---------------------------------------------------------------------------------------

_CONTENT_TYPES = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="xml" ContentType="application/xml"/>
<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>
<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>
<Override PartName="/xl/worksheets/sheet2.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>
<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>
<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>
</Types>"""
_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>
</Relationships>"""
_WORKBOOK = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">
<sheets><sheet name="{first}" sheetId="1" r:id="rId1"/><sheet name="Notes" sheetId="2" r:id="rId2"/></sheets>
</workbook>"""
_WORKBOOK_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>
<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet2.xml"/>
<Relationship Id="rId3" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/>
<Relationship Id="rId4" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/>
</Relationships>"""
# style 0: General; style 1: a date (numFmtId 14)
_STYLES = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">
<cellXfs count="2"><xf numFmtId="0"/><xf numFmtId="14" applyNumberFormat="1"/></cellXfs>
</styleSheet>"""
_SHEET_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
_SHEET_TAIL = "</sheetData></worksheet>"
_NOTES = _SHEET_HEAD + '<row r="1"><c r="A1" t="inlineStr"><is><t>not the catalog</t></is></c></row>' + _SHEET_TAIL



def write_xlsx(path: Path | str, rows: Iterable[list], *, headers: list = HEADERS, sheet: str = "Products") -> Path:
    """Rows of Python values (str, int, float, Decimal, bool, date, None) to a one-catalog workbook."""
    from datetime import date

    path = Path(path)
    strings: dict[str, int] = {}

    def string_index(value: str) -> int:
        index = strings.get(value)
        if index is None:
            index = strings[value] = len(strings)
        return index

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES)
        archive.writestr("_rels/.rels", _RELS)
        archive.writestr("xl/workbook.xml", _WORKBOOK.format(first=escape(sheet)))
        archive.writestr("xl/_rels/workbook.xml.rels", _WORKBOOK_RELS)
        archive.writestr("xl/styles.xml", _STYLES)
        archive.writestr("xl/worksheets/sheet2.xml", _NOTES)
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as member:
            out = io.TextIOWrapper(member, encoding="utf-8")
            out.write(_SHEET_HEAD)
            letters = [column_letters(i) for i in range(64)]
            for number, values in enumerate(itertools.chain([headers], rows), 1):
                cells = []
                for col, value in enumerate(values):
                    ref = f"{letters[col]}{number}"
                    if value is None or value == "":
                        continue
                    if isinstance(value, bool):
                        cells.append(f'<c r="{ref}" t="b"><v>{int(value)}</v></c>')
                    elif isinstance(value, (int, float, Decimal)):
                        cells.append(f'<c r="{ref}"><v>{value}</v></c>')
                    elif isinstance(value, date):
                        serial = (value - date(1899, 12, 30)).days
                        cells.append(f'<c r="{ref}" s="1"><v>{serial}</v></c>')
                    else:
                        cells.append(f'<c r="{ref}" t="s"><v>{string_index(str(value))}</v></c>')
                out.write(f'<row r="{number}">{"".join(cells)}</row>')
            out.write(_SHEET_TAIL)
            out.flush()
            out.detach()
        with archive.open("xl/sharedStrings.xml", "w", force_zip64=True) as member:
            out = io.TextIOWrapper(member, encoding="utf-8")
            out.write('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n')
            out.write(f'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" uniqueCount="{len(strings)}">')
            for value in strings:  # insertion order is index order
                space = ' xml:space="preserve"' if value != value.strip() else ""
                out.write(f"<si><t{space}>{escape(value)}</t></si>")
            out.write("</sst>")
            out.flush()
            out.detach()
    return path

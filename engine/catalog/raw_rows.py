"""What a reader (CSV or .xlsx) hands the validator: a batch of rows as raw string columns."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa


@dataclass
class RawBatch:
    """Rows of one bounded chunk of the file.

    `rows` are the rows' numbers in the file as a spreadsheet numbers them (the header is
    row 1; a quoted field with line breaks is still one row). `columns` are the cells as
    text, one array per header column, aligned with `rows`. Rows with more or fewer cells
    than the header are not in them: they are in `ragged`, as (row, cells)."""

    rows: pa.Array  # int64
    columns: list[pa.Array]  # string, len == header width
    ragged: list[tuple[int, list[str]]] = field(default_factory=list)
    bytes_read: int = 0  # of the object, so far: for the ETA
    may_hold_nul: bool = True  # False when the reader knows no cell has a NUL character

    @property
    def num_rows(self) -> int:
        return len(self.rows) + len(self.ragged)


@dataclass(frozen=True)
class SourceInfo:
    """How the file was read, for metadata and the manifest."""

    format: str  # csv, csv.gz, xlsx
    encoding: str | None = None  # csv: utf-8, utf-8 (BOM), windows-1252, ascii, ... (decided by the end)
    delimiter: str | None = None  # csv: comma, semicolon, tab
    delimiter_sniffed: bool = False
    sheet: str | None = None  # xlsx: the worksheet read

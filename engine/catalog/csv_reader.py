"""A CSV upload as batches of raw string columns, in bounded memory.

Two readers of the same text (always UTF-8 by then: text_stream.Utf8Stream):

- fast: pyarrow's streaming CSV reader (C++, blocks of `block_mb`), quote-aware across
  line breaks (newlines_in_values). It numbers rows by counting them, which is exact as
  long as every row has the header's number of cells. It reads 32 blocks ahead on a
  thread of Arrow's; blocks of 0.125 MiB instead of 0.25 lowered the import's peak by
  about 9 MB (the 500k-row bench file, engine alone, 3 alternations: 137-138 MB against
  146-147 MB) at the same speed; a record longer than a block (a description over 128
  KiB) is read by the exact reader.
- exact: Python's csv module, one record at a time. Slower (about 5x on 500k rows), but it
  sees every record, so rows with too many or too few cells keep their row numbers.

`CsvSource.batches` starts fast; the first row the fast reader cannot place (a ragged row,
a record larger than a block) raises NeedsExactPass, and the caller reads the file again
from the start with exact=True (validated_file.validate_upload does). Ragged rows are
rare in machine-made exports, so the usual file pays for one fast pass only.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from engine.catalog.numpy_arrays import arrow_array
from engine.catalog.raw_rows import RawBatch
from engine.catalog.text_stream import UploadFormatError, Utf8Stream, sniff_delimiter

# A description may be long; the csv module's default limit (128 KiB a field) would fail it.
csv.field_size_limit(max(csv.field_size_limit(), 64 << 20))
_HEAD_BYTES = 256 * 1024


class NeedsExactPass(Exception):
    """The fast reader met a row it cannot number; read the file again with exact=True."""


class CsvSource:
    def __init__(
        self,
        stream: Utf8Stream,
        name: str,
        *,
        delimiter: str | None = None,
        exact: bool = False,
        block_mb: float = 0.125,
        # rows handed to the validator at once: 8k instead of 16k lowered the import's peak by
        # about 7 MB (fewer and smaller buffers in flight between reader, validator and COPY)
        # for 0.01-0.04 s more CPU on 500k rows, a cost per batch (docs/PERFORMANCE.md)
        batch_rows: int = 8_192,
    ):
        self.stream, self.name, self.exact = stream, name, exact
        self.block_bytes = int(block_mb * (1 << 20))
        self.batch_rows = batch_rows
        head, whole = stream.read_text_head(_HEAD_BYTES)
        self.delimiter_sniffed = delimiter is None
        self.delimiter = delimiter or sniff_delimiter(head, whole)
        self._head = head
        self.header: list[str] = []
        self.header_row = 1

    def batches(self) -> Iterator[RawBatch]:
        """Read the header (self.header, self.header_row), then yield the rows in batches."""
        return self._exact() if self.exact else self._fast()

    # -- fast -----------------------------------------------------------------------------------

    def _fast(self) -> Iterator[RawBatch]:
        lines = io.StringIO(self._head, newline="")
        reader = csv.reader(lines, delimiter=self.delimiter, strict=False)
        try:
            header = next(reader, None)
        except csv.Error:
            raise NeedsExactPass("the header row does not parse in the first bytes") from None
        end = lines.tell()  # the reader has consumed exactly the header's lines
        if not header or not any(cell.strip() for cell in header) or end >= len(self._head):
            raise NeedsExactPass("blank lines before the header, or a header as long as the sample")
        self.header = header
        width = len(header)
        skip = len(self._head[:end].encode("utf-8"))
        while skip:  # drop the header's bytes: pyarrow's skip_rows does not see quoted line breaks
            dropped = self.stream.read(skip)
            if not dropped:
                break
            skip -= len(dropped)
        names = [f"c{i}" for i in range(width)]
        misfits: list[int] = []

        def on_misfit(row) -> str:
            misfits.append(row.actual_columns)
            return "skip"

        reader = pcsv.open_csv(
            self.stream,
            read_options=pcsv.ReadOptions(column_names=names, block_size=self.block_bytes, use_threads=False),
            parse_options=pcsv.ParseOptions(
                delimiter=self.delimiter,
                newlines_in_values=True,
                ignore_empty_lines=False,  # a blank line keeps its row number (it is skipped later)
                invalid_row_handler=on_misfit,
            ),
            convert_options=pcsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        next_row = self.header_row + 1
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                batch = None
            except pa.ArrowInvalid as exc:  # e.g. one record larger than a block
                raise NeedsExactPass(str(exc)) from None
            if misfits:
                raise NeedsExactPass(f"a row with {misfits[0]} cells where the header has {width}")
            if batch is not None and batch.num_rows:
                pending.append(batch)
                pending_rows += batch.num_rows
            # small blocks keep pyarrow's read-ahead small; the validator gets them joined,
            # since its cost per batch is mostly per call, not per row
            if pending and (batch is None or pending_rows >= self.batch_rows):
                columns = [pa.concat_arrays([b.column(i) for b in pending]) for i in range(width)]
                rows = arrow_array(np.arange(next_row, next_row + pending_rows, dtype=np.int64))
                next_row += pending_rows
                pending, pending_rows = [], 0
                yield RawBatch(rows, columns, [], self.stream.bytes_read, self.stream.saw_nul)
                # not held while the next batch is read, so that the consumer can let it go
                columns = rows = None
            if batch is None:
                return

    # -- exact ----------------------------------------------------------------------------------

    def _exact(self) -> Iterator[RawBatch]:
        text = io.TextIOWrapper(io.BufferedReader(self.stream, 1 << 20), encoding="utf-8", newline="")
        reader = csv.reader(text, delimiter=self.delimiter, strict=False)
        row = 0
        width = 0
        numbers: list[int] = []
        records: list[list[str]] = []
        ragged: list[tuple[int, list[str]]] = []
        try:
            for record in reader:
                row += 1
                if not self.header:
                    if record and any(cell.strip() for cell in record):
                        self.header, self.header_row, width = record, row, len(record)
                    continue
                if len(record) != width:
                    if not record:
                        continue  # a blank line
                    if len(record) > width and not any(record[width:]):
                        record = record[:width]  # a trailing delimiter: nothing lost
                    else:
                        ragged.append((row, record))
                        continue
                numbers.append(row)
                records.append(record)
                if len(records) + len(ragged) >= self.batch_rows:
                    yield self._batch(numbers, records, ragged, width)
                    numbers, records, ragged = [], [], []
        except csv.Error as exc:
            raise UploadFormatError(f"{self.name}: row {row + 1}: {exc}") from None
        if not self.header:
            raise UploadFormatError(f"{self.name}: the file has no header row (it is empty)")
        if numbers or ragged:
            yield self._batch(numbers, records, ragged, width)

    def _batch(self, numbers, records, ragged, width) -> RawBatch:
        columns = list(zip(*records)) if records else [()] * width
        return RawBatch(
            pa.array(numbers, pa.int64()),
            [pa.array(c, pa.string()) for c in columns],
            ragged,
            self.stream.bytes_read,
            self.stream.saw_nul,
        )


def unclosed_quote(cells: list[str]) -> bool:
    """Whether a ragged last row looks like a quoted field left open to the end of the file."""
    return bool(cells) and ("\n" in cells[-1] or "\r" in cells[-1])

"""Records of an input file in chunks of `chunk_rows`, whatever the file's size.

Every format yields the same thing: `Chunk`s of consecutive records (dicts), chunk k
holding rows [k * chunk_rows, (k + 1) * chunk_rows) of the file, so that a chunk's rows
are the same on every read of the same file (output keys depend on it). Memory is one
chunk plus a read buffer.

- CSV: a header row, then rows of as many fields (UTF-8, a BOM allowed). Values stay
  strings: CSV has no types, and a type guessed from one chunk could differ in the next.
- NDJSON: one object per line; blank lines are skipped.
- JSON: a top-level array of objects, streamed item by item with the standard library's C
  decoder (`raw_decode` at a position in a bounded text buffer): never loaded whole. A
  `.json` file that starts with `{` is read as NDJSON.
- Parquet: record batches (`iter_batches`), regrouped to `chunk_rows`; the batch is kept
  so the enriched output keeps the input's column types.

gzip (`.gz`, or any file whose first bytes are gzip's magic) is decompressed on the fly.
A malformed file raises `InputError` naming the file, the position (line, column, item or
row) and the problem.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

import pyarrow as pa

from engine.enrichment.gil import PIECE_ROWS, Pause, no_pause
from engine.enrichment.jsoncodec import error_position, loads
from engine.enrichment.source import CSV, JSON, NDJSON, PARQUET

if TYPE_CHECKING:
    import pyarrow.parquet as pq

_READ = 1 << 20  # bytes (or characters) per read
_SPACE = re.compile(r"[ \t\r\n]*")
_GZIP_MAGIC = b"\x1f\x8b"


class InputError(ValueError):
    """A record that cannot be read: the file, where in it, and what is wrong."""

    def __init__(self, name: str, position: str, problem: str):
        super().__init__(f"{name}: {position}: {problem}")
        self.name, self.position, self.problem = name, position, problem


@dataclass
class Chunk:
    index: int
    first_row: int  # the file's 0-based row number of the chunk's first record
    _records: list[dict[str, Any]] | None = None
    table: pa.Table | None = None  # Parquet: the rows as read, with the file's schema

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.records_in_pieces(no_pause)

    def records_in_pieces(self, pause: Pause) -> list[dict[str, Any]]:
        """The records; from a Parquet table (made only for chunks that are sent) a slice of
        `PIECE_ROWS` rows at a time, with `pause()` between slices (gil.py): one `to_pylist`
        of the whole chunk holds the GIL for its whole length."""
        if self._records is None:
            if self.table is None:
                self._records = []
            else:
                records: list[dict[str, Any]] = []
                for start in range(0, self.table.num_rows, PIECE_ROWS):
                    if start:
                        pause()
                    records += self.table.slice(start, PIECE_ROWS).to_pylist()
                self._records = records
        return self._records

    @property
    def rows(self) -> int:
        return self.table.num_rows if self.table is not None else len(self._records or ())


class _CountingReader(io.RawIOBase):
    """The source's bytes, counted (progress), with a few already-read bytes put back first."""

    def __init__(self, source: BinaryIO, head: bytes = b""):
        self._source, self._head, self.count = source, head, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n], self._head = self._head[:n], self._head[n:]
        else:
            data = self._source.read(len(buffer))
            n = len(data)
            buffer[:n] = data
        self.count += n
        return n


@dataclass
class ChunkReader:
    """Iterate for chunks; `bytes_read` of the file so far (compressed bytes when gzip)."""

    stream: BinaryIO
    fmt: str
    name: str
    chunk_rows: int
    total_rows: int | None = None  # known up front for Parquet only
    pause: Pause = no_pause  # called every PIECE_ROWS records of a text format (gil.py)
    _counter: _CountingReader | None = field(default=None, repr=False)
    _parquet: pq.ParquetFile | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.chunk_rows < 1:
            raise ValueError("chunk_rows must be at least 1")
        if self.fmt == PARQUET:
            import pyarrow.parquet as pq  # not at the top: the code location loads this module in every run

            try:
                self._parquet = pq.ParquetFile(self.stream)
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputError(self.name, "footer", f"not a Parquet file ({exc})") from None
            self.total_rows = self._parquet.metadata.num_rows

    @property
    def bytes_read(self) -> int:
        if self._counter is not None:
            return self._counter.count
        try:
            return self.stream.tell()
        except (OSError, AttributeError):
            return 0

    def __iter__(self) -> Iterator[Chunk]:
        if self.fmt == PARQUET:
            yield from self._parquet_chunks()
            return
        records = self._text_records()
        index, batch = 0, []
        for record in records:
            batch.append(record)
            if len(batch) == self.chunk_rows:
                yield Chunk(index, index * self.chunk_rows, batch)
                index, batch = index + 1, []
            elif len(batch) % PIECE_ROWS == 0:
                self.pause()  # looked up each time: a failed run counts the rest without pauses
        if batch:
            yield Chunk(index, index * self.chunk_rows, batch)

    # -- text formats -----------------------------------------------------------------------

    def _binary(self) -> io.BufferedReader:
        head = self.stream.read(2)
        self._counter = _CountingReader(self.stream, head)
        raw = io.BufferedReader(self._counter, _READ)
        if head == _GZIP_MAGIC:
            return io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), _READ)
        return raw

    def _text_records(self) -> Iterator[dict]:
        binary = self._binary()
        if self.fmt == CSV:
            return self._csv(binary)
        if self.fmt == NDJSON:
            return self._ndjson(binary)
        if self.fmt == JSON:
            first = binary.peek(_READ)[:_READ].lstrip(b" \t\r\n\xef\xbb\xbf")[:1]
            return self._ndjson(binary) if first == b"{" else self._json_array(binary)
        raise ValueError(f"unknown input format {self.fmt!r}")

    def _csv(self, binary) -> Iterator[dict]:
        text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
        rows = csv.reader(text, strict=True)
        try:
            header = next(rows, None)
            if header is None:
                return
            if any(not name for name in header) or len(set(header)) != len(header):
                raise InputError(self.name, "line 1", f"the header needs distinct, non-empty column names: {header!r}")
            width = len(header)
            for row in rows:
                if not row:
                    continue  # a blank line
                if len(row) != width:
                    raise InputError(
                        self.name, f"line {rows.line_num}", f"{len(row)} fields where the header has {width}"
                    )
                yield dict(zip(header, row))
        except csv.Error as exc:
            raise InputError(self.name, f"line {rows.line_num}", f"malformed CSV ({exc})") from None
        except UnicodeDecodeError as exc:
            raise InputError(self.name, f"after line {rows.line_num}", f"not UTF-8 ({exc.reason})") from None

    def _ndjson(self, binary) -> Iterator[dict]:
        for number, line in enumerate(binary, 1):
            if number == 1 and line.startswith(codecs.BOM_UTF8):
                line = line[3:]
            try:
                record = loads(line)
            except ValueError:  # JSONDecodeError, and invalid UTF-8 from orjson
                if not line.strip():
                    continue  # a blank line (checked only here: most lines are records)
                problem, column = error_position(line)
                if problem.startswith("not UTF-8"):
                    raise InputError(self.name, f"line {number}", problem) from None
                raise InputError(self.name, f"line {number}, column {column}", f"invalid JSON ({problem})") from None
            if not isinstance(record, dict):
                raise InputError(self.name, f"line {number}", f"a JSON {type(record).__name__}, not an object")
            yield record

    def _json_array(self, binary) -> Iterator[dict]:
        """Items of a top-level array, one `raw_decode` each, from a bounded text buffer."""
        text = io.TextIOWrapper(binary, encoding="utf-8-sig")
        decode = json.JSONDecoder().raw_decode
        buf, pos, lines_before, column_before, eof, want = "", 0, 0, 0, False, _READ

        def fill() -> None:  # drop what was consumed, read more
            nonlocal buf, pos, lines_before, column_before, eof
            newlines = buf.count("\n", 0, pos)
            lines_before += newlines
            # characters of the buffer's first line that were dropped before it
            column_before = pos - buf.rfind("\n", 0, pos) - 1 if newlines else column_before + pos
            try:
                more = text.read(want)
            except UnicodeDecodeError as exc:
                raise InputError(self.name, where(len(buf)), f"not UTF-8 ({exc.reason})") from None
            buf, pos = buf[pos:] + more, 0
            eof = not more

        def where(p: int) -> str:
            newlines = buf.count("\n", 0, p)
            column = p - buf.rfind("\n", 0, p) if newlines else column_before + p + 1
            return f"line {lines_before + newlines + 1}, column {column}"

        def skip_space() -> None:
            nonlocal pos
            while True:
                pos = _SPACE.match(buf, pos).end()
                if pos < len(buf) or eof:
                    return
                fill()

        fill()
        skip_space()
        if pos >= len(buf):
            return  # an empty file: no records
        if buf[pos] != "[":
            raise InputError(self.name, where(pos), f"expected a JSON array or objects, found {buf[pos]!r}")
        pos += 1
        item = 0
        skip_space()
        if pos < len(buf) and buf[pos] == "]":
            pos += 1
        else:
            while True:
                skip_space()
                while True:
                    try:
                        record, end = decode(buf, pos)
                    except json.JSONDecodeError as exc:
                        if eof:
                            problem = f"invalid JSON ({exc.msg})" if exc.pos < len(buf) else "the file ends inside it"
                            raise InputError(self.name, f"item {item + 1} ({where(exc.pos)})", problem) from None
                        want = max(want, 2 * (len(buf) - pos))  # a large item: read in growing steps
                        fill()
                        continue
                    if end == len(buf) and not eof:  # a value cut at the buffer's end may go on
                        want = max(want, 2 * (len(buf) - pos))
                        fill()
                        continue
                    break
                if not isinstance(record, dict):
                    raise InputError(self.name, f"item {item + 1} ({where(pos)})", f"a JSON {type(record).__name__}, not an object")
                item += 1
                yield record
                pos = end
                skip_space()
                if pos >= len(buf):
                    raise InputError(self.name, f"after item {item}", "the file ends before the array's closing ]")
                if buf[pos] == "]":
                    pos += 1
                    break
                if buf[pos] != ",":
                    raise InputError(self.name, f"after item {item} ({where(pos)})", f"expected , or ], found {buf[pos]!r}")
                pos += 1
        skip_space()
        if pos < len(buf):
            raise InputError(self.name, where(pos), "content after the array's closing ]")

    # -- Parquet ----------------------------------------------------------------------------

    def _parquet_chunks(self) -> Iterator[Chunk]:
        index, pending, pending_rows = 0, [], 0
        try:
            for batch in self._parquet.iter_batches(batch_size=self.chunk_rows):
                pending.append(batch)
                pending_rows += batch.num_rows
                while pending_rows >= self.chunk_rows:  # regroup: batches stop at row groups
                    table = pa.Table.from_batches(pending)
                    yield Chunk(index, index * self.chunk_rows, table=table.slice(0, self.chunk_rows))
                    rest = table.slice(self.chunk_rows)
                    pending, pending_rows, index = rest.to_batches(), rest.num_rows, index + 1
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(self.name, f"row {index * self.chunk_rows + pending_rows + 1} or after", f"unreadable Parquet ({exc})") from None
        if pending_rows:
            yield Chunk(index, index * self.chunk_rows, table=pa.Table.from_batches(pending))


def read_chunks(stream: BinaryIO, fmt: str, name: str, chunk_rows: int, pause: Pause = no_pause) -> ChunkReader:
    return ChunkReader(stream, fmt, name, chunk_rows, pause=pause)

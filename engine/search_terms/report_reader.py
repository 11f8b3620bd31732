"""Stream a Search Terms report into Arrow batches in constant memory.

The report is one JSON object. Its small members (``reportSpecification`` and anything
unknown) are decoded with the standard library; the big array
``dataByDepartmentAndSearchTerm`` is cut into ranges of about ``chunk_bytes`` that end
after a ``}``, and worker threads scan them with the native scanner while the caller
writes the previous batches. A cut can land inside a string or a nested value; the scan
of that range then stops at the last whole element and the rest is scanned again joined
with the next range, so the cut never changes the result, only costs a re-scan.

Memory is bounded by ``chunk_bytes * (workers + 2)`` plus the caller's batch, whatever
the size of the report.
"""

from __future__ import annotations

import json
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import BinaryIO

import pyarrow as pa

from engine.search_terms import record_scanner as scanner
from engine.search_terms.groups import Groups
from engine.search_terms.records import DATA_KEY, REPORT_PERIOD, REPORT_TYPE, SPEC_KEY

_WS = b" \t\r\n"
_MAX_MEMBER_BYTES = 64 << 20  # a member other than the data array larger than this is not a report


class ReportError(ValueError):
    """The report cannot be read: names the file, the position and the problem."""

    def __init__(self, name: str, problem: str, byte_offset: int | None = None, record: int | None = None):
        where = []
        if byte_offset is not None:
            where.append(f"byte {byte_offset}")
        if record is not None:
            where.append(f"record {record}")
        position = f" at {', '.join(where)}" if where else ""
        super().__init__(f"{name}{position}: {problem}")
        self.name = name
        self.problem = problem
        self.byte_offset = byte_offset
        self.record = record


@dataclass(frozen=True)
class ReportSpec:
    report_type: str
    report_period: str
    week_start: date
    week_end: date
    marketplace_ids: tuple[str, ...]

    @property
    def marketplace_id(self) -> str:
        return ",".join(self.marketplace_ids)


@dataclass(frozen=True)
class Reject:
    record_index: int
    byte_offset: int
    field: str | None
    reason: str
    record: str

    def as_json(self) -> dict:
        return {
            "record_index": self.record_index,
            "byte_offset": self.byte_offset,
            "field": self.field,
            "reason": self.reason,
            "record": self.record,
        }


@dataclass
class Batch:
    table: pa.Table
    rejects: list[Reject]
    records: int  # array elements covered, accepted or not
    groups: Groups  # runs of rows with the same department and term
    inner_pivot: pa.Table | None = None  # top-3 rows of all groups but the first and last


@dataclass
class ReadStats:
    records: int = 0
    rows: int = 0
    rejects: int = 0
    bytes_read: int = 0
    rescans: int = 0
    spec: ReportSpec | None = None
    extra_members: list[str] = field(default_factory=list)


def parse_spec(name: str, value: object, byte_offset: int, expected_week: date | None) -> ReportSpec:
    """Validate ``reportSpecification``; raise ReportError naming what is wrong."""

    def fail(problem: str) -> ReportError:
        return ReportError(name, f"{SPEC_KEY}: {problem}", byte_offset)

    if not isinstance(value, dict):
        raise fail("expected an object")
    report_type = value.get("reportType")
    if report_type != REPORT_TYPE:
        raise fail(f"wrong report type {report_type!r}, expected {REPORT_TYPE!r}")
    options = value.get("reportOptions") or {}
    period = options.get("reportPeriod") if isinstance(options, dict) else None
    if period != REPORT_PERIOD:
        raise fail(f"wrong report period {period!r}, expected {REPORT_PERIOD!r} (weekly reports only)")
    try:
        start = date.fromisoformat(str(value.get("dataStartTime"))[:10])
        end = date.fromisoformat(str(value.get("dataEndTime"))[:10])
    except ValueError:
        raise fail(
            f"dataStartTime {value.get('dataStartTime')!r} / dataEndTime {value.get('dataEndTime')!r} "
            "are not ISO dates"
        ) from None
    if start.weekday() != 6 or end != start + timedelta(days=6):
        raise fail(f"{start}..{end} is not a Sunday-to-Saturday week")
    if expected_week is not None and start != expected_week:
        raise fail(f"the report covers the week of {start}, but the partition is the week of {expected_week}")
    marketplaces = value.get("marketplaceIds")
    if not isinstance(marketplaces, list) or not marketplaces or not all(isinstance(m, str) for m in marketplaces):
        raise fail(f"marketplaceIds {marketplaces!r} is not a non-empty list of strings")
    return ReportSpec(report_type, period, start, end, tuple(marketplaces))


def _last_close_brace(data: pa.Buffer) -> int:
    """Index of the last '}' in data, or -1.

    Searched backwards in 4 KB blocks: a record ends every few hundred bytes, so the last
    block almost always holds one, and the range itself is never copied."""
    view = memoryview(data)
    try:
        end = data.size  # a resized buffer's view still spans its old capacity
        while end > 0:
            start = max(0, end - 4096)
            found = bytes(view[start:end]).rfind(b"}")
            if found >= 0:
                return start + found
            end = start
        return -1
    finally:
        view.release()


class _Source:
    """The decompressed byte stream with the absolute offset of what it has handed out."""

    def __init__(self, stream: BinaryIO, name: str):
        self.name = name
        self.offset = 0  # decompressed bytes handed out
        head = b""
        while len(head) < 2:  # a pipe or socket may hand out one byte at a time
            more = stream.read(2 - len(head))
            if not more:
                break
            head += more
        self.raw_offset = len(head)  # bytes taken from the stream
        self._raw = stream
        self.compressed = head == b"\x1f\x8b"  # gzip is told by its magic bytes, never by the name
        self._inflate = zlib.decompressobj(wbits=31) if self.compressed else None
        self._pending = self._inflate.decompress(head) if self._inflate else head

    def read(self, size: int) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            if len(data) < size:
                data += self._read_more(size - len(data))
        else:
            data = self._read_more(size)
        self.offset += len(data)
        return data

    def read_after(self, prefix: bytes, size: int) -> pa.Buffer:
        """prefix followed by up to `size` more bytes of the stream, in one new buffer.

        Reads straight into an Arrow buffer (not zeroed first) where the stream allows it:
        joining a range's leftover bytes to a separately read block copied every byte of the
        report once more, and a zeroed bytearray wrote every byte once more."""
        buf = pa.allocate_buffer(len(prefix) + size, resizable=True)
        view = memoryview(buf).cast("B")
        view[: len(prefix)] = prefix
        filled = len(prefix)
        readinto = getattr(self._raw, "readinto", None)
        if self._inflate is None and not self._pending and readinto is not None:
            while filled < len(view):
                n = readinto(view[filled:])
                if not n:
                    break
                filled += n
            self.raw_offset += filled - len(prefix)
            self.offset += filled - len(prefix)
        else:
            data = self.read(size)
            view[filled : filled + len(data)] = data
            filled += len(data)
        view.release()
        buf.resize(filled, shrink_to_fit=False)
        return buf

    def _read_more(self, size: int) -> bytes:
        if self._inflate is None:
            data = self._raw.read(size)
            self.raw_offset += len(data)
            return data
        out = []
        got = 0
        while got < size:
            if self._inflate.eof:
                if self._inflate.unused_data.strip(b"\x00"):
                    # concatenated gzip members are legal: start the next one
                    rest = self._inflate.unused_data
                    self._inflate = zlib.decompressobj(wbits=31)
                    piece = self._decompress(rest, size - got)
                else:
                    break
            else:
                compressed = self._inflate.unconsumed_tail
                if not compressed:
                    compressed = self._raw.read(1 << 20)
                    self.raw_offset += len(compressed)
                if not compressed:
                    raise ReportError(
                        self.name,
                        "corrupt gzip stream: the compressed data ends before the end-of-stream marker",
                        self.offset + got,
                    )
                piece = self._decompress(compressed, size - got)
            out.append(piece)
            got += len(piece)
        return b"".join(out)

    def _decompress(self, data: bytes, limit: int) -> bytes:
        try:
            return self._inflate.decompress(data, limit)
        except zlib.error as exc:
            raise ReportError(self.name, f"corrupt gzip stream: {exc}", self.offset) from None


class ReportReader:
    """Iterate a report's rows as Arrow batches; ``stats`` holds counts and the spec.

    Errors in the document raise ReportError. Row-level problems become ``Reject``s.
    ``expected_week``, when given, must be the report's week.
    """

    def __init__(
        self,
        stream: BinaryIO,
        name: str,
        *,
        expected_week: date | None = None,
        chunk_bytes: int = 1 << 20,
        workers: int = 2,
        max_rows_per_scan: int = 65536,
        pivot_in_workers: bool = False,
    ):
        self.name = name
        self.expected_week = expected_week
        self.chunk_bytes = chunk_bytes
        self.workers = max(1, workers)
        self.max_rows = max_rows_per_scan
        # Let the scanner also pivot each batch's inner groups, on the scanning threads.
        self.pivot_in_workers = pivot_in_workers
        self.stats = ReadStats()
        self._src = _Source(stream, name)
        self._buf = b""  # top-level bytes not yet parsed
        self._buf_offset = 0  # absolute offset of _buf[0]
        self._eof = False

    # -- top level -------------------------------------------------------------------

    def _fill(self, need: int) -> bool:
        """Make _buf hold at least `need` bytes if the stream has them."""
        while len(self._buf) < need and not self._eof:
            data = self._src.read(max(need - len(self._buf), 1 << 16))
            if not data:
                self._eof = True
            self._buf += data
        return len(self._buf) >= need

    def _skip_ws(self) -> None:
        while True:
            stripped = self._buf.lstrip(_WS)
            self._buf_offset += len(self._buf) - len(stripped)
            self._buf = stripped
            if self._buf or not self._fill(1):
                return

    def _expect(self, what: bytes, problem: str) -> None:
        self._skip_ws()
        if not self._buf:
            raise ReportError(self.name, f"truncated: the file ends where {problem}", self._buf_offset)
        if not self._buf.startswith(what):
            raise ReportError(
                self.name, f"invalid JSON: {problem}, found {self._buf[:20]!r}", self._buf_offset
            )
        self._consume(len(what))

    def _consume(self, n: int) -> None:
        self._buf = self._buf[n:]
        self._buf_offset += n

    def _decode_value(self) -> object:
        """Decode one small JSON value at the front of _buf, reading more as needed."""
        need = max(len(self._buf), 1 << 16)
        while True:
            self._fill(need)
            try:
                text = self._buf.decode("utf-8")
            except UnicodeDecodeError as exc:
                if exc.end < len(self._buf) - 4 or self._eof:  # not just a character cut at the end
                    raise ReportError(self.name, f"invalid UTF-8: {exc.reason}", self._buf_offset + exc.start) from None
                text = self._buf[: exc.start].decode("utf-8")
            try:
                value, end = json.JSONDecoder().raw_decode(text)
            except json.JSONDecodeError as exc:
                if self._eof:
                    if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string"):
                        raise ReportError(
                            self.name, f"truncated: the file ends inside a top-level member ({exc.msg})",
                            self._buf_offset + len(self._buf),
                        ) from None
                    pos = self._buf_offset + len(text[: exc.pos].encode())
                    raise ReportError(self.name, f"invalid JSON: {exc.msg}", pos) from None
                if len(self._buf) > _MAX_MEMBER_BYTES:
                    raise ReportError(self.name, "a top-level member is too large to be report metadata", self._buf_offset) from None
                need = len(self._buf) * 2
                continue
            if end == len(text) and not self._eof and isinstance(value, (int, float)):
                need = len(self._buf) + 1  # a number at the end of the buffer may go on
                continue
            self._consume(len(text[:end].encode()))
            return value

    def _read_key(self) -> str:
        self._skip_ws()
        if not self._buf.startswith(b'"'):
            if not self._buf:
                raise ReportError(self.name, "truncated: the file ends inside the top-level object", self._buf_offset)
            raise ReportError(self.name, f"invalid JSON: expected a quoted key, found {self._buf[:20]!r}", self._buf_offset)
        return self._decode_value()  # type: ignore[return-value]

    def _member_keys(self) -> Iterator[str]:
        """Each top-level key, with the reader positioned at its value, which the caller consumes."""
        self._skip_ws()
        if self._buf.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark, as json.loads allows
            self._consume(3)
        self._expect(b"{", "the report must be a JSON object")
        self._skip_ws()
        if self._buf.startswith(b"}"):
            self._consume(1)
            return
        while True:
            key = self._read_key()
            self._expect(b":", "expected ':' after a key")
            self._skip_ws()
            yield key
            self._skip_ws()
            if self._buf.startswith(b","):
                self._consume(1)
                continue
            self._expect(b"}", "expected ',' or '}' in the top-level object")
            return

    def _small_member(self, key: str) -> None:
        offset = self._buf_offset
        value = self._decode_value()
        if key == SPEC_KEY:
            self.stats.spec = parse_spec(self.name, value, offset, self.expected_week)
        else:
            self.stats.extra_members.append(key)

    def peek_spec(self) -> ReportSpec | None:
        """Read only the members before the data array; the spec if it is among them.

        Lets a caller reject a wrong report after reading its first bytes. Use a new
        reader to read the rows."""
        for key in self._member_keys():
            if key == DATA_KEY:
                return None
            self._small_member(key)
            if self.stats.spec is not None:
                return self.stats.spec
        return None

    def __iter__(self) -> Iterator[Batch]:
        seen_data = False
        for key in self._member_keys():
            if key == DATA_KEY:
                if seen_data:
                    raise ReportError(self.name, f"{DATA_KEY} appears twice", self._buf_offset)
                seen_data = True
                self._expect(b"[", f"{DATA_KEY} must be an array")
                yield from self._scan_array()
            else:
                self._small_member(key)
        self._skip_ws()
        if self._buf:
            raise ReportError(self.name, "unexpected data after the end of the report", self._buf_offset)
        self.stats.bytes_read = self._src.offset
        if self.stats.spec is None:
            raise ReportError(self.name, f"the report has no {SPEC_KEY}")
        if not seen_data:
            raise ReportError(self.name, f"the report has no {DATA_KEY} array")

    @property
    def compressed(self) -> bool:
        """Whether the stream is gzip (told from its first bytes)."""
        return self._src.compressed

    @property
    def source_bytes_read(self) -> int:
        """Bytes taken from the underlying stream so far (compressed bytes for gzip)."""
        return self._src.raw_offset

    # -- the data array --------------------------------------------------------------

    def _ranges(self) -> Iterator[tuple[pa.Buffer, int]]:
        """Byte ranges of the array that end just after a '}', with their offsets.

        Bytes read past the last '}' wait in ``_tail`` for the next range."""
        self._tail, self._tail_offset = self._buf, self._buf_offset
        self._buf = b""
        while True:
            data = pa.py_buffer(self._tail) if self._eof else self._src.read_after(self._tail, self.chunk_bytes)
            if data.size == len(self._tail):
                self._eof = True
                if self._tail:
                    self._tail = b""
                    yield data, self._tail_offset
                return
            cut = _last_close_brace(data) + 1
            if cut == 0:
                self._tail = data.to_pybytes()
                continue
            offset = self._tail_offset
            self._tail, self._tail_offset = data.slice(cut).to_pybytes(), offset + cut
            yield data.slice(0, cut), offset  # a slice: no copy of the range

    def _scan_range(self, data: pa.Buffer, expect_comma: bool) -> list[scanner.ScanResult]:
        """Scan a whole range (several calls when it holds more than max_rows elements)."""
        results = []
        start = 0
        while True:
            result = scanner.scan(data, start, expect_comma, self.max_rows, pivot=self.pivot_in_workers)
            results.append(result)
            if result.status != scanner.ROWS_FULL:
                return results
            start, expect_comma = result.consumed, True

    def _scan_array(self) -> Iterator[Batch]:
        # Each entry: the range, its offset, and its scan, started on the guess that the
        # range begins just after an element (true for all but the first when cuts are right).
        in_flight: deque[tuple[pa.Buffer, int, Future]] = deque()
        ranges = self._ranges()
        carry = b""  # bytes after the last whole element, when a cut fell inside one
        carry_offset = 0
        carry_expect_comma = False
        with ThreadPoolExecutor(self.workers, thread_name_prefix="scan") as pool:

            def submit_next() -> None:
                nxt = next(ranges, None)
                if nxt is not None:
                    data, offset = nxt
                    guess = offset != self._array_offset
                    in_flight.append((data, offset, pool.submit(self._scan_range, data, guess)))

            self._array_offset = self._buf_offset
            # A few ranges more than workers: a worker never waits for the main thread to
            # hand it the next one while the main thread is busy writing.
            for _ in range(self.workers + 2):
                submit_next()
            while in_flight:
                data, offset, future = in_flight.popleft()
                submit_next()
                if carry:
                    future.cancel()  # its guess was wrong: scan again joined to the carry
                    data, offset = pa.py_buffer(carry + data.to_pybytes()), carry_offset
                    expect_comma = carry_expect_comma
                    results = self._scan_range(data, expect_comma)
                    self.stats.rescans += 1
                else:
                    expect_comma = offset != self._array_offset
                    results = future.result()
                for result in results:
                    yield self._batch(result, data, offset)
                last = results[-1]
                if last.status == scanner.SYNTAX:
                    problem = scanner.SYNTAX_ERRORS.get(last.error_code, "invalid JSON")
                    raise ReportError(
                        self.name, f"invalid JSON in {DATA_KEY}: {problem}", offset + last.error_pos, self.stats.records
                    )
                if last.status == scanner.ARRAY_END:
                    # Hand what follows the array back to the top-level parser.
                    rest = [data.slice(last.consumed).to_pybytes()]
                    for later, _, later_future in in_flight:
                        later_future.cancel()
                        rest.append(later.to_pybytes())
                    in_flight.clear()
                    rest.append(self._tail)
                    self._buf, self._buf_offset = b"".join(rest), offset + last.consumed
                    return
                if last.status == scanner.INCOMPLETE:
                    carry = data.slice(last.consumed).to_pybytes()
                    carry_offset = offset + last.consumed
                    carry_expect_comma = expect_comma or any(r.n_elements for r in results)
                else:
                    carry = b""
        raise ReportError(
            self.name,
            f"truncated: the file ends inside {DATA_KEY} after {self.stats.records} records",
            self._src.offset,
            self.stats.records,
        )

    def _batch(self, result: scanner.ScanResult, data: pa.Buffer, offset: int) -> Batch:
        base = self.stats.records
        rejects = []
        if result.rejects:
            for r in result.rejects:
                text = data.slice(r.start, r.end - r.start).to_pybytes().decode("utf-8", errors="replace")
                rejects.append(
                    Reject(base + r.element, offset + r.start, r.field, describe_reject(r.reason, r.field, text), text)
                )
        self.stats.records += result.n_elements
        self.stats.rows += result.table.num_rows
        self.stats.rejects += len(rejects)
        return Batch(result.table, rejects, result.n_elements, result.groups, result.inner_pivot)


_EXPECTED = {
    "departmentName": "a string",
    "searchTerm": "a string",
    "clickedAsin": "a string",
    "clickedItemName": "a string or null",
    "searchFrequencyRank": "an integer",
    "clickShareRank": "an integer",
    "clickShare": "a number",
    "conversionShare": "a number",
}


def describe_reject(reason: int, field_name: str | None, record_text: str) -> str:
    """A reader's sentence for a rejected record (rare: decodes the record again)."""
    if reason == scanner.NOT_OBJECT:
        return "the element is not a JSON object"
    if reason == scanner.LONE_SURROGATE:
        return f"{field_name} holds a lone UTF-16 surrogate escape, which is not text"
    if reason == scanner.MISSING:
        return f"missing required field {field_name}"
    try:
        value = json.loads(record_text).get(field_name)
    except ValueError:
        value = None
    if reason == scanner.WRONG_TYPE:
        return f"{field_name} must be {_EXPECTED[field_name]}, got {type(value).__name__} {value!r:.60}"
    if reason == scanner.OUT_OF_RANGE:
        if field_name in ("clickShare", "conversionShare"):
            return f"{field_name} {value!r} is outside 0–1"
        return f"{field_name} {value!r} must be an integer of at least 1"
    return f"rule {reason} broken by {field_name}"

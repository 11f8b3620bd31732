"""The tests' own JSON writer for Search Terms reports.

Unlike ``json.dumps`` it lets a test decide the whitespace between tokens, the order of
keys, how every string is escaped and how every number is spelled, so that the reader
under test meets documents that ``json.dumps`` never writes. ``json.loads`` of the bytes
is always the oracle: the writer only has to produce valid JSON.

Formatting choices come from a ``random.Random`` (in the property tests, one drawn by
Hypothesis, so examples replay and shrink); content comes from the caller.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import struct
from dataclasses import dataclass, field
from datetime import date, timedelta

import pyarrow as pa

from engine.search_terms.records import DATA_KEY, PARSED_SCHEMA, REPORT_PERIOD, REPORT_TYPE, SOURCE_NAMES, SPEC_KEY
from engine.search_terms.report_reader import ReportReader

WEEK = date(2024, 1, 7)  # a Sunday
# ReportReader reads the top level 64 KiB at a time and may hold up to two such reads
# ahead of the array; whitespace longer than that inside the array makes the elements
# after it arrive in ranges of chunk_bytes, so that range cuts fall inside them.
PAD = 140_000
FIELDS = tuple(SOURCE_NAMES.values())  # JSON names, in the column order of PARSED_SCHEMA
SHARE_FIELDS = ("clickShare", "conversionShare")
RANK_FIELDS = ("searchFrequencyRank", "clickShareRank")
STRING_FIELDS = ("departmentName", "searchTerm", "clickedAsin")

_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "/": "\\/",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


@dataclass(frozen=True)
class Raw:
    """JSON text written as is (a number in a chosen spelling)."""

    text: str


@dataclass
class Obj:
    """An object written with its members in exactly this order (repeats allowed)."""

    pairs: list[tuple[str, object]]
    key_max_escapes: int | None = None  # limit on escaped characters per key


@dataclass
class Style:
    """How a document is formatted."""

    rnd: random.Random
    escape_rate: float = 0.2  # chance that a character that may be written raw is escaped
    ws_rate: float = 0.3  # chance of whitespace at each place it may go
    shuffle: bool = True  # shuffle the keys of plain dicts
    pad_after: int | None = None  # put a long run of whitespace after this element of the data array
    pad_bytes: int = PAD


def _u(cp: int, rnd: random.Random) -> str:
    text = f"{cp:04x}"
    return "\\u" + (text.upper() if rnd.random() < 0.5 else text)


def write_string(s: str, style: Style, max_escapes: int | None = None) -> str:
    rnd = style.rnd
    out = ['"']
    escapes = 0
    for ch in s:
        cp = ord(ch)
        must = ch in '"\\' or cp < 0x20
        if not must and (rnd.random() >= style.escape_rate or (max_escapes is not None and escapes >= max_escapes)):
            out.append(ch)
            continue
        escapes += 1
        if ch in _SHORT_ESCAPES and rnd.random() < 0.6:
            out.append(_SHORT_ESCAPES[ch])
        elif cp >= 0x10000:
            v = cp - 0x10000
            out.append(_u(0xD800 + (v >> 10), rnd) + _u(0xDC00 + (v & 0x3FF), rnd))
        else:
            out.append(_u(cp, rnd))
    out.append('"')
    return "".join(out)


def ws(style: Style) -> str:
    rnd = style.rnd
    if rnd.random() >= style.ws_rate:
        return ""
    return "".join(rnd.choice(" \t\r\n") for _ in range(rnd.choice((1, 1, 2, 3, 8))))


def write_value(value: object, style: Style, *, data_array: bool = False) -> str:
    if isinstance(value, Raw):
        return value.text
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return write_string(value, style)
    if isinstance(value, dict):
        pairs = list(value.items())
        if style.shuffle:
            style.rnd.shuffle(pairs)
        value = Obj(pairs)
    if isinstance(value, Obj):
        if not value.pairs:
            return "{" + ws(style) + "}"
        parts = []
        for key, member in value.pairs:
            parts.append(
                ws(style)
                + write_string(key, style, value.key_max_escapes)
                + ws(style)
                + ":"
                + ws(style)
                + write_value(member, style)
                + ws(style)
            )
        return "{" + ",".join(parts) + "}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[" + ws(style) + "]"
        parts = []
        for i, element in enumerate(value):
            text = ws(style) + write_value(element, style) + ws(style)
            if data_array and style.pad_after == i:
                text += " " * style.pad_bytes
            parts.append(text)
        if data_array and style.pad_after == -1:
            parts[0] = " " * style.pad_bytes + parts[0]
        return "[" + ",".join(parts) + "]"
    raise TypeError(f"cannot write {value!r}")


def spec(week_start: date = WEEK, **overrides) -> dict:
    value = {
        "reportType": REPORT_TYPE,
        "reportOptions": {"reportPeriod": REPORT_PERIOD},
        "dataStartTime": week_start.isoformat(),
        "dataEndTime": (week_start + timedelta(days=6)).isoformat(),
        "marketplaceIds": ["ATVPDKIKX0DER"],
    }
    value.update(overrides)
    return value


def good_record(i: int = 0, **overrides) -> dict:
    value = {
        "departmentName": "Amazon.com",
        "searchTerm": f"term {i}",
        "searchFrequencyRank": i + 1,
        "clickedAsin": f"B0{i:08d}",
        "clickedItemName": f"item {i}",
        "clickShareRank": 1,
        "clickShare": 0.25,
        "conversionShare": 0.125,
    }
    value.update(overrides)
    return value


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def report_bytes(records_text: list[str], spec_value: object = None, *, spec_first: bool = True) -> bytes:
    """A compact report whose array elements are the given JSON texts, one per line."""
    spec_text = compact(spec() if spec_value is None else spec_value)
    data_text = "[\n" + ",\n".join(records_text) + "\n]"
    members = [f'"{SPEC_KEY}":{spec_text}', f'"{DATA_KEY}":{data_text}']
    if not spec_first:
        members.reverse()
    return ("{" + ",".join(members) + "}\n").encode()


def element_offsets(doc: bytes) -> list[int]:
    """Byte offsets of the elements of a document made by report_bytes (one per line)."""
    start = doc.index(b"[\n") + 2
    offsets = []
    pos = start
    for line in doc[start:].split(b"\n"):
        if line in (b"]", b"]}"):
            break
        offsets.append(pos)
        pos += len(line) + 1
    return offsets


class ShortReads(io.RawIOBase):
    """A raw stream that hands out fewer bytes than asked, as a pipe or socket may: at most
    sizes[0] bytes on the first read, sizes[1] on the second, and so on, cycling."""

    def __init__(self, data: bytes, *sizes: int):
        assert sizes and all(size >= 1 for size in sizes)
        self._data = data
        self._pos = 0
        self._sizes = sizes
        self._calls = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        size = self._sizes[self._calls % len(self._sizes)]
        self._calls += 1
        n = size if n is None or n < 0 else min(n, size)
        out = self._data[self._pos : self._pos + n]
        self._pos += len(out)
        return out

    def readinto(self, b) -> int:  # pragma: no cover - RawIOBase protocol
        out = self.read(len(b))
        b[: len(out)] = out
        return len(out)


@dataclass
class ReadResult:
    table: pa.Table
    rejects: list = field(default_factory=list)
    batch_records: int = 0
    stats: object = None


def read_all(data: bytes | io.RawIOBase, name: str = "report.json", **kwargs) -> ReadResult:
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    reader = ReportReader(stream, name, **kwargs)
    tables, rejects, n = [], [], 0
    for batch in reader:
        assert batch.table.schema == PARSED_SCHEMA
        tables.append(batch.table)
        rejects.extend(batch.rejects)
        n += batch.records
    table = pa.concat_tables(tables) if tables else PARSED_SCHEMA.empty_table()
    return ReadResult(table, rejects, n, reader.stats)


def _float_bits(x: float) -> bytes:
    return struct.pack("<d", x)


def row_key(row: tuple) -> tuple:
    """A row with floats replaced by their bits, so that equality is bit-for-bit."""
    return tuple(_float_bits(v) if isinstance(v, float) else v for v in row)


def table_rows(table: pa.Table) -> list[tuple]:
    columns = [table.column(name).to_pylist() for name in PARSED_SCHEMA.names]
    return [row_key(row) for row in zip(*columns)]


def expected_rows(parsed_records: list[dict]) -> list[tuple]:
    """What the reader must produce for records that keep every row rule (json.loads's view)."""
    rows = []
    for rec in parsed_records:
        for name in STRING_FIELDS:
            assert isinstance(rec[name], str), f"test generator bug: {name} = {rec[name]!r}"
        assert rec.get("clickedItemName") is None or isinstance(rec["clickedItemName"], str)
        for name in RANK_FIELDS:
            assert type(rec[name]) is int and 1 <= rec[name] < 2**63, f"test generator bug: {name} = {rec[name]!r}"
        for name in SHARE_FIELDS:
            assert type(rec[name]) in (int, float) and 0 <= rec[name] <= 1, f"test generator bug: {name} = {rec[name]!r}"
        rows.append(
            row_key(
                (
                    rec["departmentName"],
                    rec["searchTerm"],
                    rec["clickedAsin"],
                    rec.get("clickedItemName"),
                    rec["searchFrequencyRank"],
                    rec["clickShareRank"],
                    float(rec["clickShare"]),
                    float(rec["conversionShare"]),
                )
            )
        )
    return rows


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)

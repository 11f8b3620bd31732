"""Python side of the native record scanner (record_scanner.c).

The C source is compiled on first use (engine/native.py). ctypes releases the GIL for the
duration of each call, which is what lets several threads scan at once.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from engine import native
from engine.native import NativeBuildError
from engine.search_terms.groups import Groups, InnerCounts
from engine.search_terms.records import PARSED_SCHEMA

SOURCE = Path(__file__).with_name("record_scanner.c")

# Outcome of one call (mirrors the enum in the C source).
CHUNK_END, ARRAY_END, INCOMPLETE, SYNTAX, ROWS_FULL = range(5)

SYNTAX_ERRORS = {
    1: "unexpected character",
    2: "invalid escape sequence in a string",
    3: "unescaped control character in a string",
    4: "invalid UTF-8 in a string",
    5: "invalid number",
    6: "values nested too deeply",
    7: "invalid literal (expected true, false or null)",
    8: "expected a quoted key",
    9: "expected ':' after a key",
    10: "expected ',' or a closing bracket",
}

# Row rules, and the JSON field each rule's field number names.
MISSING, WRONG_TYPE, OUT_OF_RANGE, LONE_SURROGATE, NOT_OBJECT = range(1, 6)
SOURCE_FIELDS = (
    "departmentName",
    "searchTerm",
    "clickedAsin",
    "clickedItemName",
    "searchFrequencyRank",
    "clickShareRank",
    "clickShare",
    "conversionShare",
)
N_STRINGS = 4

_i32p = ctypes.POINTER(ctypes.c_int32)
_i64p = ctypes.POINTER(ctypes.c_int64)
_u8p = ctypes.POINTER(ctypes.c_uint8)
_f64p = ctypes.POINTER(ctypes.c_double)


class _Pivot(ctypes.Structure):
    _fields_ = [
        ("offsets", ctypes.c_void_p * 8),
        ("data", ctypes.c_void_p * 8),
        ("valid", ctypes.c_void_p * 6),
        ("freq", ctypes.c_void_p),
        ("click", ctypes.c_void_p * 3),
        ("conversion", ctypes.c_void_p * 3),
        ("total_click", ctypes.c_void_p),
        ("total_conversion", ctypes.c_void_p),
        ("n", ctypes.c_int64),
    ]


class _Scan(ctypes.Structure):
    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("len", ctypes.c_int64),
        ("expect_comma", ctypes.c_int32),
        ("pad0", ctypes.c_int32),
        ("max_rows", ctypes.c_int64),
        ("offsets", ctypes.c_void_p * N_STRINGS),
        ("data", ctypes.c_void_p * N_STRINGS),
        ("item_name_valid", ctypes.c_void_p),
        ("freq_rank", ctypes.c_void_p),
        ("click_rank", ctypes.c_void_p),
        ("click_share", ctypes.c_void_p),
        ("conversion_share", ctypes.c_void_p),
        ("rej_element", ctypes.c_void_p),
        ("rej_start", ctypes.c_void_p),
        ("rej_end", ctypes.c_void_p),
        ("rej_reason", ctypes.c_void_p),
        ("rej_field", ctypes.c_void_p),
        ("grp_first", ctypes.c_void_p),
        ("grp_size", ctypes.c_void_p),
        ("grp_pick", ctypes.c_void_p * 3),
        ("grp_min_freq", ctypes.c_void_p),
        ("grp_max_freq", ctypes.c_void_p),
        ("grp_ranked", ctypes.c_void_p),
        ("grp_hash", ctypes.c_void_p),
        ("pivot", ctypes.POINTER(_Pivot)),
        ("n_rows", ctypes.c_int64),
        ("n_elements", ctypes.c_int64),
        ("n_rejects", ctypes.c_int64),
        ("n_groups", ctypes.c_int64),
        ("inner_max_size", ctypes.c_int64),
        ("inner_over_three", ctypes.c_int64),
        ("inner_duplicate_ranks", ctypes.c_int64),
        ("inner_mixed_freq", ctypes.c_int64),
        ("consumed", ctypes.c_int64),
        ("err_pos", ctypes.c_int64),
        ("status", ctypes.c_int32),
        ("err_code", ctypes.c_int32),
    ]


ScannerBuildError = NativeBuildError  # the name tests and callers know


def build_library() -> Path:
    """Compile the scanner unless a build of this exact source is cached; return its path."""
    return native.build_library(SOURCE, "JSON record scanner")


def _declare(lib: ctypes.CDLL) -> None:
    lib.scan_records.argtypes = [ctypes.POINTER(_Scan)]
    lib.scan_records.restype = ctypes.c_int
    lib.key_hashes.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int64, ctypes.c_void_p]
    lib.key_hashes.restype = None
    if lib.scanner_struct_size() != ctypes.sizeof(_Scan):
        raise ScannerBuildError("record_scanner.c and record_scanner.py disagree on the struct")


def library() -> ctypes.CDLL:
    return native.load_library(SOURCE, "JSON record scanner", _declare)


@dataclass(frozen=True)
class RawReject:
    element: int  # index of the array element, counted from the first element of this call
    start: int  # byte range of the element in the scanned buffer
    end: int
    reason: int
    field: str | None


@dataclass
class ScanResult:
    """One call's output: rows as an Arrow table, rejected elements, and where it stopped."""

    table: pa.Table
    groups: Groups  # runs of rows with the same department and term
    rejects: list[RawReject]
    n_elements: int
    status: int
    consumed: int
    error_code: int = 0
    error_pos: int = -1
    inner_pivot: pa.Table | None = None  # top-3 rows of the inner groups, when asked for


class _Scratch:
    """Output space the C scanner writes into, kept per thread and reused for every call.

    Each call's results are then copied into Arrow buffers of exactly their size: sizing
    for the worst case (every string column as long as the input) on every call made the
    allocator hold on to several times the working set. The space is not zeroed, so the
    pages that no call ever writes never become resident."""

    def __init__(self) -> None:
        self.rows = 0
        self.length = 0

    def ensure(self, max_rows: int, length: int) -> None:
        if max_rows > self.rows:
            self.rows = max_rows
            self.offsets = [pa.allocate_buffer((max_rows + 1) * 4) for _ in range(N_STRINGS)]
            self.valid = pa.allocate_buffer((max_rows + 7) // 8)
            self.numbers = [pa.allocate_buffer(max_rows * 8) for _ in range(4)]
            self.rejects = [pa.allocate_buffer(max_rows * 8) for _ in range(5)]
            self.groups = [pa.allocate_buffer(max_rows * 8) for _ in range(9)]
            self.pivot_offsets = [pa.allocate_buffer((max_rows + 1) * 4) for _ in range(8)]
            self.pivot_valid = [pa.allocate_buffer((max_rows + 7) // 8) for _ in range(6)]
            self.pivot_numbers = [pa.allocate_buffer(max_rows * 8) for _ in range(9)]
        if length > self.length:
            self.length = max(length, 1)
            self.strings = [pa.allocate_buffer(self.length) for _ in range(N_STRINGS)]
            self.pivot_strings = [pa.allocate_buffer(self.length) for _ in range(8)]


_scratch = threading.local()


class _Packer:
    """Copies regions of the scratch space into one new Arrow buffer, sliced per column.

    One allocation for all the columns of a table instead of one each: fewer, larger
    blocks for the allocator to hand back. A slice keeps the whole buffer alive, so
    everything packed together must be released together."""

    def __init__(self) -> None:
        self._regions: list[tuple[int, int, int]] = []  # source address, size, offset
        self._size = 0

    def add(self, source: pa.Buffer, size: int) -> int:
        self._regions.append((source.address, size, self._size))
        self._size += (size + 63) & ~63  # Arrow's alignment
        return len(self._regions) - 1

    def pack(self) -> list[pa.Buffer]:
        out = pa.allocate_buffer(max(self._size, 64))
        base = out.address
        for address, size, offset in self._regions:
            if size:
                ctypes.memmove(base + offset, address, size)
        return [out.slice(offset, size) for _, size, offset in self._regions]


def _used(offsets: pa.Buffer, n: int) -> int:
    """Bytes of string data behind the first n values of an offsets buffer."""
    return int(np.frombuffer(offsets, dtype=np.int32, count=n + 1)[n])


def _pivot_struct(scratch: _Scratch) -> _Pivot:
    p = _Pivot()
    for o in range(8):
        p.offsets[o] = scratch.pivot_offsets[o].address
        p.data[o] = scratch.pivot_strings[o].address
    for v in range(6):
        p.valid[v] = scratch.pivot_valid[v].address
    numbers = [b.address for b in scratch.pivot_numbers]
    p.freq = numbers[0]
    for r in range(3):
        p.click[r], p.conversion[r] = numbers[1 + 2 * r], numbers[2 + 2 * r]
    p.total_click, p.total_conversion = numbers[7], numbers[8]
    return p


def _add_pivot(packer: _Packer, scratch: _Scratch, n: int) -> dict:
    """Register the C pivot's output regions; _pivot_table builds the table from them."""
    bitmap = (n + 7) // 8
    return {
        "offsets": [packer.add(scratch.pivot_offsets[o], (n + 1) * 4) for o in range(8)],
        "strings": [packer.add(scratch.pivot_strings[o], _used(scratch.pivot_offsets[o], n)) for o in range(8)],
        "valid": [packer.add(scratch.pivot_valid[v], bitmap) for v in range(6)],
        "numbers": [packer.add(scratch.pivot_numbers[i], n * 8) for i in range(9)],
    }


def _pivot_table(bufs: list[pa.Buffer], parts: dict, n: int) -> pa.Table:
    """The C pivot's output as a table of TOP3_CORE_SCHEMA."""
    from engine.search_terms.top3 import TOP3_CORE_SCHEMA

    def strings(o: int, valid: int | None) -> pa.Array:
        bitmap = bufs[parts["valid"][valid]] if valid is not None else None
        return pa.StringArray.from_buffers(
            n,
            bufs[parts["offsets"][o]],
            bufs[parts["strings"][o]],
            null_bitmap=bitmap,
            null_count=-1 if bitmap is not None else 0,
        )

    def numbers(i: int, type_: pa.DataType, valid: int | None = None) -> pa.Array:
        bitmap = bufs[parts["valid"][valid]] if valid is not None else None
        return pa.Array.from_buffers(
            type_, n, [bitmap, bufs[parts["numbers"][i]]], null_count=-1 if bitmap is not None else 0
        )

    columns = [strings(0, None), strings(1, None), numbers(0, pa.int64())]
    for r in range(3):
        columns += [
            strings(2 + 2 * r, 2 * r),
            strings(3 + 2 * r, 2 * r + 1),
            numbers(1 + 2 * r, pa.float64(), 2 * r),
            numbers(2 + 2 * r, pa.float64(), 2 * r),
        ]
    columns += [numbers(7, pa.float64()), numbers(8, pa.float64())]
    return pa.Table.from_arrays(columns, schema=TOP3_CORE_SCHEMA)


def scan(data: pa.Buffer, start: int, expect_comma: bool, max_rows: int, pivot: bool = False) -> ScanResult:
    """Scan data[start:] for at most max_rows array elements.

    With pivot, also make the top-3 rows of the call's inner groups (ScanResult.inner_pivot)."""
    lib = library()
    length = data.size - start
    scratch = getattr(_scratch, "buffers", None)
    if scratch is None:
        scratch = _scratch.buffers = _Scratch()
    scratch.ensure(max_rows, length)
    s = _Scan()
    s.buf = data.address + start
    s.len = length
    s.expect_comma = int(expect_comma)
    s.max_rows = max_rows
    for k in range(N_STRINGS):
        s.offsets[k] = scratch.offsets[k].address
        s.data[k] = scratch.strings[k].address
    s.item_name_valid = scratch.valid.address
    s.freq_rank, s.click_rank, s.click_share, s.conversion_share = (b.address for b in scratch.numbers)
    s.rej_element, s.rej_start, s.rej_end, s.rej_reason, s.rej_field = (b.address for b in scratch.rejects)
    g = [b.address for b in scratch.groups]
    s.grp_first, s.grp_size, s.grp_pick[0], s.grp_pick[1], s.grp_pick[2] = g[:5]
    s.grp_min_freq, s.grp_max_freq, s.grp_ranked, s.grp_hash = g[5:]
    pivot_struct = _pivot_struct(scratch) if pivot else None
    if pivot_struct is not None:
        s.pivot = ctypes.pointer(pivot_struct)
    lib.scan_records(ctypes.byref(s))

    n = s.n_rows
    packer = _Packer()
    offsets = [packer.add(scratch.offsets[k], (n + 1) * 4) for k in range(N_STRINGS)]
    strings = [packer.add(scratch.strings[k], _used(scratch.offsets[k], n)) for k in range(N_STRINGS)]
    valid = packer.add(scratch.valid, (n + 7) // 8)
    numbers = [packer.add(b, n * 8) for b in scratch.numbers]
    bufs = packer.pack()
    columns = [
        pa.StringArray.from_buffers(
            n,
            bufs[offsets[k]],
            bufs[strings[k]],
            null_bitmap=bufs[valid] if k == 3 else None,
            null_count=-1 if k == 3 else 0,
        )
        for k in range(N_STRINGS)
    ]
    for i, type_ in zip(numbers, (pa.int64(), pa.int64(), pa.float64(), pa.float64())):
        columns.append(pa.Array.from_buffers(type_, n, [None, bufs[i]]))
    table = pa.Table.from_arrays(columns, schema=PARSED_SCHEMA)
    inner_pivot = None
    if pivot_struct is not None and s.status != SYNTAX and s.n_groups > 2:
        # a buffer of its own: the rows and the pivot are written, and freed, at different times
        pivot_packer = _Packer()
        parts = _add_pivot(pivot_packer, scratch, pivot_struct.n)
        inner_pivot = _pivot_table(pivot_packer.pack(), parts, pivot_struct.n)

    raw_rejects = []
    if s.n_rejects:
        m = s.n_rejects
        element, rstart, rend = (np.frombuffer(scratch.rejects[i], np.int64, m).tolist() for i in range(3))
        reason, field = (np.frombuffer(scratch.rejects[i], np.int32, m).tolist() for i in (3, 4))
        raw_rejects = [
            RawReject(e, start + a, start + b, r, SOURCE_FIELDS[f] if f >= 0 else None)
            for e, a, b, r, f in zip(element, rstart, rend, reason, field)
        ]
    m = s.n_groups
    first, size, pick1, pick2, pick3, min_freq, max_freq, ranked = (
        np.frombuffer(b, dtype=np.int64, count=m).copy() for b in scratch.groups[:8]
    )
    key_hash = np.frombuffer(scratch.groups[8], dtype=np.uint64, count=m).copy()
    groups = Groups(
        first,
        size,
        [pick1, pick2, pick3],
        min_freq,
        max_freq,
        ranked,
        key_hash,
        InnerCounts(s.inner_max_size, s.inner_over_three, s.inner_duplicate_ranks, s.inner_mixed_freq),
    )
    return ScanResult(
        table=table,
        inner_pivot=inner_pivot,
        groups=groups,
        rejects=raw_rejects,
        n_elements=s.n_elements,
        status=s.status,
        consumed=start + s.consumed,
        error_code=s.err_code,
        error_pos=start + s.err_pos if s.err_pos >= 0 else -1,
    )


def _string_buffers(column: pa.Array) -> tuple[int, int]:
    """Addresses of a string array's offsets (at its slice offset) and data."""
    if column.type != pa.string():
        raise TypeError(f"expected a string column, got {column.type}")
    _, offsets, data = column.buffers()
    return offsets.address + column.offset * 4, data.address if data is not None else 0


def key_hashes(department: pa.Array, term: pa.Array, rows: np.ndarray) -> np.ndarray:
    """The native scanner's (department, term) hash for the given rows of two string arrays."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    out = np.empty(len(rows), dtype=np.uint64)
    if len(rows):
        dept_off, dept_data = _string_buffers(department)
        term_off, term_data = _string_buffers(term)
        library().key_hashes(dept_off, dept_data, term_off, term_data, rows.ctypes.data, len(rows), out.ctypes.data)
    return out

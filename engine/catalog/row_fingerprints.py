"""Rows an upload would not change, found before they are sent to PostgreSQL.

Each row floodgate writes to the products table (a new product, or a changed one) stores a
fingerprint of the upload's row: a 64-bit hash of the row's COPY text after the row
number (row_fingerprints.c), seeded with the upload's columns and attribute keys. A trigger
clears the fingerprint when anything else changes the product (migration 2). So a product
whose fingerprint equals a row's is still as that row left it, and applying the row again
would change nothing: the rule of upsert.py that an unchanged row is not written, decided
without sending the row.

When an upload starts (after taking the table's upload lock, so no other upload changes
fingerprints meanwhile), the table's fingerprints are read, 8 bytes a product; as each
batch is formatted for COPY, the rows whose fingerprint is among them are left out and
counted unchanged, and the others are sent with their fingerprint. An unchanged re-import
then copies nothing and joins nothing: the COPY's server CPU (about 0.45 s for 500k rows)
and the join (about 0.4 s) are gone, and the pipeline's re-import of the 500k-row bench
file took 0.80-0.97 s instead of 1.22-1.36 s (docs/PERFORMANCE.md). Reading the table's
fingerprints takes about 0.1 s per 500k products, while the first batches are validated.
New rows, changed rows, and products something else changed since are staged and compared
in the database as before.

What it costs: every upload reads the fingerprints of the whole table, whatever its own
size: about 0.1 s per 500k products (on the COPY thread, while the reader goes on) and 8
bytes each in memory. For a large upload that is repaid many times over; for a few rows
into a large table it is more than comparing them in the database would cost (then done
by index, after ANALYZE). A switch on the upload's size against the table's is not built.

What it does not know: a product changed by another writer after the fingerprints were
read keeps that writer's values where the upload's row is the one it had applied before
(the upload applies its unchanged rows as of its start); the table's fingerprints are held
in memory only up to `limit` products (beyond that every row is compared in the database,
as before); and a changed row whose fingerprint happens to equal one of the table's is
taken for unchanged: with 500k products, odds of about 3 in 10^14 per changed row.
"""

from __future__ import annotations

import ctypes
import hashlib
from pathlib import Path

import numpy as np

from engine import native
from engine.catalog.upsert import UpsertPlan

FINGERPRINT_COLUMN = "row_fingerprint"
_FORMAT = "floodgate row fingerprint 1"  # a new value changes every fingerprint (the hashed text changed)
_BUCKET_BITS = 16  # known fingerprints indexed by their top bits: a lookup touches a few neighbours
_APPENDED = 21  # bytes a row can grow by: a separator and a signed 64-bit decimal

_SOURCE = Path(__file__).with_name("row_fingerprints.c")


def _declare(lib: ctypes.CDLL) -> None:
    lib.fingerprint_rows.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_uint64,
                                     ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                     ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int64)]
    lib.fingerprint_rows.restype = ctypes.c_int64


def library() -> ctypes.CDLL:
    return native.load_library(_SOURCE, "row fingerprints", _declare)


def build_library() -> Path:
    """Compiled ahead by `make install` (otherwise on first use)."""
    return native.build_library(_SOURCE, "row fingerprints")


def seed(plan: UpsertPlan, csv: bool) -> int:
    """The hash's seed for an upload's rows: the same text means the same product values only
    under the same columns (attr_0 is another key in another file) and the same format."""
    described = "\x1f".join([_FORMAT, "csv" if csv else "text", *plan.staging_columns, *plan.attributes])
    return int.from_bytes(hashlib.blake2b(described.encode(), digest_size=8).digest(), "little")


def read_known(cursor, target: str, limit: int) -> np.ndarray | None:
    """The fingerprints the products table `target` holds, ascending as unsigned 64-bit
    integers; None when it has none, or more than `limit` (not held in memory)."""
    # 8 bytes a product, big-endian, in 256 pieces (by their top bits) streamed one row at a
    # time: libpq's input buffer, which keeps its largest size for the connection's life,
    # holds one piece, not the whole table's (4 MB at 500k products)
    pieces, size = [], 0
    for (piece,) in cursor.stream(
        f"""SELECT string_agg(int8send({FINGERPRINT_COLUMN}), ''::bytea) FROM (
            SELECT {FINGERPRINT_COLUMN} FROM {target} WHERE {FINGERPRINT_COLUMN} IS NOT NULL LIMIT %s) f
            GROUP BY {FINGERPRINT_COLUMN} >> 56""",
        (limit + 1,), binary=True,
    ):
        # read to the end (at most limit + 1 values): leaving a stream early cancels its
        # query, and a cancelled query aborts the upload's transaction
        size += len(piece)
        if size <= 8 * limit:
            pieces.append(piece)
        else:
            pieces.clear()
    if not size or size > 8 * limit:
        return None
    known = np.empty(size // 8, np.uint64)
    raw = known.view(np.uint8)
    at = 0
    for piece in pieces:
        raw[at:at + len(piece)] = np.frombuffer(piece, np.uint8)
        at += len(piece)
    del pieces
    known.byteswap(inplace=True)
    known.sort()
    return known


class RowFilter:
    """Fingerprints each COPY payload's rows and leaves out those among `known` (see the
    module's docstring)."""

    def __init__(self, plan: UpsertPlan, known: np.ndarray | None):
        self._lib = library()
        self._seeds = {False: seed(plan, False), True: seed(plan, True)}
        self._known = self._buckets = None
        if known is not None and len(known):
            self._known = np.ascontiguousarray(known, np.uint64)
            # where each value of the top bits starts (no temporary array of the table's size)
            bounds = np.arange(1 << _BUCKET_BITS, dtype=np.uint64) << np.uint64(64 - _BUCKET_BITS)
            self._buckets = np.append(np.searchsorted(self._known, bounds), len(self._known)).astype(np.int64)
        self._out = np.empty(0, np.uint8)  # kept for the whole COPY, grown when a payload needs more

    def __call__(self, payload, rows: int, *, csv: bool) -> tuple[memoryview, int, int]:
        """(the payload to send: each row kept, with its fingerprint as a last field; rows kept;
        rows left out) for a COPY payload of `rows` rows. The view is good until the next call."""
        source = np.frombuffer(payload, np.uint8)
        needed = len(source) + _APPENDED * rows
        if len(self._out) < needed:
            self._out = np.empty(max(needed, 2 * len(self._out)), np.uint8)
        out_size, skipped = ctypes.c_int64(0), ctypes.c_int64(0)
        kept = self._lib.fingerprint_rows(
            source.ctypes.data, len(source), int(csv), self._seeds[csv], _address(self._known), _address(self._buckets),
            self._out.ctypes.data, ctypes.byref(out_size), ctypes.byref(skipped),
        )
        if kept < 0:  # the payload is floodgate's own: a bug, not bad input
            raise ValueError(f"a COPY payload row without a field or a line break, at byte {out_size.value}")
        if kept + skipped.value != rows:
            raise ValueError(f"a COPY payload of {rows} rows held {kept + skipped.value}")
        return memoryview(self._out)[: out_size.value], kept, skipped.value


def _address(array: np.ndarray | None) -> int | None:
    return None if array is None else array.ctypes.data

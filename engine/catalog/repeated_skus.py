"""The SKUs a file repeats, found once the file is read, in memory that does not grow with it.

A SKU repeated within one upload keeps its last occurrence; the earlier ones are superseded
(validated_file.py). Finding them needs every valid row's SKU, and the file may have any
number of rows. Kept in memory (the SKUs as Arrow arrays, their hashes, their row numbers),
they cost about 33 bytes a row of the import's peak: 16-24 MiB for 500k rows, 63 MiB for
2M. So each batch's (hash, row, SKU) is written to a scratch file instead (Arrow IPC, in a
temporary directory under TMPDIR, about 32 bytes a row: 16 MB for 500k rows), and at the end:

1. the hashes are read back and sorted, about SORT_ROWS of them at a time (a file of more
   rows is read once per range of hash values, the ranges sized by counts kept while
   writing), to find the hash values that repeat;
2. a second read picks the rows whose hash is one of them;
3. equal hashes are checked on the SKUs themselves, so a collision never merges two
   different SKUs.

What stays in memory at the end is one range's hashes and the rows that repeat, which the
summary lists anyway.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

_FNV_PRIME = np.uint64(1099511628211)
_FNV_OFFSET = np.uint64(14695981039346656037)
_SCHEMA = pa.schema([("hash", pa.uint64()), ("row", pa.int64()), ("sku", pa.string())])


def sku_hashes(skus: pa.Array) -> np.ndarray:
    """A 64-bit FNV-1a hash of each SKU's UTF-8 bytes, computed column-wise (one numpy pass
    per character position, not one Python call per SKU)."""
    skus = skus.cast(pa.string())
    n = len(skus)
    if n == 0:
        return np.zeros(0, np.uint64)
    _, offsets_buffer, data_buffer = skus.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int32, n + 1, skus.offset * 4)
    data = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.zeros(1, np.uint8)
    starts, lengths = offsets[:-1].astype(np.int64), np.diff(offsets)
    hashes = np.full(n, _FNV_OFFSET, np.uint64)
    with np.errstate(over="ignore"):
        for k in range(int(lengths.max(initial=0))):
            live = lengths > k
            byte = data[np.minimum(starts + k, len(data) - 1)].astype(np.uint64)
            hashes = np.where(live, (hashes ^ byte) * _FNV_PRIME, hashes)
    return hashes


class SkuTracker:
    """Collects the valid rows' SKUs and row numbers (`add`, a batch at a time) and says,
    once all are in, which rows are superseded. Close it (or use it as a context manager)
    to remove its scratch file."""

    SORT_ROWS = 1 << 20  # hashes sorted at once at the end: 8 MiB

    def __init__(self):
        self._folder = tempfile.TemporaryDirectory(prefix="floodgate-skus-")  # under TMPDIR
        self._path = os.path.join(self._folder.name, "skus.arrow")
        self._sink: pa.NativeFile | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._written = False  # the scratch file is complete (superseded() has been asked)
        self._per_top_byte = np.zeros(256, np.int64)  # hashes by their top byte: sizes the sort's ranges
        self.rows = 0

    def __enter__(self) -> "SkuTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add(self, skus: pa.Array, rows: pa.Array) -> None:
        if not len(skus):
            return
        if self._written:
            raise RuntimeError("SkuTracker.add after superseded(): the scratch file is complete")
        if self._writer is None:
            self._sink = pa.OSFile(self._path, "wb")
            self._writer = pa.ipc.new_stream(self._sink, _SCHEMA)
        hashes = sku_hashes(skus)
        self._per_top_byte += np.bincount((hashes >> np.uint64(56)).astype(np.intp), minlength=256)
        batch = pa.record_batch([pa.array(hashes), rows.cast(pa.int64()), skus.cast(pa.string())], schema=_SCHEMA)
        self._writer.write_batch(batch)
        self.rows += len(skus)

    def superseded(self) -> list[tuple[int, str, int]]:
        """(row, sku, the row kept) of every occurrence of a SKU but its last, ordered by row."""
        if not self.rows:
            return []
        self._finish_writing()
        repeated = self._repeated_hashes()
        if not len(repeated):
            return []
        found: list[tuple[int, str]] = []
        for batch in self._batches():
            at = np.flatnonzero(np.isin(batch.column(0).to_numpy(), repeated))
            if len(at):
                rows = batch.column(1).to_numpy()[at].tolist()
                found.extend(zip(rows, batch.column(2).take(pa.array(at)).to_pylist()))
        found.sort()
        last = {sku: row for row, sku in found}
        return [(row, sku, last[sku]) for row, sku in found if last[sku] != row]

    def close(self) -> None:
        self._finish_writing()
        self._folder.cleanup()

    def _finish_writing(self) -> None:
        self._written = True
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None

    def _batches(self) -> Iterator[pa.RecordBatch]:
        with pa.OSFile(self._path, "rb") as source:  # read, not memory-mapped: mapped pages count as resident
            yield from pa.ipc.open_stream(source)

    def _repeated_hashes(self) -> np.ndarray:
        """The hash values that occur more than once, one range of values at a time."""
        repeated = []
        for lo, hi, count in self._ranges():
            # filled in place, in copies: a view would keep the whole batch (its SKUs too) alive
            hashes, at = np.empty(count, np.uint64), 0
            for batch in self._batches():
                column = batch.column(0).to_numpy()
                if hi - lo < 256:
                    top = column >> np.uint64(56)
                    column = column[(top >= lo) & (top < hi)]
                hashes[at : at + len(column)] = column
                at += len(column)
            # the repeated values from a plain sort (a stable argsort of 500k hashes took 52 ms, this 5 ms)
            hashes.sort()
            repeated.append(np.unique(hashes[1:][hashes[1:] == hashes[:-1]]))
        return np.concatenate(repeated)

    def _ranges(self) -> list[tuple[int, int, int]]:
        """(first top byte, last + 1, hashes) of ranges of about SORT_ROWS hashes or fewer
        (more only when one top byte alone has more)."""
        ranges, lo, count = [], 0, 0
        for top, n in enumerate(self._per_top_byte.tolist()):
            if count and count + n > self.SORT_ROWS:
                ranges.append((lo, top, count))
                lo, count = top, 0
            count += n
        ranges.append((lo, 256, count))
        return ranges


def find_superseded(skus: list[pa.Array], rows: list[pa.Array]) -> list[tuple[int, str, int]]:
    with SkuTracker() as tracker:
        for s, r in zip(skus, rows):
            tracker.add(s, r)
        return tracker.superseded()

"""The SKUs a file repeats, found once the file is read, in memory that grows only with the
number of rows they supersede (16 bytes each).

A SKU repeated within one upload keeps its last occurrence; the earlier ones are superseded
(validated_file.py). Finding them needs every valid row's SKU, and the file may have any
number of rows. Kept in memory (the SKUs as Arrow arrays, their hashes, their row numbers),
they cost about 33 bytes a row of the import's peak: 16-24 MiB for 500k rows, 63 MiB for
2M. So each batch's (hash, row, SKU) is written to a scratch file instead (Arrow IPC, in a
temporary directory under TMPDIR, about 32 bytes a row: 16 MB for 500k rows), and at the end:

1. the hashes are read back and sorted, about SORT_ROWS of them at a time (a file of more
   rows is read once per range of hash values, the ranges sized by counts kept while
   writing), to find the hash values that repeat;
2. the rows whose hash is one of them are read back, about GROUP_ROWS at a time (again by
   ranges of hash values, sized by a count of them), and grouped on the SKUs themselves, so
   a collision never merges two different SKUs: each row but a SKU's last is superseded;
3. what is kept is the superseded rows' numbers and the rows kept instead (Superseded);
   their SKUs are read from the scratch file once more as the rejects file is written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.catalog.columns import SKU
from engine.catalog.numpy_arrays import arrow_array, string_offsets_and_bytes
from engine.catalog.upsert import UpsertCounts
from engine.memory import release_free_memory

if TYPE_CHECKING:
    from engine.catalog.validated_file import Stager

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
    offsets, data = string_offsets_and_bytes(skus)
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
    GROUP_ROWS = 1 << 18  # rows of repeated hashes grouped on their SKUs at once: about 18 MiB

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
        batch = pa.record_batch([arrow_array(hashes), rows.cast(pa.int64()), skus.cast(pa.string())], schema=_SCHEMA)
        self._writer.write_batch(batch)
        self.rows += len(skus)

    def superseded(self) -> "Superseded":
        """Every occurrence of a SKU but its last. Read the SKUs (`Superseded.chunks`) before
        closing the tracker: they stay in the scratch file."""
        if not self.rows:
            return Superseded.none()
        self._finish_writing()
        repeated = self._repeated_hashes()
        if not len(repeated):
            return Superseded.none()
        # the rows of repeated hashes, grouped on their SKUs one range of hash values at a
        # time (equal SKUs have equal hashes, so a SKU's rows are all in one range): the
        # grouping holds about 70 bytes a row, and every row of a file may repeat
        per_top_byte = np.zeros(256, np.int64)
        for batch in self._batches():
            hashes = batch.column(0).to_numpy()
            hashes = hashes[_contains(repeated, hashes)]
            per_top_byte += np.bincount((hashes >> np.uint64(56)).astype(np.intp), minlength=256)
        rows, kept = [], []
        for lo, hi, _ in _ranges(per_top_byte, self.GROUP_ROWS):
            range_rows, range_skus = [], []
            for batch in self._batches():
                hashes = batch.column(0).to_numpy()
                top = hashes >> np.uint64(56)
                at = np.flatnonzero((top >= lo) & (top < hi) & _contains(repeated, hashes))
                if len(at):
                    range_rows.append(batch.column(1).to_numpy()[at])
                    range_skus.append(batch.column(2).take(arrow_array(at)))
            if range_rows:
                earlier, kept_rows = _earlier_occurrences(np.concatenate(range_rows), pa.chunked_array(range_skus).combine_chunks())
                rows.append(earlier)
                kept.append(kept_rows)
        superseded = Superseded(*_by_row(rows, kept), self._batches)
        del rows, kept
        # the grouping's buffers, freed by now, stay with malloc otherwise (100 MiB after
        # 1M superseded rows), for the rest of the upload
        release_free_memory()
        return superseded

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
        """The hash values that occur more than once, ascending (one range of values at a
        time, the ranges in order)."""
        repeated = []
        for lo, hi, count in _ranges(self._per_top_byte, self.SORT_ROWS):
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
            twice = hashes[1:][hashes[1:] == hashes[:-1]]  # sorted: each value once is where it changes
            # (not np.unique, which loads numpy.ma: numpy_arrays.py)
            repeated.append(twice[np.concatenate(([True], twice[1:] != twice[:-1]))] if len(twice) else twice)
        return np.concatenate(repeated)


def _ranges(per_top_byte: np.ndarray, limit: int) -> list[tuple[int, int, int]]:
    """(first top byte, last + 1, count) of ranges of hash values holding about `limit`
    counted hashes or fewer (more only when one top byte alone has more)."""
    ranges, lo, count = [], 0, 0
    for top, n in enumerate(per_top_byte.tolist()):
        if count and count + n > limit:
            ranges.append((lo, top, count))
            lo, count = top, 0
        count += n
    ranges.append((lo, 256, count))
    return ranges


def _by_row(rows: list[np.ndarray], kept: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The ranges' (rows, kept rows) as two arrays ordered by row. Packed into one array
    (row << 32 | kept) and sorted in place where they fit: an argsort and the arrays
    gathered by it held 48 MiB at once for 1M rows."""
    highest = max((int(k.max()) for k in kept if len(k)), default=0)  # a kept row is its SKU's last
    if highest >= 1 << 31:
        rows, kept = np.concatenate(rows), np.concatenate(kept)
        order = np.argsort(rows)
        return rows[order], kept[order]
    packed = np.concatenate(rows) << 32
    packed |= np.concatenate(kept)
    packed.sort()
    return packed >> 32, packed & 0xFFFF_FFFF


def _earlier_occurrences(rows: np.ndarray, skus: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(rows, the row kept for each) of the rows whose SKU occurs again later, grouped on
    the SKUs themselves (dictionary codes), so that a hash collision merges nothing."""
    codes = pc.dictionary_encode(skus).indices.to_numpy()
    last = np.full(int(codes.max()) + 1, -1, np.int64)
    np.maximum.at(last, codes, rows)
    kept = last[codes]
    earlier = rows != kept
    return rows[earlier], kept[earlier]


def _contains(ascending: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Whether each of `values` is in `ascending` (sorted): a binary search per value.
    np.isin sorts both arrays on every call, 0.1 s a batch against 250k repeated hashes."""
    at = np.minimum(np.searchsorted(ascending, values), len(ascending) - 1)
    return ascending[at] == values


@dataclass(frozen=True)
class Superseded:
    """The earlier occurrences of repeated SKUs: their row numbers (ascending) and, for each,
    the row that is applied instead, 16 bytes each. Their SKUs are read back from the
    tracker's scratch file when the rejects are written, not kept: a file that lists every
    SKU twice has half its rows here (a Python tuple per row, as before, cost 150 bytes
    each: 85 MiB more peak for 500k rows)."""

    rows: np.ndarray  # int64, ascending
    kept: np.ndarray  # int64: the row of the same SKU that is applied (its last occurrence)
    _scratch: Callable[[], Iterator[pa.RecordBatch]] | None = None  # the tracker's (hash, row, sku) batches

    @classmethod
    def none(cls) -> "Superseded":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.rows)

    def chunks(self) -> Iterator[Iterator[tuple[int, str, int]]]:
        """(row, sku, kept row) as Python values, a scratch-file batch at a time, in the
        order the rows were added (the file's order)."""
        if not len(self):
            return
        for batch in self._scratch():
            batch_rows = batch.column(1).to_numpy()
            at = np.flatnonzero(_contains(self.rows, batch_rows))
            if len(at):
                kept = self.kept[np.searchsorted(self.rows, batch_rows[at])]
                yield zip(batch_rows[at].tolist(), batch.column(2).take(arrow_array(at)).to_pylist(), kept.tolist())


def apply_last_occurrences(staging: "Stager", batches: Iterable[pa.Table]) -> UpsertCounts:
    """Stage validated batches (output_schema's columns) and apply them, each repeated SKU
    from its last row: what validate_upload does with a file, for rows validated before
    (a run that applies the validated file alone)."""
    with SkuTracker() as tracker:
        for table in batches:
            staging.write(table)
            tracker.add(table.column(SKU).combine_chunks(), table.column("row").combine_chunks())
        staging.rows_done()
        return staging.finish(tracker.superseded().rows)


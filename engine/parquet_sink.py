"""Write Arrow tables to one Parquet file in row groups, on a background thread.

Encoding a row group is the most expensive step after parsing, and pyarrow releases the
GIL while it does it: on its own thread it overlaps with the thread that produces the
next row group. Up to `queued` row groups wait for the writer, so that a producer is not
held up by one slow write; memory stays at queued + 1 row groups.
"""

from __future__ import annotations

import contextlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

import pyarrow as pa


class ParquetSink:
    def __init__(self, out: BinaryIO, schema: pa.Schema, *, row_group_rows: int = 65_536, queued: int = 1, **options):
        import pyarrow.parquet as pq  # not at the top: the code location loads this module in every run

        self.schema = schema
        self.row_group_rows = row_group_rows
        self.rows = 0
        self._writer = pq.ParquetWriter(out, schema, **options)
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="parquet")
        self._queued = queued
        self._in_flight: deque[Future] = deque()
        self._error: BaseException | None = None  # the first failed write

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self.rows += table.num_rows
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        group = pa.concat_tables(self._pending)
        self._pending, self._pending_rows = [], 0
        self._wait(self._queued - 1)
        self._in_flight.append(self._pool.submit(self._writer.write_table, group, row_group_size=self.row_group_rows))

    def _wait(self, leave: int = 0) -> None:
        """Wait until at most `leave` writes are queued; re-raises the first failed write."""
        while len(self._in_flight) > leave:
            try:
                self._in_flight.popleft().result()
            except BaseException as exc:
                if self._error is None:
                    self._error = exc
                    raise
                # a later write failed because an earlier one did; that one says why

    def add_metadata(self, metadata: dict[bytes, bytes]) -> None:
        """Key-value pairs for the file footer."""
        self._flush()
        self._wait()
        self._writer.add_key_value_metadata(metadata)

    def close(self) -> None:
        """Write what is pending and the footer. Always call it, also after an error."""
        try:
            if self._error is None:
                self._flush()
            self._wait()
        finally:
            self._pool.shutdown(wait=True)
            if self._error is None:
                self._writer.close()
            else:
                with contextlib.suppress(Exception):  # the first error has been raised already
                    self._writer.close()

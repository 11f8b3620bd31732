"""Write Arrow tables to one Parquet file in row groups, on a background thread.

Encoding and compressing a row group is the most expensive step after parsing, and
pyarrow releases the GIL while it does it: on its own thread it overlaps with the thread
that produces the next row group. At most one row group is being written while the next
one fills, so memory stays at two row groups.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq


class ParquetSink:
    def __init__(self, out: BinaryIO, schema: pa.Schema, *, row_group_rows: int = 65_536, **options):
        self.schema = schema
        self.row_group_rows = row_group_rows
        self.rows = 0
        self._writer = pq.ParquetWriter(out, schema, **options)
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="parquet")
        self._in_flight: Future | None = None

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
        self._wait()
        self._in_flight = self._pool.submit(self._writer.write_table, group, row_group_size=self.row_group_rows)

    def _wait(self) -> None:
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            in_flight.result()  # re-raises a failed write here

    def add_metadata(self, metadata: dict[bytes, bytes]) -> None:
        """Key-value pairs for the file footer."""
        self._flush()
        self._wait()
        self._writer.add_key_value_metadata(metadata)

    def close(self) -> None:
        """Write what is pending and the footer. Always call it, also after an error."""
        try:
            self._flush()
            self._wait()
        finally:
            self._pool.shutdown(wait=True)
            self._writer.close()

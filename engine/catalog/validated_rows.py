"""An upload's validated rows as an Arrow IPC file (validated.arrow): written a batch at a
time as the rows are validated, read back a batch at a time by a run that applies them
alone (catalog_products materialized by itself).

Arrow's own file format rather than Parquet: writing it copies the batches' buffers as they
are. Parquet's encoding, on a writer thread of its own, took CPU from a two-core machine
busy validating and with PostgreSQL's COPY, and that thread held buffers of its own; and a
catalog run now never loads pyarrow.parquet (libparquet and every pyarrow filesystem, S3's
with OpenSSL). Together: a 500k-row import's peak RSS 15 MB lower, and a little faster
(docs/PERFORMANCE.md). The file is read by pyarrow
(`pyarrow.ipc.open_file`, `pyarrow.feather.read_table`), polars (`read_ipc`) and pandas
(`read_feather`) alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Literal

import pyarrow as pa

# buffer compression inside the file: none by default (the file is read back once, on the
# same machine or region, and compressing costs the import CPU)
Compression = Literal["none", "lz4", "zstd"]


class ValidatedRowsWriter:
    """Batches of validated rows → one Arrow IPC file on `out`; `close` writes its footer."""

    def __init__(self, out: BinaryIO, schema: pa.Schema, compression: Compression = "none"):
        options = pa.ipc.IpcWriteOptions(compression=None if compression == "none" else compression)
        self._writer = pa.ipc.new_file(out, schema, options=options)

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table)

    def close(self) -> None:
        self._writer.close()


def read_validated_rows(source: BinaryIO) -> Iterator[pa.Table]:
    """The file's batches in order, one at a time (seekable `source`: the footer is at its end)."""
    reader = pa.ipc.open_file(source)
    for i in range(reader.num_record_batches):
        yield pa.Table.from_batches([reader.get_batch(i)])

"""ParquetSink: every row, in order, in bounded row groups; footer metadata; errors surface."""

import contextlib
import io
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.parquet_sink import ParquetSink

SCHEMA = pa.schema([("i", pa.int64()), ("s", pa.string())])


def parquet_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("parquet")}


def batch(start: int, n: int) -> pa.Table:
    return pa.table({"i": pa.array(range(start, start + n), pa.int64()), "s": [f"r{k}" for k in range(start, start + n)]}, schema=SCHEMA)


def write_batches(sink: ParquetSink, sizes: list[int]) -> int:
    start = 0
    for n in sizes:
        sink.write(batch(start, n))
        start += n
    return start


@pytest.mark.parametrize("row_group_rows", [1, 7, 64, 1000, 100_000])
def test_every_row_in_order_across_many_small_writes(row_group_rows):
    out = io.BytesIO()
    sink = ParquetSink(out, SCHEMA, row_group_rows=row_group_rows)
    sizes = [(k * 13) % 29 for k in range(300)]  # includes empty writes
    total = write_batches(sink, sizes)
    sink.close()
    assert sink.rows == total
    out.seek(0)
    table = pq.read_table(out)
    assert table.schema.equals(SCHEMA)
    assert table.column("i").to_pylist() == list(range(total))
    assert table.column("s").to_pylist() == [f"r{k}" for k in range(total)]


@pytest.mark.parametrize("row_group_rows, sizes", [(64, [50] * 40), (100, [1] * 950), (10, [33, 7, 101, 1, 0, 9])])
def test_row_groups_hold_at_most_row_group_rows(row_group_rows, sizes):
    out = io.BytesIO()
    sink = ParquetSink(out, SCHEMA, row_group_rows=row_group_rows)
    total = write_batches(sink, sizes)
    sink.close()
    meta = pq.ParquetFile(io.BytesIO(out.getvalue())).metadata
    groups = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    assert sum(groups) == total
    assert all(0 < g <= row_group_rows for g in groups), groups
    # small writes are gathered: not one row group per write
    assert meta.num_row_groups <= -(-total // row_group_rows) * 2


def test_writer_options_pass_through():
    out = io.BytesIO()
    sink = ParquetSink(out, SCHEMA, row_group_rows=10, compression="zstd")
    write_batches(sink, [25])
    sink.close()
    meta = pq.ParquetFile(io.BytesIO(out.getvalue())).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"


def test_add_metadata_lands_in_the_footer():
    out = io.BytesIO()
    sink = ParquetSink(out, SCHEMA, row_group_rows=16)
    write_batches(sink, [5, 20, 3])
    sink.add_metadata({b"marketplace_id": b"ATVPDKIKX0DER", b"terms": b"28"})
    sink.write(batch(28, 4))
    sink.close()
    f = pq.ParquetFile(io.BytesIO(out.getvalue()))
    assert f.metadata.metadata[b"marketplace_id"] == b"ATVPDKIKX0DER"
    assert f.metadata.metadata[b"terms"] == b"28"
    assert f.read().column("i").to_pylist() == list(range(32))


def test_close_after_an_exception_still_closes(tmp_path):
    path = tmp_path / "out.parquet"
    before = parquet_threads()
    with open(path, "wb") as out:
        sink = ParquetSink(out, SCHEMA, row_group_rows=8)
        with pytest.raises(RuntimeError, match="producer failed"):
            try:
                write_batches(sink, [3, 9, 2])
                raise RuntimeError("producer failed")
            finally:
                sink.close()
    assert not parquet_threads() - before  # the writer thread has ended
    # close wrote what was pending and a valid footer
    assert pq.read_table(path).column("i").to_pylist() == list(range(14))


def test_close_is_idempotent():
    out = io.BytesIO()
    sink = ParquetSink(out, SCHEMA)
    write_batches(sink, [3])
    sink.close()
    sink.close()
    assert pq.read_table(io.BytesIO(out.getvalue())).num_rows == 3


WRONG = pa.table({"i": pa.array(["not", "an", "int"]), "s": ["a", "b", "c"]})


def test_wrong_schema_error_surfaces_from_write_or_close():
    sink = ParquetSink(io.BytesIO(), SCHEMA, row_group_rows=2)
    with pytest.raises((ValueError, pa.ArrowException)):
        try:
            sink.write(WRONG)  # fills a row group: goes to the writer thread
            sink.write(batch(0, 5))
        finally:
            sink.close()


def test_wrong_schema_error_from_the_last_row_group_surfaces_from_close():
    sink = ParquetSink(io.BytesIO(), SCHEMA, row_group_rows=3)
    sink.write(batch(0, 3))
    sink.write(WRONG)  # the writer thread fails on this one; nothing waits for it yet
    with pytest.raises((ValueError, pa.ArrowException)):
        sink.close()


def test_writer_thread_error_surfaces_from_the_next_write():
    class Failing(io.BytesIO):
        full = False

        def write(self, b):
            if self.full:
                raise OSError("disk full")
            return super().write(b)

    before = parquet_threads()
    out = Failing()
    sink = ParquetSink(out, SCHEMA, row_group_rows=4)
    out.full = True
    with pytest.raises(OSError, match="disk full"):
        try:
            for k in range(10):
                sink.write(batch(4 * k, 4))
        finally:
            with contextlib.suppress(OSError):  # the error has surfaced once already
                sink.close()
    assert not parquet_threads() - before


def test_error_surfaces_from_add_metadata():
    sink = ParquetSink(io.BytesIO(), SCHEMA, row_group_rows=3)
    sink.write(WRONG)
    with pytest.raises((ValueError, pa.ArrowException)):
        sink.add_metadata({b"k": b"v"})
    sink.close()

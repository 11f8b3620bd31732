"""Report stream → typed Parquet of its rows, NDJSON of its rejects and the top-3 pivot, in one pass."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import BinaryIO

import pyarrow as pa

from engine.measure import Progress
from engine.memory import release_free_memory
from engine.parquet_sink import ParquetSink
from engine.search_terms.records import PARSED_SCHEMA
from engine.search_terms.report_reader import ReportReader, ReportSpec
from engine.search_terms.top3 import NotGrouped, Top3Stats, Top3Stitcher, Top3Writer

# Written into the Parquet footer so later steps know the week without the report.
META_WEEK = b"floodgate.week_start"
META_MARKETPLACE = b"floodgate.marketplace_id"
META_TERMS = b"floodgate.terms"

# No statistics beyond the ranks (full statistics cost a fifth of the write), dictionary
# pages only where values repeat a lot. The codec is the caller's choice.
PARQUET_OPTIONS = dict(
    use_dictionary=["department_name"],
    write_statistics=["search_frequency_rank", "click_share_rank"],
)


class TooManyRejects(ValueError):
    pass


@dataclass
class ParseSummary:
    spec: ReportSpec
    records: int
    rows: int
    rejects: int
    bytes_read: int
    rescans: int
    preview: pa.Table
    top3: Top3Stats | None = None  # None: no top-3 pivot was made in this pass
    top3_preview: pa.Table | None = None


def parse_report(
    stream: BinaryIO,
    name: str,
    week: date,
    parquet_out: BinaryIO,
    rejects_out: BinaryIO,
    top3_out: BinaryIO | None = None,
    *,
    max_reject_fraction: float = 0.001,
    chunk_bytes: int = 1 << 20,
    workers: int = 2,
    row_group_rows: int = 16_384,
    compression: str = "none",
    progress: Progress | None = None,
) -> ParseSummary:
    """Parse `stream` into Parquet rows, NDJSON rejects and, when top3_out is given, the top-3 pivot.

    The outputs are complete only when this returns: callers publish them then (the
    object store's atomic writes), so a failure never leaves a half-written partition.
    Raises ReportError or TooManyRejects. When the top-3 pivot could not be made in this
    pass (the rows are not grouped by term, or the specification follows the data),
    summary.top3 is None and the caller must discard top3_out and pivot from the Parquet.
    """
    reader = ReportReader(
        stream, name, expected_week=week, chunk_bytes=chunk_bytes, workers=workers, pivot_in_workers=top3_out is not None
    )
    writer = ParquetSink(
        parquet_out, PARSED_SCHEMA, row_group_rows=row_group_rows, compression=compression, **PARQUET_OPTIONS
    )
    stitcher = Top3Stitcher() if top3_out is not None else None
    top3_writer: Top3Writer | None = None
    preview = None
    batches = 0
    try:
        for batch in reader:
            for reject in batch.rejects:
                rejects_out.write(json.dumps(reject.as_json(), ensure_ascii=False).encode() + b"\n")
            table, groups = batch.table, batch.groups
            if table.num_rows == 0:
                continue
            if preview is None:
                preview = table.slice(0, 5)
            writer.write(table)
            if stitcher is not None:
                top3_rows = stitcher.add(table, groups, batch.inner_pivot)
                if top3_rows and top3_writer is None:
                    if reader.stats.spec is None:
                        stitcher = None  # the marketplace is not known yet: pivot afterwards
                    else:
                        top3_writer = Top3Writer(top3_out, week, reader.stats.spec.marketplace_id, compression)
                if top3_writer is not None and stitcher is not None:
                    top3_writer.write(top3_rows)
            if progress is not None:
                progress.update(reader.stats.rows, reader.source_bytes_read)
            batches += 1
            if batches % 256 == 0:
                release_free_memory()  # threads allocate and free in turn: keep the heap from spreading
        stats = reader.stats
        assert stats.spec is not None  # the reader raises when the report has none
        if stitcher is not None:
            try:
                last_rows = stitcher.finish()
            except NotGrouped:
                stitcher = None
            else:
                if top3_writer is None:
                    top3_writer = Top3Writer(top3_out, week, stats.spec.marketplace_id, compression)
                top3_writer.write(last_rows)
        footer = {
            META_WEEK: stats.spec.week_start.isoformat().encode(),
            META_MARKETPLACE: stats.spec.marketplace_id.encode(),
        }
        if stitcher is not None:
            # the pivot has proven that no term comes back, so its count is the distinct
            # terms; otherwise the top-3 step counts them
            footer[META_TERMS] = str(stitcher.stats.terms).encode()
        writer.add_metadata(footer)
    finally:
        try:
            writer.close()
        finally:
            if top3_writer is not None:
                top3_writer.close()
    if progress is not None:
        progress.update(stats.rows, reader.source_bytes_read, force=True)
    if stats.records and stats.rejects / stats.records > max_reject_fraction:
        raise TooManyRejects(
            f"{name}: {stats.rejects:,} of {stats.records:,} records rejected "
            f"({stats.rejects / stats.records:.3%}), more than the allowed {max_reject_fraction:.3%}"
        )
    return ParseSummary(
        spec=stats.spec,
        records=stats.records,
        rows=stats.rows,
        rejects=stats.rejects,
        bytes_read=stats.bytes_read,
        rescans=stats.rescans,
        preview=preview if preview is not None else PARSED_SCHEMA.empty_table(),
        top3=stitcher.stats if stitcher is not None else None,
        top3_preview=top3_writer.preview if stitcher is not None else None,
    )


def parsed_footer(parquet: BinaryIO) -> dict[str, str]:
    """The floodgate entries of a parsed file's footer (week, marketplace, terms)."""
    import pyarrow.parquet as pq  # not at the top: the code location loads this module in every run

    meta = pq.ParquetFile(parquet).metadata.metadata or {}
    return {k.decode().removeprefix("floodgate."): v.decode() for k, v in meta.items() if k.startswith(b"floodgate.")}

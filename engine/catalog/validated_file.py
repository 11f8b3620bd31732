"""The validation step: an uploaded file → validated rows (Arrow IPC) + rejects (CSV) + a summary.

One streaming pass, in bounded memory: the file is read in batches (csv_reader or
xlsx_reader), each batch validated column-wise (validate) and written on. SKUs and row
numbers of the valid rows go to a scratch file (repeated_skus) to find, at the end, the SKUs
a file repeats: the last occurrence is kept, the earlier ones are listed in the summary and
the rejects file. Rows refused for a rule are not candidates: a SKU whose last row is
refused keeps its last valid row.

With a staging (an upload's database transaction), each batch of valid rows also goes to
the database as soon as it is validated, and the rows are applied once the whole file is
read, if the rejects are within the allowed fraction. The summary says whether they
exceed it; the caller fails the upload then (nothing applied), after publishing the
rejects file that explains why.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import BinaryIO, ContextManager, Protocol

import numpy as np
import pyarrow as pa

from engine.catalog.columns import SKU, match_headers
from engine.catalog.csv_reader import CsvSource, NeedsExactPass
from engine.catalog.raw_rows import SourceInfo
from engine.catalog.rejects import RejectsWriter
from engine.catalog.repeated_skus import SkuTracker
from engine.catalog.upsert import UpsertCounts, UpsertPlan
from engine.catalog.text_stream import CSV_GZIP, DELIMITER_NAMES, XLSX, Utf8Stream, detect_format
from engine.catalog.validate import Validator
from engine.catalog.validated_rows import Compression, ValidatedRowsWriter
from engine.catalog.xlsx_reader import XlsxSource
from engine.memory import GrowthTrim

# (rows done, bytes of the object read) after each batch
ProgressCallback = Callable[[int, int], None]


@dataclass
class ReadOptions:
    encoding: str | None = None  # None: detected
    delimiter: str | None = None  # None: sniffed
    sheet: str | None = None  # .xlsx: None is the first sheet
    block_mb: float = 0.125  # CSV bytes per read block (csv_reader: read-ahead memory, longest record)
    validated_compression: Compression = "none"  # of the validated rows' Arrow file


@dataclass
class ValidationSummary:
    """What the validation found; stored as the upload's summary.json (a later run that
    applies the validated file alone reads its columns from it)."""

    source: dict  # SourceInfo as a dict
    headers: list[str]
    fields: dict[str, str]  # catalog field → the header it came from
    attributes: list[str]  # keys of the kept unknown columns, in attr_<i> order
    rows: int  # data rows read (blank rows not counted)
    valid: int  # rows in the validated file (superseded ones included)
    rejected: int
    superseded: int  # earlier occurrences of a repeated SKU (listed in the rejects file)
    blank: int
    exact_pass: bool  # the file was read a second time with the exact CSV reader
    max_reject_fraction: float
    examples: list[dict] = field(default_factory=list)  # the first rejects: row, reasons
    applied: dict | None = None  # UpsertCounts, when the rows were applied as they were validated

    def __post_init__(self):
        if isinstance(self.superseded, list):  # summaries written before the count replaced the list
            self.superseded = len(self.superseded)

    @property
    def applied_rows(self) -> int:
        return self.valid - self.superseded

    @property
    def reject_fraction(self) -> float:
        return self.rejected / self.rows if self.rows else 0.0

    @property
    def too_many_rejects(self) -> bool:
        return self.reject_fraction > self.max_reject_fraction

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> "ValidationSummary":
        return cls(**json.loads(text))


class Stager(Protocol):
    """Where validated rows go as they are made, besides the validated file: an upload's
    database transaction (PostgresStaging, SqliteStaging)."""

    def write(self, table: pa.Table) -> None: ...

    def rows_done(self) -> None: ...  # no more writes: what only writing needed can go

    def finish(self, superseded: np.ndarray) -> UpsertCounts: ...  # rows not to apply


# (the upload's columns) → a context manager around a Stager; leaving it without finish rolls back
OpenStaging = Callable[[UpsertPlan], ContextManager[Stager]]


def validate_upload(
    open_source: Callable[[], ContextManager[BinaryIO]],
    name: str,
    open_outputs: Callable[[], ContextManager[tuple[BinaryIO, BinaryIO]]],
    *,
    options: ReadOptions | None = None,
    max_reject_fraction: float = 0.01,
    progress: ProgressCallback | None = None,
    staging: OpenStaging | None = None,
) -> ValidationSummary:
    """Validate the object `open_source` opens (named `name` in messages) into the two
    outputs `open_outputs` opens: (validated rows' Arrow IPC file, rejects CSV).

    With `staging`, the valid rows also go to the database as they are validated, and are
    applied (summary.applied) when the file is read and its rejects are within the limit;
    with more rejects nothing is applied, and the caller fails the upload.

    A CSV read fast is read again exactly when it has rows the fast reader cannot number;
    the outputs and the staging are then opened afresh (the first ones are discarded:
    open_outputs must publish nothing when its block raises, as ObjectStore.open_write does).
    """
    options = options or ReadOptions()
    try:
        return _validate(open_source, name, open_outputs, options, max_reject_fraction, progress, staging, exact=False)
    except NeedsExactPass:
        return _validate(open_source, name, open_outputs, options, max_reject_fraction, progress, staging, exact=True)


class _NotApplied(Exception):
    """Leaves the staging block so that it rolls back; the rejects file is still published."""


def _validate(open_source, name, open_outputs, options, max_reject_fraction, progress, staging, *, exact: bool):
    with open_source() as raw:
        buffered = raw if hasattr(raw, "peek") else io.BufferedReader(raw, 1 << 20)
        kind = detect_format(buffered.peek(8)[:8], name)
        if kind == XLSX:
            reader = XlsxSource(buffered, name, sheet=options.sheet)
            source = lambda: SourceInfo(XLSX, sheet=reader.sheet_name)  # noqa: E731
        else:
            stream = Utf8Stream(buffered, name, declared=options.encoding, gzipped=kind == CSV_GZIP)
            reader = CsvSource(stream, name, delimiter=options.delimiter, exact=exact, block_mb=options.block_mb)
            source = lambda: SourceInfo(  # noqa: E731
                kind, stream.encoding_name, DELIMITER_NAMES.get(reader.delimiter, reader.delimiter),
                reader.delimiter_sniffed,
            )
        batches = reader.batches()
        first = next(batches, None)  # reads the header
        header_map = match_headers(reader.header, name)
        validator = Validator(header_map)
        plan = UpsertPlan(fields=list(header_map.fields), attributes=[k for k, _ in header_map.extras])
        counts = {"rows": 0, "valid": 0, "blank": 0}
        applied: UpsertCounts | None = None
        with SkuTracker() as tracker, open_outputs() as (validated_out, rejects_out):
            sink = ValidatedRowsWriter(validated_out, validator.schema, options.validated_compression)
            rejects = RejectsWriter(rejects_out, header_map.headers)
            try:
                with staging(plan) if staging is not None else contextlib.nullcontext() as stager:
                    batch, trim = first, GrowthTrim()
                    first = None  # each raw batch is dropped before the next is read (below)
                    while batch is not None:
                        checked = validator.validate(batch)
                        sink.write(checked.table)
                        if stager is not None:
                            stager.write(checked.table)
                        tracker.add(checked.table.column(SKU).combine_chunks(), checked.table.column("row").combine_chunks())
                        rejects.write(checked.rejects)
                        counts["rows"] += batch.num_rows - checked.blank
                        counts["valid"] += checked.table.num_rows
                        counts["blank"] += checked.blank
                        if progress is not None:
                            progress(counts["rows"], batch.bytes_read)
                        del checked
                        # the reader and the COPY thread free what another allocated, and
                        # malloc keeps such memory for reuse: trimmed once it has grown
                        # (engine/memory.py: a trim every batch cost 0.1-0.2 s)
                        trim()
                        batch = None
                        batch = next(batches, None)
                    if stager is not None:
                        stager.rows_done()  # its COPY ends while the repeated SKUs are worked out
                    superseded = tracker.superseded()
                    rejects.write_superseded(superseded, header_map.fields[SKU])
                    if stager is not None:
                        if counts["rows"] and rejects.rejected / counts["rows"] > max_reject_fraction:  # as too_many_rejects
                            raise _NotApplied()
                        applied = stager.finish(superseded.rows)
            except _NotApplied:
                pass
            finally:
                sink.close()
                rejects.close()
    return ValidationSummary(
        source=asdict(source()),
        headers=list(header_map.headers),
        fields={f: header_map.headers[i] for f, i in header_map.fields.items()},
        attributes=plan.attributes,
        rows=counts["rows"],
        valid=counts["valid"],
        rejected=rejects.rejected,
        superseded=len(superseded),
        blank=counts["blank"],
        exact_pass=exact,
        max_reject_fraction=max_reject_fraction,
        examples=[{"row": r.row, "reasons": r.reasons} for r in rejects.examples],
        applied=applied.as_dict() if applied is not None else None,
    )

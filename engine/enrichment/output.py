"""Per-chunk results under deterministic keys, and the file's final account.

Under `<output prefix>/<partition key>/`:

- `enriched/<chunk>.parquet`: the chunk's enriched records: the input's fields (types kept
  for Parquet input, strings for CSV, inferred per column for JSON) and the template's
  response columns (a response column replaces an input field of the same name);
- `dead_letters/<chunk>.parquet`: record_id, row (0-based in the file), input (the record
  as JSON), reason, last_status, error, attempts;
- `chunks/<chunk>.json`: the chunk's manifest, written last: its presence says both files
  are complete. It holds the run's fingerprint (input version and every setting that
  changes results), so a retried run skips, without a request, exactly the chunks whose
  manifest matches, and redoes any other;
- `summary.json`: the account of the whole file: enriched + dead letters = input.

Chunk numbers are zero-padded to 6 digits, so keys sort in file order. A file of 0
enriched (or 0 dead) records is not written, and an older one under its key is removed.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from engine.enrichment.gil import Pause, no_pause
from engine.enrichment.jsoncodec import dumps_text

if TYPE_CHECKING:
    import pyarrow.parquet as pq
    from resources.object_store import ObjectStore

DEAD_LETTER_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("row", pa.int64()),
        ("input", pa.string()),
        ("reason", pa.string()),
        ("last_status", pa.int32()),
        ("error", pa.string()),
        ("attempts", pa.int32()),
    ]
)
_TYPES = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_(), "json": pa.string()}


@dataclass(frozen=True)
class OutputLayout:
    prefix: str  # <output prefix>/<partition key>

    def enriched(self, chunk: int) -> str:
        return f"{self.prefix}/enriched/{chunk:06d}.parquet"

    def dead_letters(self, chunk: int) -> str:
        return f"{self.prefix}/dead_letters/{chunk:06d}.parquet"

    def manifest(self, chunk: int) -> str:
        return f"{self.prefix}/chunks/{chunk:06d}.json"

    @property
    def summary(self) -> str:
        return f"{self.prefix}/summary.json"


def fingerprint(**parts: Any) -> str:
    """A hash of what a chunk's results depend on (input version, template, ID field, chunking)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class DeadLetter:
    row: int  # in the chunk
    reason: str  # http_<4xx>, retries_exhausted, invalid_record, bad_response, item_error
    status: int | None
    error: str
    attempts: int


@dataclass
class ChunkManifest:
    chunk: int
    first_row: int
    rows: int
    enriched: int
    dead_letters: int
    dead_by_reason: dict[str, int]
    fingerprint: str
    written_at: str = ""

    @classmethod
    def from_json(cls, data: bytes) -> "ChunkManifest":
        return cls(**json.loads(data))


def read_manifest(store: ObjectStore, layout: OutputLayout, chunk: int) -> ChunkManifest | None:
    if not store.exists(layout.manifest(chunk)):
        return None
    with store.open_read(layout.manifest(chunk)) as f:
        try:
            return ChunkManifest.from_json(f.read())
        except (ValueError, TypeError):
            return None  # not one of ours (or an older format): the chunk is redone


def write_chunk(
    store: ObjectStore,
    layout: OutputLayout,
    chunk,  # readers.Chunk
    results: list[dict[str, Any] | None],
    dead: list[DeadLetter],
    id_field: str,
    columns: dict[str, str | None],
    print_fingerprint: str,
    keep_input_fields: bool = True,
    pause: Pause = no_pause,
) -> ChunkManifest:
    """Both Parquet files, then the manifest. `results[i]` is row i's response columns, None
    for a dead letter. `pause()` between columns (on the writer thread, gil.py)."""
    enriched_rows = [i for i, r in enumerate(results) if r is not None]
    if len(enriched_rows) + len(dead) != chunk.rows:
        raise AssertionError(f"chunk {chunk.index}: {len(enriched_rows)} enriched + {len(dead)} dead != {chunk.rows} rows")
    if enriched_rows:
        table = enriched_table(chunk, enriched_rows, [results[i] for i in enriched_rows], columns, keep_input_fields, pause)
        pause()
        _write_parquet(store, layout.enriched(chunk.index), table)
    else:
        store.delete(layout.enriched(chunk.index))
    if dead:
        pause()
        _write_parquet(store, layout.dead_letters(chunk.index), dead_letter_table(chunk, dead, id_field))
    else:
        store.delete(layout.dead_letters(chunk.index))
    manifest = ChunkManifest(
        chunk=chunk.index,
        first_row=chunk.first_row,
        rows=chunk.rows,
        enriched=len(enriched_rows),
        dead_letters=len(dead),
        dead_by_reason=dict(Counter(d.reason for d in dead)),
        fingerprint=print_fingerprint,
        written_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    with store.open_write(layout.manifest(chunk.index)) as f:
        f.write(json.dumps(manifest.__dict__).encode())
    return manifest


def _write_parquet(store: ObjectStore, key: str, table: pa.Table) -> None:
    import pyarrow.parquet as pq  # not at the top: the code location loads this module in every run

    with store.open_write(key) as f:
        pq.write_table(table, f, compression="zstd")


def enriched_table(
    chunk, rows: list[int], answers: list[dict], columns: dict[str, str | None], keep_input: bool, pause: Pause = no_pause
) -> pa.Table:
    """The input's fields of `rows` (chunk positions) and the response columns of `answers`,
    with `pause()` between columns."""
    response_columns = list(columns)
    if keep_input:
        if chunk.table is not None:
            table = chunk.table.take(pa.array(rows, pa.int64())) if len(rows) != chunk.rows else chunk.table
        else:
            records = chunk.records
            table = table_of([records[i] for i in rows], pause)
        table = table.drop_columns([c for c in response_columns if c in table.column_names])
    else:
        table = pa.table({})
    for column in response_columns:
        pause()
        values = list(map(itemgetter(column), answers))  # fields_of gives every column
        kind = columns[column]
        array = pa.array(values, _TYPES[kind]) if kind else _array_of(values)
        table = table.append_column(column, array) if table.num_columns else pa.table({column: array})
    return table


def table_of(records: list[dict[str, Any]], pause: Pause = no_pause) -> pa.Table:
    """Records as a table with every key any of them has (pyarrow's from_pylist looks only at
    the first); a column whose values do not share one Arrow type is stored as JSON text.
    `pause()` between columns."""
    if not records:
        return pa.table({})
    first = records[0].keys()
    if all(r.keys() == first for r in records):
        # the usual case, every record with the same fields: each column by a C-level loop
        # (a transposition, zip(*rows), took twice as long as all the Arrow conversions)
        return pa.table({name: _paused(pause, _array_of, list(map(itemgetter(name), records))) for name in first})
    names = list(dict.fromkeys(k for r in records for k in r))
    return pa.table({name: _paused(pause, _array_of, [r.get(name) for r in records]) for name in names})


def _paused(pause: Pause, function, *args):
    pause()
    return function(*args)


@functools.cache  # once a process: only the first write needs it
def warm_up() -> None:
    """Convert and write a tiny table once: the first conversion and Parquet write of a
    process import and set up a few hundred modules (300 ms of CPU measured), which in the
    middle of a paced run stalled the event loop for a whole chunk's write."""
    import pyarrow.parquet as pq
    pq.write_table(table_of([{"s": "a", "i": 1, "f": 1.5, "b": True, "n": None, "l": [1], "d": {"k": "v"}}]), io.BytesIO(), compression="zstd")


def _array_of(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        return pa.array([None if v is None else v if isinstance(v, str) else dumps_text(v) for v in values], pa.string())


def dead_letter_table(chunk, dead: list[DeadLetter], id_field: str) -> pa.Table:
    records = chunk.records
    ids, inputs = [], []
    for d in dead:
        record = records[d.row]
        value = record.get(id_field)
        ids.append(None if value is None else value if isinstance(value, str) else dumps_text(value))
        inputs.append(dumps_text(record))
    return pa.table(
        {
            "record_id": ids,
            "row": [chunk.first_row + d.row for d in dead],
            "input": inputs,
            "reason": [d.reason for d in dead],
            "last_status": [d.status for d in dead],
            "error": [d.error for d in dead],
            "attempts": [d.attempts for d in dead],
        },
        schema=DEAD_LETTER_SCHEMA,
    )


@dataclass
class FileAccount:
    """The final summary of one input file."""

    input_key: str
    records: int = 0  # read from the input
    enriched: int = 0
    dead_letters: int = 0
    unfinished: int = 0  # in chunks not written (a failed run): a retry sends them
    chunks: int = 0
    chunks_written: int = 0
    chunks_resumed: int = 0  # written by an earlier run, skipped without a request
    records_resumed: int = 0
    dead_by_reason: Counter = field(default_factory=Counter)
    fingerprint: str = ""
    complete: bool = False

    @property
    def balanced(self) -> bool:
        return self.enriched + self.dead_letters + self.unfinished == self.records

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "dead_by_reason"}
        out["dead_by_reason"] = dict(self.dead_by_reason)
        out["balanced"] = self.balanced
        return out


def account(store: ObjectStore, layout: OutputLayout, input_key: str, records: int, chunks: int, print_fingerprint: str) -> FileAccount:
    """Sum the manifests of chunks 0..chunks-1: what is written for this file, and what is not."""
    result = FileAccount(input_key, records=records, chunks=chunks, fingerprint=print_fingerprint)
    for index in range(chunks):
        manifest = read_manifest(store, layout, index)
        if manifest is None or manifest.fingerprint != print_fingerprint:
            continue
        result.chunks_written += 1
        result.enriched += manifest.enriched
        result.dead_letters += manifest.dead_letters
        result.dead_by_reason.update(manifest.dead_by_reason)
    result.unfinished = records - result.enriched - result.dead_letters
    result.complete = result.chunks_written == chunks and result.unfinished == 0
    return result


def write_summary(store: ObjectStore, layout: OutputLayout, summary: FileAccount, **extra: Any) -> None:
    with store.open_write(layout.summary) as f:
        f.write(json.dumps({**summary.as_dict(), **extra}, indent=2, default=str).encode())


def remove_chunks_from(store: ObjectStore, layout: OutputLayout, first: int) -> int:
    """Delete results of chunks numbered `first` and up (a shorter new version of the input)."""
    removed = 0
    for folder in ("chunks", "enriched", "dead_letters"):
        for info in list(store.list(f"{layout.prefix}/{folder}/")):
            stem = info.key.rsplit("/", 1)[-1].split(".", 1)[0]
            if stem.isdigit() and int(stem) >= first:
                store.delete(info.key)
                removed += 1
    return removed

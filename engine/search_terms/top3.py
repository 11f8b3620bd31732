"""Top three clicked products per search term, in one streaming pass.

Amazon writes each term's rows (one per clicked ASIN) next to each other, in order of
search frequency rank. So the pivot works on groups of consecutive rows with the same
department and term (groups.py): each batch's groups are pivoted on their own, and only
the last group of a batch is held back in case the next batch continues it. Memory is
a few batches, whatever the size of the report.

The premise is proven, not assumed: every group's key hash is kept, and at the end no
hash may appear twice, or a term came back after other terms. Then (or on the rare hash
collision) NotGrouped is raised and the caller pivots with DuckDB's hash group-by
instead (top3_any_order), which takes rows in any order.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import date
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.parquet_sink import ParquetSink
from engine.search_terms.groups import Groups, find_groups
from engine.search_terms.records import TOP3_SCHEMA


class NotGrouped(ValueError):
    """The rows of some term are not all next to each other."""

    def __init__(self, terms: int) -> None:
        super().__init__(
            f"the rows of {terms:,} department/term key(s) are not next to each other (or two keys share a hash)"
        )


@dataclass
class Top3Stats:
    rows_in: int = 0
    terms: int = 0
    max_products_per_term: int = 0
    terms_over_three_products: int = 0
    duplicate_click_share_ranks: int = 0  # rows whose rank 1-3 repeats one already seen for the term
    mixed_frequency_ranks: int = 0  # terms whose rows disagree on the search frequency rank

    def count_inner(self, groups: Groups) -> None:
        """Add a batch's inner groups (all but its first and last)."""
        inner = groups.inner
        self.terms += max(len(groups) - 2, 0)
        self.max_products_per_term = max(self.max_products_per_term, inner.max_size)
        self.terms_over_three_products += inner.over_three
        self.duplicate_click_share_ranks += inner.duplicate_ranks
        self.mixed_frequency_ranks += inner.mixed_freq


# The pivot's own columns; Top3Writer adds the week and marketplace, which are the same
# for every row (and, when the specification follows the data, known only at the end).
TOP3_CORE_SCHEMA = pa.schema([f for f in TOP3_SCHEMA if f.name not in ("week_start", "marketplace_id")])


def pivot(table: pa.Table, groups: Groups, selection: slice) -> pa.Table:
    """One top-3 row (TOP3_CORE_SCHEMA) for each selected group of `table`."""
    first = groups.first[selection]
    n = len(first)
    columns: dict[str, pa.Array] = {
        "department_name": pc.take(table["department_name"], first),
        "search_term": pc.take(table["search_term"], first),
        "search_frequency_rank": pa.array(groups.min_freq[selection]),
    }
    click = table["click_share"].to_numpy()
    conversion = table["conversion_share"].to_numpy()
    total_click = np.zeros(n)
    total_conversion = np.zeros(n)
    for rank, pick in enumerate(groups.picks, start=1):
        rows = pick[selection]
        missing = rows < 0
        safe = np.where(missing, 0, rows)
        click_r = np.where(missing, 0.0, click[safe]) if n else np.zeros(0)
        conversion_r = np.where(missing, 0.0, conversion[safe]) if n else np.zeros(0)
        total_click += click_r
        total_conversion += conversion_r
        index = pa.array(rows, mask=missing)
        columns[f"clicked_asin_{rank}"] = pc.take(table["clicked_asin"], index)
        columns[f"clicked_item_name_{rank}"] = pc.take(table["clicked_item_name"], index)
        columns[f"click_share_{rank}"] = pa.array(click_r, mask=missing)
        columns[f"conversion_share_{rank}"] = pa.array(conversion_r, mask=missing)
    columns["total_click_share"] = pa.array(total_click)
    columns["total_conversion_share"] = pa.array(total_conversion)
    return pa.Table.from_pydict({k: _combine(v) for k, v in columns.items()}, schema=TOP3_CORE_SCHEMA)


def _combine(column):
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _key(table: pa.Table, groups: Groups, g: int) -> tuple[str, str, int]:
    row = int(groups.first[g])
    return table["department_name"][row].as_py(), table["search_term"][row].as_py(), int(groups.min_freq[g])


def _pivot_rows(rows: list[dict], stats: Top3Stats) -> dict:
    """The top-3 row of one group given as a few row dicts (where batches meet)."""
    picks: dict[int, dict] = {}
    ranked = 0
    for row in rows:
        rank = row["click_share_rank"]
        if 1 <= rank <= 3:
            ranked += 1
            picks.setdefault(rank, row)
    freqs = [row["search_frequency_rank"] for row in rows]
    out = {
        "department_name": rows[0]["department_name"],
        "search_term": rows[0]["search_term"],
        "search_frequency_rank": min(freqs),
    }
    for rank in (1, 2, 3):
        pick = picks.get(rank)
        out[f"clicked_asin_{rank}"] = pick and pick["clicked_asin"]
        out[f"clicked_item_name_{rank}"] = pick and pick["clicked_item_name"]
        out[f"click_share_{rank}"] = pick and pick["click_share"]
        out[f"conversion_share_{rank}"] = pick and pick["conversion_share"]
    # summed in rank order, as pivot() and the native pivot do, so the totals agree to the bit
    out["total_click_share"] = sum(picks[r]["click_share"] for r in (1, 2, 3) if r in picks)
    out["total_conversion_share"] = sum(picks[r]["conversion_share"] for r in (1, 2, 3) if r in picks)
    stats.terms += 1
    stats.max_products_per_term = max(stats.max_products_per_term, len(rows))
    stats.terms_over_three_products += len(rows) > 3
    stats.duplicate_click_share_ranks += ranked - len(picks)
    stats.mixed_frequency_ranks += min(freqs) != max(freqs)
    return out


class KeyHashLog:
    """Every group's key hash, kept to prove at the end that no key came twice, in bounded memory.

    Hashes gather in memory up to `buffer_hashes` (2 MB); past that they are split by
    their top bits into `buckets` files in a temporary directory, so that at the end each
    bucket is sorted and checked on its own. Equal hashes always land in the same bucket.
    (An 8 MB buffer split by argsort made memory jump by 40 MB at every spill.)
    Holding all of them instead grew the parse step by 8 bytes per term (26 MB for a 3 GB
    report), against the promise of memory that does not grow with the report."""

    def __init__(self, buffer_hashes: int = 1 << 18, buckets: int = 64):
        self._limit = buffer_hashes
        self._buckets = buckets
        self._shift = np.uint64(64 - (buckets - 1).bit_length())
        self._pending: list[np.ndarray] = []
        self._pending_n = 0
        self._spill: tempfile.TemporaryDirectory | None = None

    def extend(self, hashes: np.ndarray) -> None:
        self._pending.append(hashes)
        self._pending_n += len(hashes)
        if self._pending_n >= self._limit:
            self._spill_pending()

    def _bucket_path(self, bucket: int) -> str:
        return os.path.join(self._spill.name, f"{bucket:03d}.u64")

    def _spill_pending(self) -> None:
        if self._spill is None:
            self._spill = tempfile.TemporaryDirectory(prefix="floodgate-keys-")
        hashes = np.concatenate(self._pending)
        self._pending, self._pending_n = [], 0
        bucket = (hashes >> self._shift).astype(np.uint8)
        for b in np.unique(bucket):
            with open(self._bucket_path(int(b)), "ab") as f:
                hashes[bucket == b].tofile(f)

    def repeats(self) -> int:
        """How many hashes repeat one seen before; releases the log."""
        try:
            if self._spill is None:
                return _repeats(np.concatenate(self._pending) if self._pending else np.zeros(0, np.uint64))
            if self._pending:
                self._spill_pending()
            return sum(
                _repeats(np.fromfile(self._bucket_path(b), dtype=np.uint64))
                for b in range(self._buckets)
                if os.path.exists(self._bucket_path(b))
            )
        finally:
            self._pending, self._pending_n = [], 0
            if self._spill is not None:
                self._spill.cleanup()
                self._spill = None


def _repeats(hashes: np.ndarray) -> int:
    hashes.sort()
    return int(np.count_nonzero(hashes[1:] == hashes[:-1]))


class Top3Stitcher:
    """Pivots batches in file order, joining the group split where one batch meets the next.

    `add` takes a batch with its groups and, optionally, the pivot of its inner groups
    (all but the first and last) already made: the native scanner makes it on its threads.
    The edge groups are pivoted here, in plain Python: they are a few rows per batch, and
    their top-3 rows are gathered and handed out a few thousand at a time, so the output
    is in file order except for them."""

    EDGE_ROWS_PER_TABLE = 4096

    def __init__(self) -> None:
        self.stats = Top3Stats()
        self._held: list[dict] | None = None  # rows of the last group, which the next batch may continue
        self._held_key: tuple[str, str, int] | None = None
        self._hashes = KeyHashLog()  # key hash of every group seen, to prove none comes back
        self._edge_rows: list[dict] = []

    def _pivot_edge(self, rows: list[dict], out: list[pa.Table], force: bool = False) -> None:
        self._edge_rows.append(_pivot_rows(rows, self.stats))
        if force or len(self._edge_rows) >= self.EDGE_ROWS_PER_TABLE:
            out.append(pa.Table.from_pylist(self._edge_rows, schema=TOP3_CORE_SCHEMA))
            self._edge_rows = []

    def add(self, table: pa.Table, groups: Groups, inner: pa.Table | None = None) -> list[pa.Table]:
        n = len(groups)
        if n == 0:
            return []
        self.stats.rows_in += table.num_rows
        out: list[pa.Table] = []
        first_rows = table.slice(0, int(groups.size[0])).to_pylist()
        first_key = _key(table, groups, 0)
        hashes = groups.key_hash
        if self._held is not None and self._held_key[:2] == first_key[:2]:
            first_rows = self._held + first_rows  # the held group goes on in this batch
            first_key = (*first_key[:2], min(first_key[2], self._held_key[2]))
            hashes = hashes[1:]  # one group, already counted
        elif self._held is not None:
            self._pivot_edge(self._held, out)
        self._hashes.extend(hashes)
        if n == 1:
            self._held, self._held_key = first_rows, first_key
            return out
        self._pivot_edge(first_rows, out)
        if n > 2:
            inner_selection = slice(1, n - 1)
            self.stats.count_inner(groups)
            out.append(inner if inner is not None else pivot(table, groups, inner_selection))
        last = n - 1
        self._held = table.slice(int(groups.first[last]), int(groups.size[last])).to_pylist()
        self._held_key = _key(table, groups, last)
        return out

    def finish(self) -> list[pa.Table]:
        """The last group's row; raises NotGrouped if a term's rows were not all together."""
        held, self._held = self._held, None
        repeats = self._hashes.repeats()
        if repeats:
            raise NotGrouped(repeats)
        out: list[pa.Table] = []
        if held is not None:
            self._pivot_edge(held, out, force=True)
        elif self._edge_rows:
            out.append(pa.Table.from_pylist(self._edge_rows, schema=TOP3_CORE_SCHEMA))
            self._edge_rows = []
        return out


class Top3Writer:
    """Writes top-3 tables to Parquet, adding the week and marketplace; keeps a preview."""

    def __init__(self, out: BinaryIO, week_start: date, marketplace_id: str, compression: str = "none"):
        # one long column of each constant, sliced to each table's length (no copy)
        self._week = pa.repeat(pa.scalar(week_start, pa.date32()), 1 << 16)
        self._marketplace = pa.repeat(pa.scalar(marketplace_id, pa.string()), 1 << 16)
        self._sink = ParquetSink(
            out,
            TOP3_SCHEMA,
            row_group_rows=16_384,
            compression=compression,
            use_dictionary=["week_start", "marketplace_id", "department_name"],
            # the warehouse checks a week from these without reading its rows
            write_statistics=[
                "week_start",
                "search_frequency_rank",
                *(f"{kind}_share_{rank}" for kind in ("click", "conversion") for rank in (1, 2, 3)),
                "total_click_share",
                "total_conversion_share",
            ],
        )
        self.preview: pa.Table | None = None

    @property
    def rows(self) -> int:
        return self._sink.rows

    def write(self, tables: list[pa.Table]) -> None:
        # A batch arrives in pieces (its edge groups, its inner groups); the sink gathers
        # them into row groups of a useful size.
        for table in tables:
            if table.num_rows == 0:
                continue
            if "week_start" not in table.column_names:
                n = table.num_rows
                if n > len(self._week):
                    self._week = pa.repeat(self._week[0], n)
                    self._marketplace = pa.repeat(self._marketplace[0], n)
                constants = [self._week.slice(0, n), self._marketplace.slice(0, n)]
                table = pa.Table.from_arrays(constants + table.columns, schema=TOP3_SCHEMA)
            if self.preview is None:
                self.preview = table.slice(0, 5)
            self._sink.write(table)

    def close(self) -> None:
        self._sink.close()


def build_top3_parquet(
    parsed: BinaryIO,
    out: BinaryIO,
    week_start: date,
    marketplace_id: str,
    *,
    batch_rows: int = 32_768,
    compression: str = "none",
) -> tuple[Top3Stats, pa.Table]:
    """Stream parsed rows in file order into one top-3 row per (department, term).

    Raises NotGrouped part-way when the rows are not grouped by term: the caller must then
    discard `out` and use build_top3_parquet_any_order. Returns the stats and a preview."""
    import pyarrow.parquet as pq

    stitcher = Top3Stitcher()
    writer = Top3Writer(out, week_start, marketplace_id, compression)
    try:
        for record_batch in pq.ParquetFile(parsed).iter_batches(batch_size=batch_rows):
            table = pa.Table.from_batches([record_batch])
            writer.write(stitcher.add(table, find_groups(table)))
        writer.write(stitcher.finish())
    finally:
        writer.close()
    return stitcher.stats, writer.preview if writer.preview is not None else TOP3_SCHEMA.empty_table()


def top3_any_order(
    batches: pa.RecordBatchReader, week_start: date, marketplace_id: str, *, memory_limit: str, temp_dir: str
) -> pa.RecordBatchReader:
    """The same pivot by a hash group-by in DuckDB, for rows in any order.

    Bounded by DuckDB's memory limit (it spills to temp_dir) rather than by one batch, and
    slower; used only for a report that is not grouped by term. The extra column
    products_in_term feeds the stats and is dropped by the caller."""
    import duckdb

    con = duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": temp_dir, "threads": 2})
    con.register("parsed", batches)
    pivots = ",\n".join(
        f"arg_min({column}, row_index) FILTER (WHERE click_share_rank = {rank}) AS {column}_{rank}"
        for rank in (1, 2, 3)
        for column in ("clicked_asin", "clicked_item_name", "click_share", "conversion_share")
    )
    totals = " + ".join(f"coalesce(click_share_{r}, 0)" for r in (1, 2, 3))
    conversion = " + ".join(f"coalesce(conversion_share_{r}, 0)" for r in (1, 2, 3))
    query = f"""
        WITH numbered AS (SELECT *, row_number() OVER () AS row_index FROM parsed),
        pivoted AS (
            SELECT ?::DATE AS week_start, ?::VARCHAR AS marketplace_id, department_name, search_term,
                   min(search_frequency_rank) AS search_frequency_rank, count(*) AS products_in_term,
                   count(*) FILTER (WHERE click_share_rank BETWEEN 1 AND 3)
                     - count(DISTINCT click_share_rank) FILTER (WHERE click_share_rank BETWEEN 1 AND 3) AS duplicate_ranks,
                   min(search_frequency_rank) <> max(search_frequency_rank) AS mixed_ranks,
                   {pivots}
            FROM numbered GROUP BY department_name, search_term
        )
        SELECT *, {totals} AS total_click_share, {conversion} AS total_conversion_share
        FROM pivoted ORDER BY search_frequency_rank, department_name, search_term
    """
    return con.execute(query, [week_start, marketplace_id]).to_arrow_reader(32_768)


def build_top3_parquet_any_order(
    parsed: BinaryIO,
    out: BinaryIO,
    week_start: date,
    marketplace_id: str,
    *,
    batch_rows: int = 32_768,
    memory_limit: str = "512MB",
    temp_dir: str = "/tmp",
    compression: str = "none",
) -> tuple[Top3Stats, pa.Table]:
    """build_top3_parquet for rows in any order, by DuckDB's hash aggregation."""
    import pyarrow.parquet as pq

    source = pq.ParquetFile(parsed)
    reader = pa.RecordBatchReader.from_batches(source.schema_arrow, source.iter_batches(batch_size=batch_rows))
    stats = Top3Stats(rows_in=source.metadata.num_rows)
    writer = Top3Writer(out, week_start, marketplace_id, compression)
    try:
        for record_batch in top3_any_order(reader, week_start, marketplace_id, memory_limit=memory_limit, temp_dir=temp_dir):
            table = pa.Table.from_batches([record_batch])
            products = table["products_in_term"].to_numpy()
            stats.terms += table.num_rows
            stats.max_products_per_term = max(stats.max_products_per_term, int(products.max()))
            stats.terms_over_three_products += int(np.count_nonzero(products > 3))
            stats.duplicate_click_share_ranks += int(pc.sum(table["duplicate_ranks"]).as_py() or 0)
            stats.mixed_frequency_ranks += int(pc.sum(pc.cast(table["mixed_ranks"], pa.int64())).as_py() or 0)
            writer.write([table.drop_columns(["products_in_term", "duplicate_ranks", "mixed_ranks"]).cast(TOP3_SCHEMA)])
    finally:
        writer.close()
    return stats, writer.preview if writer.preview is not None else TOP3_SCHEMA.empty_table()

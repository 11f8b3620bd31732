"""Runs of rows that share a department and search term: the unit of the top-3 pivot.

The native scanner finds them while it parses (record_scanner.c, find_groups); this module
holds their shape and the same computation over an Arrow table, for rows read back from
Parquet. Each group carries a hash of its key, with which the pivot proves that no term
comes back in a later group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

@dataclass(frozen=True)
class InnerCounts:
    """Counts over a batch's inner groups (all but the first and last), for Top3Stats."""

    max_size: int
    over_three: int
    duplicate_ranks: int  # rows whose click-share rank 1-3 repeats one seen before in the group
    mixed_freq: int  # groups whose rows disagree on the search frequency rank

    @classmethod
    def of(cls, size: np.ndarray, picks: list[np.ndarray], ranked: np.ndarray, min_freq, max_freq) -> "InnerCounts":
        inner = slice(1, len(size) - 1)
        if len(size) <= 2:
            return cls(0, 0, 0, 0)
        picked = sum((pick[inner] >= 0).astype(np.int64) for pick in picks)
        return cls(
            int(size[inner].max()),
            int(np.count_nonzero(size[inner] > 3)),
            int((ranked[inner] - picked).sum()),
            int(np.count_nonzero(min_freq[inner] != max_freq[inner])),
        )


@dataclass
class Groups:
    first: np.ndarray  # first row of each group
    size: np.ndarray  # rows in each group
    picks: list[np.ndarray]  # row of click-share rank 1, 2, 3 (the first such row), or -1
    min_freq: np.ndarray  # smallest search frequency rank in the group
    max_freq: np.ndarray
    ranked: np.ndarray  # rows with a click-share rank of 1 to 3
    key_hash: np.ndarray  # uint64 hash of (department, term)
    inner: InnerCounts

    def __len__(self) -> int:
        return len(self.first)


def _to_numpy(array) -> np.ndarray:
    return array.to_numpy(zero_copy_only=False)


def find_groups(table: pa.Table) -> Groups:
    """The groups of consecutive rows of `table`, as the native scanner reports them."""
    n = table.num_rows
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Groups(
            empty, empty, [empty, empty, empty], empty, empty, empty, np.zeros(0, dtype=np.uint64), InnerCounts(0, 0, 0, 0)
        )
    dept, term = table["department_name"], table["search_term"]
    changed = pc.or_(pc.not_equal(dept.slice(1), dept.slice(0, n - 1)), pc.not_equal(term.slice(1), term.slice(0, n - 1)))
    first = np.concatenate(([0], np.flatnonzero(_to_numpy(changed)) + 1)).astype(np.int64)
    size = np.diff(first, append=n)
    group_of_row = np.repeat(np.arange(len(first)), size)
    freq = _to_numpy(table["search_frequency_rank"])
    click_rank = _to_numpy(table["click_share_rank"])
    picks = []
    for rank in (1, 2, 3):
        rows = np.flatnonzero(click_rank == rank)
        groups = group_of_row[rows]
        is_first = np.ones(len(rows), dtype=bool)
        is_first[1:] = groups[1:] != groups[:-1]
        pick = np.full(len(first), -1, dtype=np.int64)
        pick[groups[is_first]] = rows[is_first]
        picks.append(pick)
    ranked = np.bincount(group_of_row[(click_rank >= 1) & (click_rank <= 3)], minlength=len(first))
    from engine.search_terms.record_scanner import key_hashes  # the native hash; imports this module

    key_hash = key_hashes(_single_chunk(dept), _single_chunk(term), first)
    min_freq, max_freq, ranked = np.minimum.reduceat(freq, first), np.maximum.reduceat(freq, first), ranked.astype(np.int64)
    return Groups(
        first, size, picks, min_freq, max_freq, ranked, key_hash, InnerCounts.of(size, picks, ranked, min_freq, max_freq)
    )


def _single_chunk(column) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column

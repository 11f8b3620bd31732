"""What an upsert applies, what it reports, and the rules both databases follow.

Rules (the same in PostgreSQL and SQLite):

- One transaction: every row of the upload is applied, or none is.
- A column the file does not have is left as it is on existing products (and takes its
  default on new ones): a file of sku and price updates prices only.
- attributes: the file's unknown columns are merged into the product's attributes; an
  empty cell removes that key; keys the file does not have stay.
- A row whose values equal the product's is not written at all (no new row version, no
  index entry, no updated_at change): it counts as unchanged. (PostgreSQL does not even
  receive a row that equals the one that last wrote its product: row_fingerprints.py.)
- Uploads to one table are applied one at a time (an advisory lock in PostgreSQL, the
  write lock in SQLite), so two uploads never interleave.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.catalog.columns import ACTIVE, DESCRIPTION, NAME, PRICE, SKU, STOCK
from engine.catalog.validate import attribute_column

UPDATABLE = (NAME, DESCRIPTION, PRICE, STOCK, ACTIVE)


@dataclass
class UpsertPlan:
    fields: list[str]  # catalog fields the file has, sku first
    attributes: list[str]  # keys of its unknown columns, for attr_0, attr_1, ...
    rows: int = 0  # rows that will be applied, for progress

    @property
    def updatable(self) -> list[str]:
        return [f for f in UPDATABLE if f in self.fields]

    @property
    def staging_columns(self) -> list[str]:
        return [SKU, *self.updatable, *(attribute_column(i) for i in range(len(self.attributes)))]


@dataclass
class UpsertCounts:
    staged: int = 0  # rows copied into the staging table
    skipped: int = 0  # rows not copied: their product is as the row left it (row_fingerprints.py)
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0  # skipped ones included
    copy_seconds: float = 0.0
    upsert_seconds: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


# (rows staged so far) after each batch
StageProgress = Callable[[int], None]

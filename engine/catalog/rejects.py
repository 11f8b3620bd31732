"""The rejects file a merchant opens: one CSV line per refused or superseded row.

Columns: `row` (as a spreadsheet numbers it, the header being row 1), `reasons` (every
reason, joined by "; "), then the file's own columns with the row's cells exactly as they
were, then `extra cells` (a JSON list of the cells past the header's width, for a row with
too many). UTF-8 with a BOM, so that Excel shows accented text as it is.

A superseded row (its SKU appears again further down, and the last occurrence wins) is
listed after the refused ones with its SKU and the row that replaced it; it is reported,
not refused, and does not count towards the reject limit.
"""

from __future__ import annotations

import csv
import io
import json
from typing import BinaryIO

from engine.catalog.repeated_skus import Superseded
from engine.catalog.validate import Reject

EXAMPLES_KEPT = 20


class RejectsWriter:
    def __init__(self, out: BinaryIO, headers: tuple[str, ...] | list[str]):
        self._text = io.TextIOWrapper(out, encoding="utf-8-sig", newline="", write_through=False)
        self._csv = csv.writer(self._text)
        self._width = len(headers)
        self._csv.writerow(["row", "reasons", *headers, "extra cells"])
        self.rejected = 0
        self.superseded = 0
        self.examples: list[Reject] = []  # the first few, for metadata and errors

    def write(self, rejects: list[Reject]) -> None:
        for reject in rejects:
            cells = list(reject.cells)
            extra = cells[self._width :]
            cells = cells[: self._width] + [""] * (self._width - len(cells))
            self._csv.writerow([reject.row, "; ".join(reject.reasons), *cells, json.dumps(extra) if extra else ""])
            if len(self.examples) < EXAMPLES_KEPT:
                self.examples.append(reject)
        self.rejected += len(rejects)

    def write_superseded(self, superseded: Superseded, sku_column: int) -> None:
        """A line for each earlier occurrence of a repeated SKU."""
        cells = [""] * self._width
        for chunk in superseded.chunks():
            for row, sku, kept in chunk:
                cells[sku_column] = sku
                self._csv.writerow([row, f"superseded: sku {sku!r} appears again at row {kept}, which is kept", *cells, ""])
        self.superseded += len(superseded)

    def close(self) -> None:
        """Flush, leaving the binary stream open for its owner to publish."""
        self._text.flush()
        self._text.detach()

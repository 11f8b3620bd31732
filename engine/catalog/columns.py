"""The catalog's columns, the header names each one is recognised by, and header matching.

A header cell matches a column when, compared case-insensitively with runs of spaces,
underscores, hyphens and dots read as one space, it is the column's name or one of its
aliases: `Product_ID`, `product id` and ` PRODUCT-ID ` all name `sku`. Headers that match no
column are kept: their cells go into the product's `attributes` (JSON), keyed by the
header as written (trimmed). A header cell left empty gets the key `column_<n>` (n counts
from 1), so a trailing delimiter on every line still loses nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SKU, NAME, DESCRIPTION, PRICE, STOCK, ACTIVE = "sku", "name", "description", "price", "stock", "active"
FIELDS = (SKU, NAME, DESCRIPTION, PRICE, STOCK, ACTIVE)

# Documented in the README's catalog section; each alias is in normalized form.
ALIASES: dict[str, tuple[str, ...]] = {
    SKU: ("sku", "product sku", "item sku", "sku code", "product id", "product code", "item id", "item code",
          "item number", "article number", "article no"),
    NAME: ("name", "product name", "item name", "title", "product title"),
    DESCRIPTION: ("description", "desc", "product description", "long description", "details", "body"),
    PRICE: ("price", "unit price", "list price", "retail price", "sale price"),
    STOCK: ("stock", "qty", "quantity", "inventory", "stock quantity", "stock level", "on hand", "quantity on hand",
            "stock qty", "units in stock"),
    ACTIVE: ("active", "is active", "enabled", "is enabled", "published", "is published"),
}

_SEPARATORS = re.compile(r"[\s_\-.]+")


def normalize_header(text: str) -> str:
    return _SEPARATORS.sub(" ", text.replace("\ufeff", "")).strip().lower()


_BY_ALIAS = {alias: field for field, aliases in ALIASES.items() for alias in aliases}


class HeaderError(ValueError):
    """The header row cannot be used: no sku column, or two columns for one field."""


@dataclass(frozen=True)
class HeaderMap:
    """Where each catalog field and each kept extra column is in a row of the file."""

    headers: tuple[str, ...]  # as written, trimmed
    fields: dict[str, int]  # field → column index, for the fields the file has
    extras: tuple[tuple[str, int], ...]  # (attribute key, column index) of unknown columns

    @property
    def width(self) -> int:
        return len(self.headers)

    def describe(self) -> str:
        parts = [f"{f} ← {self.headers[i]!r}" for f, i in self.fields.items()]
        parts += [f"attributes[{k!r}]" for k, _ in self.extras]
        return ", ".join(parts)


def match_headers(headers: list[str], where: str) -> HeaderMap:
    """Map a header row to the catalog fields; HeaderError (naming `where`) when unusable."""
    trimmed = tuple((h or "").replace("\ufeff", "").strip() for h in headers)
    fields: dict[str, int] = {}
    extras: list[tuple[str, int]] = []
    keys: dict[str, int] = {}
    for index, header in enumerate(trimmed):
        field = _BY_ALIAS.get(normalize_header(header))
        if field is not None:
            if field in fields:
                raise HeaderError(
                    f"{where}: columns {fields[field] + 1} ({trimmed[fields[field]]!r}) and {index + 1} ({header!r}) "
                    f"both give {field}; keep one of them"
                )
            fields[field] = index
            continue
        key = header or f"column_{index + 1}"
        if key in keys:
            raise HeaderError(f"{where}: columns {keys[key] + 1} and {index + 1} are both named {key!r}")
        keys[key] = index
        extras.append((key, index))
    if SKU not in fields:
        shown = ", ".join(repr(h) for h in trimmed[:12]) or "nothing"
        raise HeaderError(
            f"{where}: no sku column in the header row (found {shown}); name one of: " + ", ".join(ALIASES[SKU])
        )
    return HeaderMap(trimmed, dict(sorted(fields.items(), key=lambda kv: FIELDS.index(kv[0]))), tuple(extras))

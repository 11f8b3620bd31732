"""Raw string columns → typed catalog rows, and the rows refused with every reason.

Checks run column-wise (pyarrow.compute) over a whole batch; only the refused rows, which
are few, are looked at one by one to word their reasons. Rules (README, catalog section):

- every cell is trimmed of surrounding whitespace; an empty cell is no value (NULL);
- a row whose cells are all empty is a blank row: skipped, not refused;
- sku: required, at most 255 characters;
- price: a decimal ≥ 0 such as `1234.5` or `1,234.50` (comma thousands separators in
  groups of three, a point for decimals), at most 4 decimal places and 14 integer digits;
- stock: a whole number ≥ 0 (`1,200` and `12.0` are accepted), at most 2,147,483,647;
- active: true/false/yes/no/1/0, any case; empty means true;
- no cell may hold a NUL character (PostgreSQL text cannot);
- a row with more or fewer cells than the header is refused (extra cells that are all
  empty, a trailing delimiter, are dropped instead).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.catalog.columns import ACTIVE, DESCRIPTION, NAME, PRICE, SKU, STOCK, HeaderMap
from engine.catalog.numpy_arrays import string_offsets_and_bytes
from engine.catalog.raw_rows import RawBatch

PRICE_TYPE = pa.decimal128(18, 4)
MAX_SKU_CHARS = 255
MAX_STOCK = 2**31 - 1
TRUE_WORDS = ("true", "yes", "1")
FALSE_WORDS = ("false", "no", "0")

_GROUPED = r"(?:\d{1,3}(?:,\d{3})+|\d+)"
_DECIMAL = rf"^\+?{_GROUPED}(?:\.\d+)?$"
_NEGATIVE_DECIMAL = rf"^-{_GROUPED}(?:\.\d+)?$"
_WHOLE = rf"^\+?{_GROUPED}(?:\.0+)?$"
_NEGATIVE_WHOLE = rf"^-{_GROUPED}(?:\.0+)?$"
# What a good cell looks like, in one pattern: most batches have only good cells, and one
# match tells so (the detailed checks, five patterns, run only for a batch that has a bad one)
_GOOD_PRICE = r"^\+?(?:\d{1,3}(?:,\d{3}){0,4}|\d{1,14})(?:\.\d{1,4})?$|^$"
_GOOD_STOCK = r"^\+?(?:\d{1,3}(?:,\d{3}){0,2}|\d{1,9})$|^$"


@dataclass
class Reject:
    row: int
    reasons: list[str]
    cells: list[str]  # as in the file: in header order, or as found for a ragged row


@dataclass
class ValidatedBatch:
    table: pa.Table  # the valid rows, in output_schema
    rejects: list[Reject]
    blank: int  # blank rows skipped


def attribute_column(i: int) -> str:
    return f"attr_{i}"


def output_schema(header_map: HeaderMap) -> pa.Schema:
    """Columns of the validated rows: the row number, the fields the file has, its extra columns."""
    types = {SKU: pa.string(), NAME: pa.string(), DESCRIPTION: pa.string(), PRICE: PRICE_TYPE, STOCK: pa.int32(),
             ACTIVE: pa.bool_()}
    fields = [pa.field("row", pa.int64(), nullable=False), pa.field(SKU, pa.string(), nullable=False)]
    fields += [pa.field(f, types[f]) for f in header_map.fields if f != SKU]
    fields += [pa.field(attribute_column(i), pa.string()) for i in range(len(header_map.extras))]
    return pa.schema(fields)


def _or(masks: list[pa.Array], n: int) -> pa.Array:
    return functools.reduce(pc.or_, masks) if masks else pa.array([False] * n, pa.bool_())


def _may_need_trim(column: pa.Array) -> bool:
    """Whether a cell of the column may begin or end with whitespace: its first or last byte
    is ASCII whitespace or a control character, or not ASCII (what Unicode calls space is
    left to utf8_trim_whitespace to decide). Read off the first and last byte of each cell
    (two gathers over the offsets): a trim copies every byte of every cell, 34 ms for the
    500k-row bench file, and a merchant's export rarely has a cell to trim."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return True
    if len(column) == 0:
        return False
    offsets, data = string_offsets_and_bytes(column)
    starts, ends = offsets[:-1], offsets[1:]
    filled = ends > starts
    edges = np.concatenate([data[starts[filled]], data[ends[filled] - 1]])
    return bool(((edges <= 0x20) | (edges >= 0x7F)).any())


def _null_if_empty(values: pa.Array, empty: pa.Array) -> pa.Array:
    if not pc.any(empty).as_py():  # the usual batch: if_else would copy every value for nothing
        return values
    return pc.if_else(empty, pa.scalar(None, values.type), values)


class Validator:
    def __init__(self, header_map: HeaderMap):
        self.map = header_map
        self.schema = output_schema(header_map)

    def validate(self, raw: RawBatch) -> ValidatedBatch:
        n = len(raw.rows)
        cells = [pc.fill_null(c, "") for c in raw.columns]
        trimmed = [pc.utf8_trim_whitespace(c) if _may_need_trim(c) else c for c in cells]
        # byte lengths come from the offsets; utf8_length reads every byte of every cell to
        # count characters (46 ms against 8 ms for the 500k-row bench file)
        empty = [pc.equal(pc.binary_length(t), 0) for t in trimmed]
        blank = functools.reduce(pc.and_, empty) if empty else pa.array([True] * n)
        problems: dict[str, pa.Array] = {}  # reason key → rows it applies to
        values: dict[str, pa.Array] = {}
        fields = self.map.fields

        if raw.may_hold_nul:
            for i, column in enumerate(cells):
                problems[f"nul:{i}"] = pc.match_substring(column, "\x00")

        i = fields[SKU]
        problems["sku_empty"] = empty[i]
        problems["sku_long"] = pc.greater(pc.utf8_length(trimmed[i]), MAX_SKU_CHARS)
        values[SKU] = trimmed[i]
        for field in (NAME, DESCRIPTION):
            if field in fields:
                i = fields[field]
                values[field] = _null_if_empty(trimmed[i], empty[i])
        if PRICE in fields:
            values[PRICE] = self._price(trimmed[fields[PRICE]], empty[fields[PRICE]], problems)
        if STOCK in fields:
            values[STOCK] = self._stock(trimmed[fields[STOCK]], empty[fields[STOCK]], problems)
        if ACTIVE in fields:
            i = fields[ACTIVE]
            lowered = pc.utf8_lower(trimmed[i])
            problems["active_word"] = pc.invert(pc.is_in(lowered, pa.array([*TRUE_WORDS, *FALSE_WORDS, ""])))
            values[ACTIVE] = pc.invert(pc.is_in(lowered, pa.array(FALSE_WORDS)))
        for j, (_, i) in enumerate(self.map.extras):
            values[attribute_column(j)] = _null_if_empty(trimmed[i], empty[i])

        bad = pc.and_(_or(list(problems.values()), n), pc.invert(blank))
        keep = pc.invert(pc.or_(bad, blank))
        columns = [raw.rows] + [values[name] for name in self.schema.names[1:]]
        table = pa.Table.from_arrays(columns, schema=self.schema)
        if pc.all(keep).as_py() is not True:  # a filter copies every column, even when it keeps all
            table = table.filter(keep)
        rejects = self._rejects(raw, cells, problems, bad)
        rejects += [self._ragged(row, found) for row, found in raw.ragged]
        rejects.sort(key=lambda r: r.row)
        return ValidatedBatch(table, rejects, pc.sum(blank).as_py() or 0)

    # -- columns --------------------------------------------------------------------------------

    def _price(self, text: pa.Array, empty: pa.Array, problems: dict) -> pa.Array:
        if pc.all(pc.match_substring_regex(text, _GOOD_PRICE)).as_py() is not False:
            digits = pc.replace_substring(text, ",", "")
            if pc.any(pc.starts_with(text, "+")).as_py():  # a look at one byte a cell; the replace copies them all
                digits = pc.replace_substring(digits, "+", "")
            return pc.cast(_null_if_empty(digits, empty), PRICE_TYPE)
        plain = pc.match_substring_regex(text, _DECIMAL)
        negative = pc.and_(pc.match_substring_regex(text, _NEGATIVE_DECIMAL), pc.match_substring_regex(text, "[1-9]"))
        minus_zero = pc.and_(pc.match_substring_regex(text, _NEGATIVE_DECIMAL), pc.invert(negative))
        number = pc.or_(plain, minus_zero)
        digits = pc.replace_substring_regex(text, r"[+,\-]", "")
        problems["price_format"] = pc.invert(pc.or_(pc.or_(number, negative), empty))
        problems["price_negative"] = negative
        problems["price_precision"] = pc.and_(number, pc.match_substring_regex(digits, r"\.\d{5,}$"))
        problems["price_large"] = pc.and_(number, pc.match_substring_regex(digits, r"^\d{15,}"))
        usable = pc.and_(number, pc.invert(pc.or_(problems["price_precision"], problems["price_large"])))
        return pc.cast(pc.if_else(usable, digits, pa.scalar(None, pa.string())), PRICE_TYPE)

    def _stock(self, text: pa.Array, empty: pa.Array, problems: dict) -> pa.Array:
        # plain digits in every cell, the usual column: cast as they are (a byte scan and the
        # cast, against 22 ms for the pattern below on the 500k-row bench file)
        if pc.all(pc.or_(pc.ascii_is_decimal(text), empty)).as_py() is not False:
            try:
                as_int = pc.cast(_null_if_empty(text, empty), pa.int64())
            except pa.ArrowInvalid:  # more digits than an int64 holds: worded below
                as_int = None
            if as_int is not None and (pc.max(as_int).as_py() or 0) <= MAX_STOCK:
                return pc.cast(as_int, pa.int32())
        if pc.all(pc.match_substring_regex(text, _GOOD_STOCK)).as_py() is not False:
            digits = pc.replace_substring(pc.replace_substring(text, ",", ""), "+", "")
            return pc.cast(pc.cast(_null_if_empty(digits, empty), pa.int64()), pa.int32())
        plain = pc.match_substring_regex(text, _WHOLE)
        negative = pc.and_(pc.match_substring_regex(text, _NEGATIVE_WHOLE), pc.match_substring_regex(text, "[1-9]"))
        minus_zero = pc.and_(pc.match_substring_regex(text, _NEGATIVE_WHOLE), pc.invert(negative))
        number = pc.or_(plain, minus_zero)
        digits = pc.replace_substring_regex(pc.replace_substring_regex(text, r"[+,\-]", ""), r"\.0+$", "")
        problems["stock_format"] = pc.invert(pc.or_(pc.or_(number, negative), empty))
        problems["stock_negative"] = negative
        fits = pc.and_(number, pc.less_equal(pc.utf8_length(digits), 10))
        as_int = pc.cast(pc.if_else(fits, digits, pa.scalar(None, pa.string())), pa.int64())
        too_large = pc.or_kleene(pc.and_(number, pc.invert(fits)), pc.greater(as_int, MAX_STOCK))
        problems["stock_large"] = pc.fill_null(too_large, False)
        usable = pc.and_(number, pc.invert(problems["stock_large"]))
        return pc.cast(pc.if_else(usable, as_int, pa.scalar(None, pa.int64())), pa.int32())

    # -- reasons --------------------------------------------------------------------------------

    def _rejects(self, raw: RawBatch, cells: list[pa.Array], problems: dict, bad: pa.Array) -> list[Reject]:
        index = pc.indices_nonzero(bad)
        if len(index) == 0:
            return []
        flagged = {key: mask.take(index).to_pylist() for key, mask in problems.items()}
        found = [c.take(index).to_pylist() for c in cells]
        rows = raw.rows.take(index).to_pylist()
        rejects = []
        for j, row in enumerate(rows):
            row_cells = [column[j] for column in found]
            reasons = [self._reason(key, row_cells) for key, marks in flagged.items() if marks[j]]
            rejects.append(Reject(row, reasons, row_cells))
        return rejects

    def _reason(self, key: str, row_cells: list[str]) -> str:
        def cell(field: str) -> str:
            return row_cells[self.map.fields[field]].strip()

        if key.startswith("nul:"):
            return f"{self.map.headers[int(key[4:])] or 'an unnamed column'} contains a NUL character"
        return {
            "sku_empty": lambda: "sku is empty",
            "sku_long": lambda: f"sku is longer than {MAX_SKU_CHARS} characters",
            "price_format": lambda: f"price {cell(PRICE)!r} is not a number like 1234.5 or 1,234.50",
            "price_negative": lambda: f"price {cell(PRICE)!r} is negative",
            "price_precision": lambda: f"price {cell(PRICE)!r} has more than 4 decimal places",
            "price_large": lambda: f"price {cell(PRICE)!r} is too large (at most 14 digits before the point)",
            "stock_format": lambda: f"stock {cell(STOCK)!r} is not a whole number",
            "stock_negative": lambda: f"stock {cell(STOCK)!r} is negative",
            "stock_large": lambda: f"stock {cell(STOCK)!r} is larger than {MAX_STOCK:,}",
            "active_word": lambda: f"active {cell(ACTIVE)!r} is not one of true/false/yes/no/1/0",
        }[key]()

    def _ragged(self, row: int, found: list[str]) -> Reject:
        reason = f"has {len(found)} cells where the header has {self.map.width}"
        if found and ("\n" in found[-1] or "\r" in found[-1]):
            reason += " (its last cell runs over several lines: is a closing quote missing?)"
        return Reject(row, [reason], found)

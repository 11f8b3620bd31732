"""Generate Search Terms reports in Amazon's format, reproducibly from a seed, at any size.

Used by the demo, the tests and the benchmark. Rows follow what real reports look like:
terms ordered by search frequency rank, up to three clicked ASINs per term in click-share
order, shares with four decimals whose three-product totals stay at most 1, item names
with quotes, ampersands and non-ASCII text.

    python -m engine.search_terms.sample_report --week 2024-01-07 --terms 1000 --out report.json
    python -m engine.search_terms.sample_report --week 2024-01-07 --size 300MB --gzip --out r.json.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import BinaryIO

from engine.search_terms.records import DATA_KEY, REPORT_PERIOD, REPORT_TYPE, SPEC_KEY

MARKETPLACE_US = "ATVPDKIKX0DER"
DEPARTMENTS = ("Amazon.com", "Amazon.com", "Amazon.com", "Books", "Electronics", "Beauty & Personal Care")
_WORDS = (
    "wireless earbuds bluetooth iphone case charger usb c cable laptop stand water bottle "
    "protein powder yoga mat air fryer coffee maker kindle lego set dog toys cat litter "
    "led strip lights desk lamp gaming mouse keyboard monitor 4k tv hdmi backpack running "
    "shoes women men kids socks hoodie jacket sunscreen shampoo vitamin c serum candles "
    "notebook pens organizer storage bins phone holder car mount ring light tripod"
).split()
_EXTRA = ("café", "niño", "größe", "crème brûlée", "日本", "한국어", "🎧", "💡", "naïve", "Ελληνικά")
_BRANDS = ("Anker", "Apple", "Samsung", "AmazonBasics", "Logitech", "Sony", "JBL", "Stanley", "Owala", "CeraVe")
_ASIN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
ROW_BYTES_ESTIMATE = 300  # bytes per row, for --size


def _term(rng: random.Random, index: int) -> str:
    words = rng.sample(_WORDS, rng.randint(1, 4))
    if rng.random() < 0.03:
        words.append(rng.choice(_EXTRA))
    # the index keeps every term distinct, as in the real report (a term has one rank)
    return " ".join(words) + f" {index}"


def _item_name(rng: random.Random) -> str:
    brand = rng.choice(_BRANDS)
    words = " ".join(rng.choice(_WORDS).capitalize() for _ in range(rng.randint(6, 16)))
    extra = ""
    roll = rng.random()
    if roll < 0.05:
        extra = f' with 6.1" Display & {rng.choice(_EXTRA)}'
    elif roll < 0.10:
        extra = " — Pack of 2, Black/Grey"
    return f"{brand} {words}{extra}, {rng.randint(1, 64)} Count"


def _asin(rng: random.Random) -> str:
    return "B0" + "".join(rng.choices(_ASIN_CHARS, k=8))


def records(week_start: date, terms: int, seed: int) -> Iterator[dict]:
    """The report's rows as dicts, in the order Amazon writes them."""
    rng = random.Random(seed)
    for index in range(terms):
        department = rng.choice(DEPARTMENTS)
        term = _term(rng, index)
        products = rng.choice((1, 2, 3, 3, 3, 3))
        remaining = rng.uniform(0.05, 0.95)
        shares = []
        for _ in range(products):
            share = round(rng.uniform(0.3, 0.7) * remaining, 4)
            shares.append(share)
            remaining -= share
        shares.sort(reverse=True)
        for rank, share in enumerate(shares, start=1):
            yield {
                "departmentName": department,
                "searchTerm": term,
                "searchFrequencyRank": index + 1,
                "clickedAsin": _asin(rng),
                "clickedItemName": _item_name(rng),
                "clickShareRank": rank,
                "clickShare": share,
                "conversionShare": round(share * rng.uniform(0.2, 1.0), 4),
            }


def specification(week_start: date, marketplace: str = MARKETPLACE_US) -> dict:
    return {
        "reportType": REPORT_TYPE,
        "reportOptions": {"reportPeriod": REPORT_PERIOD},
        "dataStartTime": week_start.isoformat(),
        "dataEndTime": (week_start + timedelta(days=6)).isoformat(),
        "marketplaceIds": [marketplace],
    }


def write_report(
    out: BinaryIO,
    week_start: date,
    *,
    terms: int,
    seed: int = 0,
    marketplace: str = MARKETPLACE_US,
) -> int:
    """Write a report with `terms` search terms (one to three rows each); return the rows."""
    if week_start.weekday() != 6:
        raise ValueError(f"{week_start} is not a Sunday: Amazon's weeks run Sunday to Saturday")
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    header = dumps({SPEC_KEY: specification(week_start, marketplace)})
    out.write(header[:-1].encode() + f',"{DATA_KEY}":[\n'.encode())
    rows = 0
    lines: list[str] = []

    def flush() -> None:
        out.write(((",\n" if rows > len(lines) else "") + ",\n".join(lines)).encode())
        lines.clear()

    for record in records(week_start, terms, seed):
        lines.append(dumps(record))
        rows += 1
        if len(lines) == 10_000:
            flush()
    if lines:
        flush()
    out.write(b"\n]}\n")
    return rows


def write_report_file(path: Path, week_start: date, *, terms: int, seed: int = 0, gzipped: bool | None = None) -> int:
    """Write a report to `path` (gzip when the name ends in .gz or gzipped is set)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    gzipped = path.suffix == ".gz" if gzipped is None else gzipped
    with open(path, "wb") as raw:
        if gzipped:
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
                return write_report(gz, week_start, terms=terms, seed=seed)
        return write_report(raw, week_start, terms=terms, seed=seed)


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]?B?)", text.strip().upper())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 300MB or 3GB)")
    scale = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9}[match[2]]
    return int(float(match[1]) * scale)


def terms_for_size(size_bytes: int) -> int:
    """About how many terms make a report of size_bytes (uncompressed)."""
    return max(1, int(size_bytes / ROW_BYTES_ESTIMATE / 2.5))  # 2.5 rows per term on average


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--week", type=date.fromisoformat, required=True, help="week start, a Sunday")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--terms", type=int, help="number of search terms")
    size.add_argument("--size", type=parse_size, help="approximate uncompressed size, e.g. 300MB")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gzip", action="store_true", help="gzip the output")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    terms = args.terms if args.terms is not None else terms_for_size(args.size)
    rows = write_report_file(args.out, args.week, terms=terms, seed=args.seed, gzipped=args.gzip or None)
    print(f"wrote {rows} rows ({terms} terms) to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

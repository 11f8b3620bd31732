"""Input files in the object store, their format, and the partition key each one gets.

An input is `<input prefix>/<path>` whose name ends in one of FORMATS' suffixes (gzip is
told from the bytes, so `.csv.gz` reads like `.csv`). Its partition key is `<path>` with
its suffix kept (`a.csv` and `a.json` are two files), percent-encoded outside
`A-Z a-z 0-9 . _ - ~ /`, and with every run of two or more dots encoded too. So a key is:

- stable: the same object key always gives the same partition key;
- reversible: `input_key` gives the object key back (no listing needed);
- safe for Dagster: no commas, no "...", no control characters (all encoded).
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

CSV, NDJSON, JSON, PARQUET = "csv", "ndjson", "json", "parquet"

# suffix → format; `json` is NDJSON or a top-level array, told from the first byte
FORMATS = {
    ".csv": CSV,
    ".csv.gz": CSV,
    ".ndjson": NDJSON,
    ".ndjson.gz": NDJSON,
    ".jsonl": NDJSON,
    ".jsonl.gz": NDJSON,
    ".json": JSON,
    ".json.gz": JSON,
    ".parquet": PARQUET,
}
_SAFE = "._-/"
_DOTS = re.compile(r"\.{2,}")
_VALID_KEY = re.compile(r"^[A-Za-z0-9._~\-/%]+$")


def file_format(path: str) -> str | None:
    """The format of a file by its name, or None when it is not an input."""
    lower = path.lower()
    for suffix in sorted(FORMATS, key=len, reverse=True):  # ".csv.gz" before ".gz"-less ones
        if lower.endswith(suffix) and len(path) > len(suffix) and not path.endswith("/"):
            return FORMATS[suffix]
    return None


def partition_key(key: str, prefix: str) -> str | None:
    """The partition key of the input at object key `key`, or None when it is not an input."""
    base = prefix.rstrip("/") + "/"
    if not key.startswith(base):
        return None
    path = key[len(base) :]
    if file_format(path) is None or path.rsplit("/", 1)[-1].startswith("."):
        return None  # hidden files (partial uploads, editors' temporaries) are not inputs
    encoded = quote(path, safe=_SAFE)
    return _DOTS.sub(lambda m: "%2E" * len(m.group()), encoded)


def input_key(partition: str, prefix: str) -> str:
    """The object key of the input whose partition key is `partition`."""
    return f"{prefix.rstrip('/')}/{unquote(check_partition_key(partition))}"


def check_partition_key(partition: str) -> str:
    path = unquote(partition)
    if (
        not _VALID_KEY.match(partition)
        or path.startswith("/")
        or ".." in path.split("/")
        or file_format(path) is None
    ):
        raise ValueError(f"{partition!r} is not an enrichment input partition key")
    return partition

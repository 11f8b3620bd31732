"""Uploads in the object store, and the partition key each one gets.

An upload is an object under the uploads prefix whose name ends in .csv, .tsv, .txt (each
optionally .gz) or .xlsx. Its partition key is `<path>@<etag>`, where path is the key
below the prefix: a file replaced under the same name is a new upload (a new ETag), and a
partition always names the exact bytes it was made for. Both parts are percent-encoded
outside `A-Z a-z 0-9 . _ - ~ /`, and a dot that follows a dot is encoded too, so a key is
stable (the same object always gives the same key), reversible, and safe as a Dagster
partition key: no commas, no `...` (Dagster's range separator), no brackets.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote, unquote

UPLOAD_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".txt.gz", ".xlsx")
_SAFE_PATH = "._-/"
_SAFE_ETAG = "._-"
_VALID_KEY = re.compile(r"^[A-Za-z0-9._~\-/%]+@[A-Za-z0-9._~\-%]+$")


def _encode(text: str, safe: str) -> str:
    return re.sub(r"\.(?=\.)", "%2E", quote(text, safe=safe))


def is_upload_name(key: str) -> bool:
    return key.lower().endswith(UPLOAD_SUFFIXES) and not key.rsplit("/", 1)[-1].startswith(".")


def upload_partition_key(key: str, etag: str, prefix: str) -> str | None:
    """The partition key of the object `key` (with its ETag), or None when it is not an upload."""
    base = prefix.rstrip("/") + "/"
    if not key.startswith(base) or not is_upload_name(key):
        return None
    path = _encode(key[len(base):], _SAFE_PATH)
    if path.startswith("/"):  # `uploads//a.csv`: a key that begins with a slash reads as absolute
        path = "%2F" + path[1:]
    return f"{path}@{_encode(etag, _SAFE_ETAG)}"


def parse_upload_partition_key(partition_key: str, prefix: str) -> tuple[str, str]:
    """(object key, ETag) of an upload's partition key; ValueError if it is not one."""
    if not _VALID_KEY.match(partition_key) or partition_key.startswith("/"):
        raise ValueError(f"{partition_key!r} is not an upload's partition key (<path>@<etag>)")
    path, etag = partition_key.rsplit("@", 1)
    path = unquote(path)
    if ".." in path.split("/"):
        raise ValueError(f"{partition_key!r} names a path outside the uploads prefix")
    return f"{prefix.rstrip('/')}/{path}", unquote(etag)


def upload_id(partition_key: str) -> str:
    """A short stable ID of an upload (24 hex digits), for Redis keys and idempotency keys."""
    return hashlib.sha256(partition_key.encode()).hexdigest()[:24]

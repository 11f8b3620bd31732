"""Book texts in the object store, and the book ID each one gets.

A book is `<texts prefix>/<path>.txt` or `.txt.gz` (UTF-8, gzip told from the bytes), with
an optional sidecar `<texts prefix>/<path>.json` of metadata (title, author, language,
year). Its ID is `<path>`, percent-encoded outside `A-Z a-z 0-9 . _ - ~ /`: stable (the same
key always gives the same ID), reversible, and safe as a Dagster partition key (no commas;
Dagster also reserves a few characters in ranges and selections).
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

TEXT_SUFFIXES = (".txt.gz", ".txt")
SIDECAR_SUFFIX = ".json"
_SAFE = "._-/"
_VALID_ID = re.compile(r"^[A-Za-z0-9._~\-/%]+$")


def book_id(key: str, prefix: str) -> str | None:
    """The ID of the book whose text is at `key`, or None when `key` is not a book text."""
    base = prefix.rstrip("/") + "/"
    if not key.startswith(base):
        return None
    path = key[len(base) :]
    for suffix in TEXT_SUFFIXES:
        if path.endswith(suffix) and len(path) > len(suffix):
            return quote(path[: -len(suffix)], safe=_SAFE)
    return None


def text_keys(book: str, prefix: str) -> list[str]:
    """Where the book's text may be: the plain name first."""
    path = unquote(check_book_id(book))
    base = prefix.rstrip("/")
    return [f"{base}/{path}{suffix}" for suffix in (".txt", ".txt.gz")]


def sidecar_key(book: str, prefix: str) -> str:
    return f"{prefix.rstrip('/')}/{unquote(check_book_id(book))}{SIDECAR_SUFFIX}"


def check_book_id(book: str) -> str:
    if not _VALID_ID.match(book) or book.startswith("/") or ".." in book.split("/"):
        raise ValueError(f"{book!r} is not a book ID")
    return book

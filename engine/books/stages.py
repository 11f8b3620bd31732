"""What each books stage does to one book (or one batch), without Dagster.

Every function returns a BookOutcome per book, so a batch reports exactly what happened to
each of its books; a failure of one book is an outcome, not an exception, and the asset
decides whether the batch's failure fraction fails the run.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.books.duckdb_index import BookDocument
from engine.books.records import decode_vector, encode_vector, read_record, result_key, write_record
from engine.books.source import sidecar_key, text_keys

if TYPE_CHECKING:
    from resources.object_store import ObjectInfo, ObjectStore

DONE, SKIPPED, FAILED = "done", "skipped", "failed"
_READ = 1 << 20
_METADATA = ("title", "author", "language", "year")


@dataclass(frozen=True)
class BooksLayout:
    texts_prefix: str = "books/texts"
    results_prefix: str = "books/results"
    max_book_mb: float = 1024.0  # larger texts are refused (a per-book outcome, not a crash)

    def result(self, book: str, name: str) -> str:
        return result_key(self.results_prefix, book, name)


@dataclass
class BookOutcome:
    book: str
    status: str  # done | skipped (result already there for these inputs) | failed
    reason: str = ""
    model_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    bytes: int = 0
    bad_bytes: int = 0
    warnings: list[str] = field(default_factory=list)


# -- book_text -------------------------------------------------------------------------


def find_text(store: ObjectStore, layout: BooksLayout, book: str) -> ObjectInfo | None:
    for key in text_keys(book, layout.texts_prefix):
        info = store.stat(key)
        if info is not None:
            return info
    return None


def stream_text(store: ObjectStore, key: str, digest=None, counts: dict | None = None) -> Iterator[str]:
    """The book's text in pieces: gzip told from the first bytes, UTF-8 decoded with U+FFFD
    for bytes that are not UTF-8 (counted in counts["bad_bytes"]), the decompressed bytes fed
    to digest. Memory: one piece at a time, whatever the book's size."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    counts = counts if counts is not None else {}
    counts.setdefault("bad_bytes", 0)
    counts.setdefault("bytes", 0)
    with store.open_read(key) as f:
        first = f.read(_READ)
        inflate = zlib.decompressobj(wbits=31) if first[:2] == b"\x1f\x8b" else None
        chunk = first
        while chunk:
            data = inflate.decompress(chunk) if inflate else chunk
            counts["bytes"] += len(data)
            if digest is not None:
                digest.update(data)
            text = decoder.decode(data)
            counts["bad_bytes"] += text.count("\ufffd")  # a U+FFFD in the source counts too: rare
            if text:
                yield text
            chunk = f.read(_READ)
        if inflate is not None and not inflate.eof:
            raise ValueError("the gzip stream ends before its end marker (a truncated upload?)")
        tail = decoder.decode(b"", final=True)
        counts["bad_bytes"] += tail.count("\ufffd")
        if tail:
            yield tail


def read_sidecar(store: ObjectStore, layout: BooksLayout, book: str) -> tuple[dict, list[str]]:
    """The book's metadata, and warnings about it (a sidecar that is not a JSON object)."""
    key = sidecar_key(book, layout.texts_prefix)
    try:
        with store.open_read(key) as f:
            raw = f.read(1 << 20)
    except FileNotFoundError:
        return {}, []
    try:
        data = json.loads(raw)
    except ValueError as exc:
        return {}, [f"sidecar {key} is not JSON ({exc}); the book is indexed without metadata"]
    if not isinstance(data, dict):
        return {}, [f"sidecar {key} is not a JSON object; the book is indexed without metadata"]
    metadata = {k: data.get(k) for k in _METADATA if data.get(k) is not None}
    if "year" in metadata:
        try:
            metadata["year"] = int(metadata["year"])
        except (TypeError, ValueError):
            return {k: v for k, v in metadata.items() if k != "year"}, [f"sidecar {key}: year {data['year']!r} is not a number"]
    return metadata, []


def examine_text(store: ObjectStore, layout: BooksLayout, book: str) -> BookOutcome:
    """book_text for one book: hash the text and record it with its metadata, unless the
    record already describes this version of the object (same ETag)."""
    info = find_text(store, layout, book)
    if info is None:
        return BookOutcome(book, FAILED, "no text: the object is gone")
    if info.size > layout.max_book_mb * 1e6:
        return BookOutcome(book, FAILED, f"{info.size / 1e6:.0f} MB is over the {layout.max_book_mb:g} MB limit")
    previous = read_record(store, layout.result(book, "book"))
    if previous and previous.get("etag") == info.etag and previous.get("key") == info.key:
        return BookOutcome(book, SKIPPED, bytes=previous.get("bytes", 0), bad_bytes=previous.get("bad_bytes", 0))
    digest, counts, words = hashlib.sha256(), {}, 0
    try:
        for piece in stream_text(store, info.key, digest, counts):
            words += len(piece.split())  # approximate at piece borders; a word count, not a key
    except (ValueError, OSError, zlib.error) as exc:
        return BookOutcome(book, FAILED, f"{store.uri(info.key)}: {exc}")
    if words == 0:
        return BookOutcome(book, FAILED, f"{store.uri(info.key)} is empty", bytes=counts["bytes"])
    metadata, warnings = read_sidecar(store, layout, book)
    if counts["bad_bytes"]:
        warnings.append(f"{counts['bad_bytes']} bytes were not UTF-8 and were read as U+FFFD")
    record = {
        "book_id": book,
        "key": info.key,
        "etag": info.etag,
        "content_hash": digest.hexdigest(),
        "bytes": counts["bytes"],
        "bad_bytes": counts["bad_bytes"],
        "words": words,
        "metadata": metadata,
        "warnings": warnings,
    }
    write_record(store, layout.result(book, "book"), record)
    return BookOutcome(book, DONE, bytes=counts["bytes"], bad_bytes=counts["bad_bytes"], warnings=warnings)


# -- book_summary ----------------------------------------------------------------------


def text_sizes(store: ObjectStore, layout: BooksLayout, books: list[str]) -> list[int]:
    """The books' text sizes as book_text recorded them (0 for a book without a record)."""
    return [(read_record(store, layout.result(b, "book")) or {}).get("bytes", 0) for b in books]



def summarize_book(store: ObjectStore, layout: BooksLayout, summarizer: Any, book: str) -> BookOutcome:
    """book_summary for one book: skipped when summary.json names the same text hash and
    the same summarizer and version; otherwise one summarizer call."""
    text_record = read_record(store, layout.result(book, "book"))
    if text_record is None:
        return BookOutcome(book, FAILED, "no book_text record (its text failed or was never read)")
    identity = {"content_hash": text_record["content_hash"], "summarizer": summarizer.name, "summarizer_version": summarizer.version}
    previous = read_record(store, layout.result(book, "summary"))
    if previous and all(previous.get(k) == v for k, v in identity.items()):
        return BookOutcome(book, SKIPPED)
    try:
        pieces = stream_text(store, text_record["key"])
        if hasattr(summarizer, "summarize_stream"):
            summary = summarizer.summarize_stream(pieces)
        else:
            summary = summarizer.summarize("".join(pieces))
    except FileNotFoundError:
        return BookOutcome(book, FAILED, "the text was deleted after book_text read it")
    except Exception as exc:  # a model error fails this book only; the message names no secret
        return BookOutcome(book, FAILED, f"summarizer {summarizer.name}: {type(exc).__name__}: {exc}", model_calls=1)
    if not summary.text.strip():
        return BookOutcome(book, FAILED, "the summary is empty (no sentence to keep)", model_calls=1)
    usage = {
        "input_tokens": int(getattr(summary, "input_tokens", 0) or 0),
        "output_tokens": int(getattr(summary, "output_tokens", 0) or 0),
        "cost_usd": float(getattr(summary, "cost_usd", 0.0) or 0.0),
        "model_calls": int(getattr(summary, "calls", 1) or 1),
    }
    record = {**identity, "book_id": book, "summary": summary.text, "summary_hash": _hash(summary.text), **usage}
    write_record(store, layout.result(book, "summary"), record)
    return BookOutcome(book, DONE, **usage)


# -- book_embedding --------------------------------------------------------------------


def embed_books(store: ObjectStore, layout: BooksLayout, embedder: Any, books: list[str]) -> list[BookOutcome]:
    """book_embedding for a batch: one batched embedder call for the books whose summary or
    embedder changed; the others are skipped."""
    outcomes: dict[str, BookOutcome] = {}
    todo: list[tuple[str, dict]] = []
    for book in books:
        summary = read_record(store, layout.result(book, "summary"))
        if summary is None:
            outcomes[book] = BookOutcome(book, FAILED, "no summary")
            continue
        identity = {"summary_hash": summary["summary_hash"], "embedder": embedder.name, "embedder_version": embedder.version}
        previous = read_record(store, layout.result(book, "embedding"))
        if previous and all(previous.get(k) == v for k, v in identity.items()):
            outcomes[book] = BookOutcome(book, SKIPPED)
        else:
            todo.append((book, {**identity, "summary": summary["summary"]}))
    if todo:
        try:
            vectors = embedder.embed([item["summary"] for _, item in todo])
        except Exception as exc:
            for book, _ in todo:
                outcomes[book] = BookOutcome(book, FAILED, f"embedder {embedder.name}: {type(exc).__name__}: {exc}")
            todo = []
        for (book, item), vector in zip(todo, vectors if todo else []):
            record = {k: v for k, v in item.items() if k != "summary"}
            record.update(book_id=book, dimensions=int(vector.shape[0]), vector=encode_vector(vector))
            write_record(store, layout.result(book, "embedding"), record)
            outcomes[book] = BookOutcome(book, DONE, model_calls=1)
    return [outcomes[b] for b in books]


# -- book_search_index -----------------------------------------------------------------


def book_document(store: ObjectStore, layout: BooksLayout, book: str) -> BookDocument | None:
    text = read_record(store, layout.result(book, "book"))
    summary = read_record(store, layout.result(book, "summary"))
    embedding = read_record(store, layout.result(book, "embedding"))
    if not (text and summary and embedding) or embedding.get("summary_hash") != summary.get("summary_hash"):
        return None
    metadata = text.get("metadata", {})
    return BookDocument(
        book_id=book,
        title=metadata.get("title"),
        author=metadata.get("author"),
        language=metadata.get("language"),
        year=metadata.get("year"),
        summary=summary["summary"],
        embedding=decode_vector(embedding["vector"]),
        content_hash=text["content_hash"],
        summarizer=f"{summary['summarizer']}@{summary['summarizer_version']}",
        embedder=f"{embedding['embedder']}@{embedding['embedder_version']}",
    )


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()

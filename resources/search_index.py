"""The search index of the books pipeline: an embedded DuckDB index by default, OpenSearch in
production. Documents are keyed by book ID, so writing a book again replaces it."""

from __future__ import annotations

from abc import abstractmethod

import dagster as dg
import numpy as np

from engine.books.duckdb_index import BookDocument, DuckDBBookIndex


class SearchIndex(dg.ConfigurableResource):
    @abstractmethod
    def upsert(self, documents: list[BookDocument]) -> tuple[int, list[tuple[str, str]]]:
        """Write the documents; return (written, [(book, why it failed)])."""

    @abstractmethod
    def delete(self, book_ids: list[str]) -> int:
        """Remove the books' documents; return how many there were."""

    @abstractmethod
    def search(self, *, text: str, vector: np.ndarray | None, k: int, mode: str) -> list[tuple[str, float]]:
        """(book, score), best first; mode is vector, keyword or hybrid."""

    @abstractmethod
    def titles(self, book_ids: list[str]) -> dict[str, str | None]:
        """{book: title} of the books in the index."""

    @abstractmethod
    def count(self) -> int:
        """Documents in the index."""

    @abstractmethod
    def describe(self) -> str:
        """Where the index is, for metadata and logs (no secrets)."""


class DuckDBSearchIndex(SearchIndex):
    """A DuckDB file: exact cosine, BM25 and their fusion (engine/books/duckdb_index.py).
    One process writes it at a time: book_search_index runs in the search_index pool."""

    path: str
    dimensions: int = 384

    def _index(self) -> DuckDBBookIndex:
        return DuckDBBookIndex(self.path, self.dimensions)

    def upsert(self, documents: list[BookDocument]) -> tuple[int, list[tuple[str, str]]]:
        return self._index().upsert(documents), []

    def delete(self, book_ids: list[str]) -> int:
        return self._index().delete(book_ids)

    def search(self, *, text: str, vector: np.ndarray | None, k: int, mode: str) -> list[tuple[str, float]]:
        return self._index().search(text=text, vector=vector, k=k, mode=mode)

    def titles(self, book_ids: list[str]) -> dict[str, str | None]:
        return self._index().titles(book_ids)

    def count(self) -> int:
        return self._index().count()

    def describe(self) -> str:
        return f"duckdb:{self.path}"


class OpenSearchIndex(SearchIndex):
    """An OpenSearch index with a knn_vector (HNSW) field, written through the bulk API in
    requests of about max_mb, with retries (engine/books/opensearch_index.py)."""

    url: str
    index: str = "books"
    username: str | None = None
    password: str | None = None
    verify_certs: bool = True
    dimensions: int = 384  # the embedder's: 384 locally, 256/512/1024 with Titan
    max_mb: float = 10.0

    def _client(self):
        from opensearchpy import OpenSearch

        auth = (self.username, self.password) if self.username else None
        # max_retries=0: the bulk writer backs off and retries itself, with counts
        return OpenSearch(hosts=[self.url], http_auth=auth, verify_certs=self.verify_certs, max_retries=0, timeout=120)

    def upsert(self, documents: list[BookDocument]) -> tuple[int, list[tuple[str, str]]]:
        from engine.books.opensearch_index import bulk_index, bulk_load_settings, ensure_index

        if not documents:
            return 0, []
        client = self._client()
        ensure_index(client, self.index, self.dimensions)
        with bulk_load_settings(client, self.index):  # no refreshes or replicas while loading
            outcome = bulk_index(
                client, self.index, ((d.book_id, _source(d)) for d in documents), max_bytes=int(self.max_mb * 2**20)
            )
        return outcome.indexed, [(f.doc_id, f"{f.status} {f.error_type}: {f.reason}") for f in outcome.failed]

    def delete(self, book_ids: list[str]) -> int:
        from engine.books.opensearch_index import bulk_index

        if not book_ids:
            return 0
        client = self._client()
        if not client.indices.exists(index=self.index):
            return 0
        return bulk_index(client, self.index, ((b, None) for b in book_ids)).deleted

    def search(self, *, text: str, vector: np.ndarray | None, k: int, mode: str) -> list[tuple[str, float]]:
        from engine.books.opensearch_index import search

        return search(self._client(), self.index, text=text, vector=None if vector is None else vector.tolist(), k=k, mode=mode)

    def titles(self, book_ids: list[str]) -> dict[str, str | None]:
        from opensearchpy.exceptions import NotFoundError

        client, titles = self._client(), {}
        for book in book_ids:  # a handful at a time (a result page): one GET each
            try:
                titles[book] = client.get(index=self.index, id=book, _source_includes=["title"])["_source"].get("title")
            except NotFoundError:
                pass
        return titles

    def count(self) -> int:
        client = self._client()
        if not client.indices.exists(index=self.index):
            return 0
        return int(client.count(index=self.index)["count"])

    def describe(self) -> str:
        return f"opensearch:{self.url.split('@')[-1]}/{self.index}"  # never the credentials in a URL


def _source(document: BookDocument) -> dict:
    return {
        "book_id": document.book_id,
        "title": document.title,
        "author": document.author,
        "language": document.language,
        "year": document.year,
        "summary": document.summary,
        "embedding": document.embedding.astype(float).tolist(),
        "content_hash": document.content_hash,
        "summarizer": document.summarizer,
        "embedder": document.embedder,
    }

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

"""The embedded search index: one DuckDB file with the books, their embeddings and a term
table, answering vector (cosine), keyword (BM25) and hybrid (reciprocal rank fusion) queries.

Brute-force cosine over FLOAT[dims] is exact and, for 100,000 books of 384 floats
(150 MB), takes a fraction of a second in DuckDB: no approximate index needed at this size.
Keyword search is BM25 computed in SQL over a (book, term, count) table rather than
DuckDB's fts extension, which would have to be downloaded at run time.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from engine.books.ranking import reciprocal_rank_fusion
from engine.duckdb_connect import connect_waiting

_TOKEN = re.compile(r"\w+", re.UNICODE)
_STOPWORDS = frozenset(
    "a an and are as at be but by for from had has have he her his i in is it its of on or she "
    "that the their there they this to was were which with you".split()
)
BM25_K1, BM25_B = 1.2, 0.75


def terms(text: str) -> list[str]:
    """Lower-cased word tokens without stopwords: what keyword search matches on."""
    return [t for t in _TOKEN.findall(text.lower()) if t not in _STOPWORDS]


@dataclass(frozen=True)
class BookDocument:
    book_id: str
    title: str | None
    author: str | None
    language: str | None
    year: int | None
    summary: str
    embedding: np.ndarray  # float32, unit length
    content_hash: str
    summarizer: str
    embedder: str

    def searchable_text(self) -> str:
        return " ".join(x for x in (self.title, self.title, self.author, self.summary) if x)  # title counts twice


class DuckDBBookIndex:
    def __init__(self, path: str, dimensions: int, threads: int = 1, memory_limit: str = "512MB"):
        self.path, self.dimensions = path, dimensions
        self._config = {"threads": threads, "memory_limit": memory_limit}

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator["duckdb.DuckDBPyConnection"]:  # noqa: F821
        con = connect_waiting(self.path, read_only=read_only, config=self._config)
        try:
            yield con
        finally:
            con.close()

    def ensure(self) -> None:
        with self.connect() as con:
            con.execute(
                f"""CREATE TABLE IF NOT EXISTS books (
                    book_id VARCHAR PRIMARY KEY, title VARCHAR, author VARCHAR, language VARCHAR,
                    year INTEGER, summary VARCHAR, embedding FLOAT[{self.dimensions}],
                    content_hash VARCHAR, summarizer VARCHAR, embedder VARCHAR, length INTEGER)"""
            )
            con.execute("CREATE TABLE IF NOT EXISTS book_terms (book_id VARCHAR, term VARCHAR, n INTEGER)")

    def upsert(self, documents: list[BookDocument]) -> int:
        """Insert or replace the documents, all in one transaction."""
        if not documents:
            return 0
        self.ensure()
        counted = [Counter(terms(d.searchable_text())) for d in documents]
        books = pa.table(
            {
                "book_id": [d.book_id for d in documents],
                "title": [d.title for d in documents],
                "author": [d.author for d in documents],
                "language": [d.language for d in documents],
                "year": pa.array([d.year for d in documents], pa.int32()),
                "summary": [d.summary for d in documents],
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(np.concatenate([d.embedding.astype(np.float32) for d in documents])), self.dimensions
                ),
                "content_hash": [d.content_hash for d in documents],
                "summarizer": [d.summarizer for d in documents],
                "embedder": [d.embedder for d in documents],
                "length": pa.array([sum(c.values()) for c in counted], pa.int32()),
            }
        )
        book_terms = pa.table(
            {
                "book_id": [d.book_id for d, c in zip(documents, counted) for _ in c],
                "term": [t for c in counted for t in c],
                "n": pa.array([n for c in counted for n in c.values()], pa.int32()),
            }
        )
        with self.connect() as con:
            con.register("new_books", books)
            con.register("new_terms", book_terms)
            con.execute("BEGIN")
            con.execute("DELETE FROM book_terms WHERE book_id IN (SELECT book_id FROM new_books)")
            con.execute("INSERT OR REPLACE INTO books SELECT * FROM new_books")
            con.execute("INSERT INTO book_terms SELECT * FROM new_terms")
            con.execute("COMMIT")
        return len(documents)

    def delete(self, book_ids: Iterable[str]) -> int:
        ids = list(book_ids)
        if not ids or not Path(self.path).exists():
            return 0
        self.ensure()
        with self.connect() as con:
            con.execute("BEGIN")
            (n,) = con.execute("SELECT count(*) FROM books WHERE book_id IN (SELECT unnest(?))", [ids]).fetchone()
            con.execute("DELETE FROM books WHERE book_id IN (SELECT unnest(?))", [ids])
            con.execute("DELETE FROM book_terms WHERE book_id IN (SELECT unnest(?))", [ids])
            con.execute("COMMIT")
        return int(n)

    def count(self) -> int:
        if not Path(self.path).exists():
            return 0
        self.ensure()
        with self.connect(read_only=True) as con:
            return con.execute("SELECT count(*) FROM books").fetchone()[0]

    def titles(self, book_ids: list[str]) -> dict[str, str | None]:
        if not book_ids or not Path(self.path).exists():
            return {}
        with self.connect(read_only=True) as con:
            rows = con.execute("SELECT book_id, title FROM books WHERE book_id IN (SELECT unnest(?))", [book_ids]).fetchall()
        return dict(rows)

    def search_vector(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        with self.connect(read_only=True) as con:
            return con.execute(
                f"""SELECT book_id, array_cosine_similarity(embedding, ?::FLOAT[{self.dimensions}]) AS score
                    FROM books ORDER BY score DESC, book_id LIMIT ?""",
                [vector.astype(np.float32).tolist(), k],
            ).fetchall()

    def search_keyword(self, text: str, k: int) -> list[tuple[str, float]]:
        query = sorted(set(terms(text)))
        if not query:
            return []
        with self.connect(read_only=True) as con:
            (books, average) = con.execute("SELECT count(*), coalesce(avg(length), 0) FROM books").fetchone()
            if not books:
                return []
            return con.execute(
                f"""WITH matches AS (
                        SELECT t.book_id, t.term, t.n, b.length FROM book_terms t JOIN books b USING (book_id)
                        WHERE t.term IN (SELECT unnest(?))),
                    df AS (SELECT term, count(DISTINCT book_id) AS df FROM matches GROUP BY term)
                    SELECT book_id, sum(
                        ln(1 + (? - df + 0.5) / (df + 0.5))
                        * n * {BM25_K1 + 1} / (n + {BM25_K1} * (1 - {BM25_B} + {BM25_B} * length / ?))
                    ) AS score
                    FROM matches JOIN df USING (term)
                    GROUP BY book_id ORDER BY score DESC, book_id LIMIT ?""",
                [query, books, max(average, 1.0), k],
            ).fetchall()

    def search(self, *, text: str, vector: np.ndarray | None, k: int = 10, mode: str = "hybrid") -> list[tuple[str, float]]:
        self.ensure()  # an index nothing was written to yet answers with no books
        if mode == "keyword":
            return self.search_keyword(text, k)
        if vector is None:
            raise ValueError(f"{mode} search needs the query's embedding")
        if mode == "vector":
            return self.search_vector(vector, k)
        if mode == "hybrid":
            return reciprocal_rank_fusion([self.search_vector(vector, k * 2), self.search_keyword(text, k * 2)], k)
        raise ValueError(f"mode must be vector, keyword or hybrid, not {mode!r}")


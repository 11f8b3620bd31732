"""Worker processes for the CPU-bound per-book work (summaries): Python threads would share
one core through the GIL. Each worker builds its object store and its summarizer once, from
a Recipe (Dagster resources do not pickle; their class and settings do)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from engine.books.stages import BookOutcome, BooksLayout, summarize_book


@dataclass(frozen=True)
class Recipe:
    """How to make an object again in another process: its class and its settings."""

    cls: type
    settings: dict

    @classmethod
    def of(cls, resource: Any) -> "Recipe":
        return cls(type(resource), resource.model_dump())

    def make(self) -> Any:
        return self.cls(**self.settings)


_worker: dict[str, Any] = {}


def _start_worker(store: Recipe, summarizer: Recipe, layout: BooksLayout) -> None:
    _worker.update(store=store.make(), summarizer=summarizer.make().build(), layout=layout)


def _summarize(book: str) -> BookOutcome:
    return summarize_book(_worker["store"], _worker["layout"], _worker["summarizer"], book)


# Starting a worker process (spawn, imports) costs about 1.5 s; below this much text the
# extractive summarizer (7.5 MB/s) finishes sooner in this process alone.
MIN_BYTES_FOR_WORKERS = 32 << 20


def summarize_in_workers(
    store: Any,
    summarizer_resource: Any,
    layout: BooksLayout,
    books: Iterable[str],
    workers: int,
    text_bytes: int | None = None,
) -> Iterator[BookOutcome]:
    """summarize_book over the books, in `workers` processes (in this one when workers is 1,
    or when text_bytes, the books' total size, is too small to pay for starting them),
    yielding outcomes in the books' order."""
    books = list(books)
    small = text_bytes is not None and text_bytes < MIN_BYTES_FOR_WORKERS
    if workers <= 1 or len(books) <= 1 or small:
        summarizer = summarizer_resource.build()
        for book in books:
            yield summarize_book(store, layout, summarizer, book)
        return
    # spawn, not fork: the parent may hold threads and native libraries that fork would copy mid-state
    context = multiprocessing.get_context("spawn")
    initargs = (Recipe.of(store), Recipe.of(summarizer_resource), layout)
    with ProcessPoolExecutor(min(workers, len(books)), mp_context=context, initializer=_start_worker, initargs=initargs) as pool:
        yield from pool.map(_summarize, books, chunksize=max(1, len(books) // (workers * 8)))


def in_threads(fn: Callable[[str], BookOutcome], books: Iterable[str], workers: int) -> Iterator[BookOutcome]:
    """fn over the books in `workers` threads: for I/O-bound steps (hashing releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    books = list(books)
    if workers <= 1:
        yield from map(fn, books)
        return
    with ThreadPoolExecutor(workers) as pool:
        yield from pool.map(fn, books)

"""The models of the books pipeline: a summarizer and an embedder, each a setting-only
resource that builds its engine object where the work runs (once per worker process).

Local defaults need nothing: an extractive summarizer and all-MiniLM-L6-v2 from a pip
package. Amazon Bedrock (Converse for summaries, Titan for embeddings) is the production
pair (engine/books/bedrock.py)."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import dagster as dg


class Versioned:
    """A model with its version extended by the settings that change its output."""

    def __init__(self, engine: Any, version: str):
        self._engine, self.name, self.version = engine, engine.name, version

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


class Summarizer(dg.ConfigurableResource):
    @abstractmethod
    def build(self) -> Any:
        """An object with name, version and summarize(text) (and maybe summarize_stream)."""


class LocalSummarizer(Summarizer):
    """The deterministic extractive summarizer (engine/books/summarize.py)."""

    max_words: int = 180
    max_sentences: int = 8

    def build(self):
        from engine.books.summarize import ExtractiveSummarizer

        engine = ExtractiveSummarizer(max_words=self.max_words, max_sentences=self.max_sentences)
        # other budgets give other summaries: a book summarized under one is redone under another
        return Versioned(engine, f"{engine.version}:words={self.max_words}:sentences={self.max_sentences}")


class Embedder(dg.ConfigurableResource):
    @abstractmethod
    def build(self, threads: int) -> Any:
        """An object with name, version, dimensions and embed(texts) -> float32 (n, dims)."""


class LocalEmbedder(Embedder):
    """sentence-transformers all-MiniLM-L6-v2 (384 dimensions) on the CPU, offline."""

    batch_size: int = 64

    def build(self, threads: int):
        from engine.books.embed import LocalEmbedder as Engine

        return Engine(batch_size=self.batch_size, threads=threads)

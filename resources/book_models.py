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


class BedrockConnection(dg.ConfigurableResource):
    """Where Bedrock is: region, an optional endpoint (a local test server) and credentials
    (unset: boto3's default chain, such as the task's role)."""

    region_name: str = "us-east-1"
    endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None

    def client(self):
        import boto3
        from botocore.config import Config

        # one attempt per call: the Bedrock clients back off on throttling themselves, and
        # botocore's own retries would hide throttling from their counts
        return boto3.session.Session().client(
            "bedrock-runtime",
            region_name=self.region_name,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=300),
        )


class BedrockSummarizer(Summarizer):
    """Amazon Bedrock through the Converse API, map-reduce over books longer than the context."""

    bedrock: BedrockConnection
    model_id: str = "anthropic.claude-3-haiku-20240307-v1:0"
    max_input_tokens: int = 150_000
    chunk_tokens: int = 50_000
    max_output_tokens: int = 400
    max_concurrency: int = 4  # chunk calls at once, per worker process
    price_per_1k_input: float = 0.00025
    price_per_1k_output: float = 0.00125

    def build(self):
        from engine.books.bedrock import BedrockSummarizer as Engine

        engine = Engine(
            self.bedrock.client(),
            model_id=self.model_id,
            max_input_tokens=self.max_input_tokens,
            chunk_tokens=self.chunk_tokens,
            max_output_tokens=self.max_output_tokens,
            max_concurrency=self.max_concurrency,
            price_per_1k_input=self.price_per_1k_input,
            price_per_1k_output=self.price_per_1k_output,
        )
        return Versioned(engine, f"{engine.version}:out={self.max_output_tokens}")


class BedrockEmbedder(Embedder):
    """Titan Text Embeddings V2 (256, 512 or 1024 dimensions), one request per text."""

    bedrock: BedrockConnection
    model_id: str = "amazon.titan-embed-text-v2:0"
    dimensions: int = 1024
    max_concurrency: int = 8

    def build(self, threads: int):
        from engine.books.bedrock import BedrockEmbedder as Engine

        return Engine(self.bedrock.client(), model_id=self.model_id, dimensions=self.dimensions, max_concurrency=self.max_concurrency)

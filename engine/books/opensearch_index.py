"""The books search index in OpenSearch: the mapping, bulk-load settings, a bulk writer
that retries properly, and vector / keyword / hybrid search.

Plain Python around an `opensearchpy.OpenSearch` client that the caller builds (endpoint,
auth and TLS are the resource's business, not this module's).

Why a bulk writer of our own and not `opensearchpy.helpers`: `streaming_bulk` retries only
item-level 429s and not a whole request answered 429/502/503/504, `parallel_bulk` does not
retry at all, and neither reports a per-document outcome that adds up to the input. Here
every input document ends up in exactly one of `indexed`, `deleted` or `failed`.

The client's own transport also retries 502/503/504 and connection errors (`max_retries`,
immediately, without backoff). That is harmless beneath this writer (an index or delete by
`_id` is idempotent); build the client with `max_retries=0` to leave all retrying to it.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as TransportConnectionError
from opensearchpy.exceptions import RequestError, SSLError, TransportError

from engine.books.ranking import reciprocal_rank_fusion

VECTOR_FIELD = "embedding"
KEYWORD_FIELDS = ("title^2", "author", "summary")  # title matches count double

MiB = 1024 * 1024
DEFAULT_MAX_BYTES = 10 * MiB  # inside the 5-15 MB that OpenSearch's sizing guide suggests

# Statuses that say "not now" rather than "never": the cluster's indexing pressure or thread
# pool is full (429), or a proxy / node is briefly away (502-504).
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
# OpenSearch names its rejection `rejected_execution_exception`; Elasticsearch and old
# OpenSearch-compatible services say `es_rejected_execution_exception`.
RETRYABLE_ERROR_TYPES = frozenset({"rejected_execution_exception", "es_rejected_execution_exception"})


# --- the index -----------------------------------------------------------------------------


def index_body(dimensions: int, *, shards: int = 1, replicas: int = 1) -> dict[str, Any]:
    """Settings and mappings of a books index whose embeddings have `dimensions` floats."""
    text_with_keyword = {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 512}}}
    return {
        "settings": {"index": {"knn": True, "number_of_shards": shards, "number_of_replicas": replicas}},
        "mappings": {
            # Fields not named here (model versions and whatever a later pipeline adds) are
            # identifiers, not prose: keyword rather than dynamic mapping's text + keyword.
            "dynamic_templates": [
                {"strings_as_keywords": {"match_mapping_type": "string", "mapping": {"type": "keyword"}}}
            ],
            "properties": {
                "book_id": {"type": "keyword"},
                "title": text_with_keyword,
                "author": text_with_keyword,
                "language": {"type": "keyword"},
                "year": {"type": "integer"},
                "summary": {"type": "text"},
                "content_hash": {"type": "keyword"},
                VECTOR_FIELD: {
                    "type": "knn_vector",
                    "dimension": dimensions,
                    # Lucene's HNSW: cosine natively, filters during the graph search, and no
                    # native library to load on the nodes.
                    "method": {
                        "name": "hnsw",
                        "space_type": "cosinesimil",
                        "engine": "lucene",
                        "parameters": {"m": 16, "ef_construction": 128},
                    },
                },
            },
        },
    }


def ensure_index(client: OpenSearch, index: str, dimensions: int, *, shards: int = 1, replicas: int = 1) -> bool:
    """Create the index if it is missing; True if this call created it.

    An existing index must have the same vector dimension: embeddings of another model
    would be rejected document by document, so say it once, here, instead.
    """
    if client.indices.exists(index=index):
        check_vector_dimension(client, index, dimensions)
        return False
    try:
        client.indices.create(index=index, body=index_body(dimensions, shards=shards, replicas=replicas))
    except RequestError as exc:
        if exc.error != "resource_already_exists_exception":  # another writer won the race
            raise
        check_vector_dimension(client, index, dimensions)
        return False
    return True


def check_vector_dimension(client: OpenSearch, index: str, dimensions: int) -> None:
    for name, description in client.indices.get(index=index).items():
        mapped = description.get("mappings", {}).get("properties", {}).get(VECTOR_FIELD, {}).get("dimension")
        if mapped is not None and int(mapped) != dimensions:
            raise ValueError(f"index {name} holds {mapped}-dimensional vectors, not {dimensions}")


# --- settings for a large load ----------------------------------------------------------------

BULK_LOAD_SETTINGS = {"refresh_interval": "-1", "number_of_replicas": 0}


@contextlib.contextmanager
def bulk_load_settings(client: OpenSearch, index: str) -> Iterator[None]:
    """For the block: no periodic refreshes and no replicas (each refresh makes a segment to
    merge later, and each replica indexes every document again); then the previous values
    back, also when the block raises, and one refresh so the load is searchable.

    A setting the index did not set explicitly is restored to null, that is to the
    cluster's default, rather than to a copied default value. Two loads into the same index
    at once must not both use this: the second would "restore" the first's load settings.
    """
    previous = explicit_index_settings(client, index, BULK_LOAD_SETTINGS)
    client.indices.put_settings(index=index, body={"index": dict(BULK_LOAD_SETTINGS)})
    try:
        yield
    finally:
        for name, values in previous.items():
            client.indices.put_settings(index=name, body={"index": values})
        client.indices.refresh(index=index)


def explicit_index_settings(client: OpenSearch, index: str, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """{concrete index: {setting: value or None when not set explicitly}} for `names`.

    Keyed by concrete index, so that an alias or pattern restores each index it covers.
    """
    response = client.indices.get_settings(index=index, flat_settings=True)
    return {
        name: {setting: description["settings"].get(f"index.{setting}") for setting in names}
        for name, description in response.items()
    }


# --- bulk writing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemFailure:
    """A document the writer gave up on. `status` is None where no HTTP status applies
    (a document that could not be encoded, a connection that never answered)."""

    doc_id: str
    status: int | None
    error_type: str
    reason: str
    attempts: int


@dataclass
class BulkOutcome:
    """What happened to every input document, and what it cost.

    `requests` counts every `_bulk` call made (retries included), `retries` the calls that
    resent documents, `bytes_sent` the bodies of all calls.
    """

    indexed: int = 0
    deleted: int = 0
    failed: list[ItemFailure] = field(default_factory=list)
    requests: int = 0
    retries: int = 0
    bytes_sent: int = 0

    @property
    def documents(self) -> int:
        """Input documents accounted for: indexed + deleted + failed."""
        return self.indexed + self.deleted + len(self.failed)


class BulkAborted(Exception):
    """A `_bulk` request met an error that retrying cannot fix (authentication, a malformed
    request): every following request would fail the same way, so the load stops.
    `outcome` covers the documents handled before; the rest were not sent."""

    def __init__(self, message: str, outcome: BulkOutcome):
        super().__init__(message)
        self.outcome = outcome


@dataclass
class _Operation:
    """One action of a bulk body, encoded once: the action line and, for index, the source."""

    doc_id: str
    action: Literal["index", "delete"]
    payload: bytes
    attempts: int = 0


def bulk_index(
    client: OpenSearch,
    index: str,
    docs: Iterable[tuple[str, dict[str, Any] | None]],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_attempts: int = 6,
    backoff_seconds: float = 0.5,
    max_backoff: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    jitter: Callable[[], float] = random.random,
) -> BulkOutcome:
    """Index `(doc_id, document)` pairs, delete `(doc_id, None)` pairs, into `index`.

    Documents are sent in `_bulk` requests of at most `max_bytes` (a document larger than
    that goes alone), one request at a time, so memory holds one batch whatever the input.
    `_id` is the doc id, so resending a document replaces it instead of duplicating it.

    A whole request answered 429/502/503/504, or lost to a connection error, is resent; of a
    request that was answered, only the items that failed with a retryable status are
    resent. Waits grow exponentially from `backoff_seconds` to `max_backoff`, with jitter so
    that parallel writers do not come back in step. A document that fails permanently (a
    400 such as mapper_parsing_exception) or is still failing after `max_attempts` sends is
    recorded in `failed`; the load goes on. Raises `BulkAborted` on a request-level error
    that no retry can fix.
    """
    if max_bytes <= 0 or max_attempts <= 0:
        raise ValueError("max_bytes and max_attempts must be positive")
    writer = _BulkWriter(client, index, max_bytes, max_attempts, _Backoff(backoff_seconds, max_backoff, sleep, jitter))
    for batch in _batches_by_bytes(_encoded_operations(docs, writer.outcome), lambda: writer.max_bytes):
        writer.send(batch)
    return writer.outcome


def _encoded_operations(docs: Iterable[tuple[str, dict[str, Any] | None]], outcome: BulkOutcome) -> Iterator[_Operation]:
    """Bulk actions of the input, lazily. A document that cannot be encoded as JSON (NaN,
    an unknown type) is recorded as failed here: no cluster would accept it either."""
    for doc_id, doc in docs:
        doc_id = str(doc_id)
        try:
            yield _encode_operation(doc_id, doc)
        except (TypeError, ValueError) as exc:
            outcome.failed.append(ItemFailure(doc_id, None, "serialization_error", str(exc), 0))


def _encode_operation(doc_id: str, doc: dict[str, Any] | None) -> _Operation:
    if doc is None:
        return _Operation(doc_id, "delete", _json_line({"delete": {"_id": doc_id}}))
    return _Operation(doc_id, "index", _json_line({"index": {"_id": doc_id}}) + _json_line(doc))


def _json_line(value: Any) -> bytes:
    # allow_nan=False: NaN is not JSON, and OpenSearch would reject the whole request.
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_numpy_to_python)
    return text.encode() + b"\n"


def _numpy_to_python(value: Any) -> Any:
    """Embeddings often arrive as numpy arrays or numpy floats; JSON wants lists and floats."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _batches_by_bytes(operations: Iterable[_Operation], max_bytes: Callable[[], int]) -> Iterator[list[_Operation]]:
    """Consecutive operations whose payloads add up to at most `max_bytes()` (asked anew for
    each operation: the writer lowers it when the cluster refuses a size); an operation
    larger than that on its own makes a batch of one."""
    batch: list[_Operation] = []
    size = 0
    for operation in operations:
        if batch and size + len(operation.payload) > max_bytes():
            yield batch
            batch, size = [], 0
        batch.append(operation)
        size += len(operation.payload)
    if batch:
        yield batch


@dataclass
class _Backoff:
    base: float
    cap: float
    sleep: Callable[[float], None]
    jitter: Callable[[], float]

    def wait(self, attempt: int) -> None:
        """Before resend number `attempt` (1, 2, ...): base * 2^(attempt-1), capped, of which
        a random half is taken off ("equal jitter": never less than half the wait)."""
        delay = min(self.cap, self.base * 2 ** (attempt - 1))
        self.sleep(delay * (0.5 + 0.5 * self.jitter()))


class _RequestTooLarge(Exception):
    def __init__(self, error_type: str, reason: str):
        super().__init__(reason)
        self.error_type = error_type
        self.reason = reason


class _BulkWriter:
    def __init__(self, client: OpenSearch, index: str, max_bytes: int, max_attempts: int, backoff: _Backoff):
        self.client = client
        self.index = index
        self.max_bytes = max_bytes
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.outcome = BulkOutcome()

    def send(self, batch: list[_Operation]) -> None:
        """Send a batch until each of its operations is done, failed, or out of attempts."""
        pending = batch
        sends = 0
        while pending:
            if sends:
                self.backoff.wait(sends)
                self.outcome.retries += 1
            sends += 1
            try:
                pending = self._send_once(pending)
            except _RequestTooLarge as exc:
                self._send_smaller(pending, exc)
                return

    def _send_smaller(self, operations: list[_Operation], exc: _RequestTooLarge) -> None:
        """413: the cluster's limit on a request is below max_bytes (10 MiB on some managed
        instance types). Halve max_bytes, for this batch and all later ones (so that not
        every batch pays to find the limit), and send the batch again in pieces; a document
        alone too large fails."""
        refused = sum(len(operation.payload) for operation in operations)
        self.max_bytes = max(1, min(self.max_bytes, refused // 2))
        if len(operations) == 1:
            self._fail(operations[0], 413, exc.error_type, exc.reason)
            return
        for smaller in _batches_by_bytes(operations, lambda: self.max_bytes):
            self.send(smaller)

    def _send_once(self, operations: list[_Operation]) -> list[_Operation]:
        """One `_bulk` request; returns the operations to send again."""
        body = b"".join(operation.payload for operation in operations)
        for operation in operations:
            operation.attempts += 1
        self.outcome.requests += 1
        self.outcome.bytes_sent += len(body)
        try:
            response = self.client.bulk(body=body, index=self.index)
        except SSLError as exc:  # a certificate problem does not go away by waiting
            raise BulkAborted(f"_bulk request to {self.index} failed: {exc}", self.outcome) from exc
        except TransportConnectionError as exc:  # timeouts too: an index by _id is safe to repeat
            return self._after_request_failure(operations, None, "connection_error", str(exc))
        except TransportError as exc:
            status = exc.status_code if isinstance(exc.status_code, int) else None
            error_type = _error_type(exc.info, str(exc.error))
            if status in RETRYABLE_STATUSES:
                return self._after_request_failure(operations, status, error_type, str(exc))
            if status == 413:
                raise _RequestTooLarge(error_type, str(exc)) from exc
            raise BulkAborted(f"_bulk request to {self.index} failed: {exc}", self.outcome) from exc
        items = response.get("items", [])
        if len(items) != len(operations):
            # Items are matched to operations by position; a short answer would misattribute.
            raise BulkAborted(f"_bulk answered {len(items)} items for {len(operations)} operations", self.outcome)
        return [operation for operation, item in zip(operations, items) if self._settle_item(operation, item)]

    def _after_request_failure(
        self, operations: list[_Operation], status: int | None, error_type: str, reason: str
    ) -> list[_Operation]:
        """The whole request failed retryably: resend all, unless out of attempts."""
        if operations[0].attempts < self.max_attempts:  # a batch's operations share their count
            return operations
        for operation in operations:
            self._fail(operation, status, error_type, reason)
        return []

    def _settle_item(self, operation: _Operation, item: dict[str, Any]) -> bool:
        """Count one item of a bulk answer; True if the operation is to be sent again."""
        result = next(iter(item.values()))
        status = int(result.get("status", 500))
        if 200 <= status < 300 or (operation.action == "delete" and status == 404):
            # A delete that finds nothing has still left the document absent (perhaps an
            # earlier, lost answer had already deleted it).
            if operation.action == "delete":
                self.outcome.deleted += 1
            else:
                self.outcome.indexed += 1
            return False
        error = result.get("error") or {}
        error_type = _error_type({"error": error}, "unknown_error")
        reason = error.get("reason", "") if isinstance(error, dict) else str(error)
        retryable = status in RETRYABLE_STATUSES or error_type in RETRYABLE_ERROR_TYPES
        if retryable and operation.attempts < self.max_attempts:
            return True
        self._fail(operation, status, error_type, reason)
        return False

    def _fail(self, operation: _Operation, status: int | None, error_type: str, reason: str) -> None:
        self.outcome.failed.append(ItemFailure(operation.doc_id, status, error_type, reason, operation.attempts))


def _error_type(info: Any, default: str) -> str:
    """`error.type` of an OpenSearch error body, which may also be a bare string."""
    if isinstance(info, dict):
        error = info.get("error")
        if isinstance(error, dict) and error.get("type"):
            return str(error["type"])
        if isinstance(error, str) and error:
            return error
    return default


# --- search ---------------------------------------------------------------------------------

SearchMode = Literal["vector", "keyword", "hybrid"]


def search(
    client: OpenSearch,
    index: str,
    *,
    text: str | None = None,
    vector: Sequence[float] | None = None,
    k: int = 10,
    mode: SearchMode = "vector",
) -> list[tuple[str, float]]:
    """The best `k` books as `(book_id, score)`, best first.

    vector: approximate nearest neighbours of `vector` (HNSW, cosine). keyword: `text`
    matched against title (counting double), author and summary. hybrid: both lists fused
    by reciprocal rank on this side, scores being sum(1 / (60 + rank)): simple, needs no
    search pipeline on the cluster, and works on any engine version, at the cost of two
    queries.
    """
    if mode not in ("vector", "keyword", "hybrid"):
        raise ValueError(f"unknown search mode {mode!r}: vector, keyword or hybrid")
    if mode != "keyword" and vector is None:
        raise ValueError(f"search mode {mode!r} needs vector=")
    if mode != "vector" and text is None:
        raise ValueError(f"search mode {mode!r} needs text=")
    if mode == "vector":
        return vector_search(client, index, vector, k)
    if mode == "keyword":
        return keyword_search(client, index, text, k)
    # Each list reaches deeper than k, so that a book ranked well by one and moderately by
    # the other can still make the fused top k.
    depth = max(k, 50)
    return reciprocal_rank_fusion(
        [vector_search(client, index, vector, depth), keyword_search(client, index, text, depth)], k
    )


def vector_search(client: OpenSearch, index: str, vector: Sequence[float], k: int) -> list[tuple[str, float]]:
    vector = vector.tolist() if hasattr(vector, "tolist") else list(vector)
    body = {"size": k, "_source": False, "query": {"knn": {VECTOR_FIELD: {"vector": vector, "k": k}}}}
    return _hits(client.search(index=index, body=body))


def keyword_search(client: OpenSearch, index: str, text: str, k: int) -> list[tuple[str, float]]:
    body = {"size": k, "_source": False, "query": {"multi_match": {"query": text, "fields": list(KEYWORD_FIELDS)}}}
    return _hits(client.search(index=index, body=body))


def _hits(response: dict[str, Any]) -> list[tuple[str, float]]:
    # _id is the book id (bulk_index writes it so), so no _source needs to come back.
    return [(hit["_id"], float(hit["_score"])) for hit in response["hits"]["hits"]]

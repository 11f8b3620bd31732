"""The books index writer and search, through the real opensearch-py client over HTTP.

Every test runs against the local OpenSearch API (local_services/opensearch_server.py);
the ones that need no injected fault also run against a real cluster when OPENSEARCH_URL
is set (e.g. `OPENSEARCH_URL=https://admin:secret@localhost:9200
OPENSEARCH_VERIFY_CERTS=false`). Each test works in an index of its own, deleted after.
"""

from __future__ import annotations

import math
import os
import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest
from opensearchpy import OpenSearch

from engine.books.opensearch_index import (
    BulkAborted,
    bulk_index,
    bulk_load_settings,
    ensure_index,
    search,
)
from engine.books.ranking import reciprocal_rank_fusion
from local_services.opensearch_server import LocalOpenSearch, opensearch_server

DIMENSIONS = 384
KiB = 1024


def make_client(url: str, **options) -> OpenSearch:
    # max_retries=0: the writer does all retrying, so the server's request counts are the
    # writer's (the transport would otherwise resend 502-504s itself, immediately).
    verify = os.environ.get("OPENSEARCH_VERIFY_CERTS", "true").lower() != "false"
    options = {"max_retries": 0, "timeout": 60, "verify_certs": verify, "ssl_show_warn": False, **options}
    return OpenSearch(hosts=[url], **options)


@dataclass
class Target:
    client: OpenSearch
    index: str
    server: LocalOpenSearch | None  # None on a real cluster: no faults, no server-side view


@pytest.fixture(scope="module")
def local_server():
    with opensearch_server() as server:
        yield server


def new_target(client: OpenSearch, server: LocalOpenSearch | None):
    target = Target(client, f"floodgate-test-{uuid.uuid4().hex[:10]}", server)
    yield target
    client.indices.delete(index=target.index, ignore_unavailable=True)


@pytest.fixture
def local(local_server):
    """The local server, its faults cleared and counters reset."""
    local_server.set_faults(
        reject_bulk_requests=0,
        reject_status=429,
        drop_bulk_connections=0,
        max_bulk_bytes=None,
        item_429_ids=(),
        item_429_fraction=0.0,
        item_429_times=1,
        item_400_ids=(),
        item_400_fraction=0.0,
    )
    local_server.reset_stats()
    yield from new_target(make_client(local_server.url), local_server)


@pytest.fixture(params=["local", "real"])
def target(request, local_server):
    """The same test against the local server and, where OPENSEARCH_URL says where, a real cluster."""
    if request.param == "local":
        yield request.getfixturevalue("local")
        return
    url = os.environ.get("OPENSEARCH_URL")
    if not url:
        pytest.skip("no real cluster: set OPENSEARCH_URL (and OPENSEARCH_VERIFY_CERTS=false for a self-signed one)")
    yield from new_target(make_client(url), None)


class Sleeps(list):
    """An injected sleep: records the waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def book(number: int, rng: random.Random) -> tuple[str, dict]:
    book_id = f"book-{number:05d}"
    return book_id, {
        "book_id": book_id,
        "title": f"Title {number}",
        "author": f"Author {number % 97}",
        "language": "en",
        "year": 1900 + number % 120,
        "summary": f"Summary of book {number}. " * 20,
        "embedding": [round(rng.uniform(-1, 1), 6) for _ in range(DIMENSIONS)],
        "content_hash": uuid.UUID(int=rng.getrandbits(128)).hex,
        "summary_model": "summarizer-v1",
        "embedding_model": "minilm-l6-v2",
    }


def books(count: int, seed: int = 7) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    return [book(number, rng) for number in range(count)]


def indexed_ids(target: Target) -> set[str]:
    """Ids the cluster holds now: from the server itself, or by a refreshed search on a real one."""
    if target.server is not None:
        return set(target.server.documents(target.index))
    target.client.indices.refresh(index=target.index)
    response = target.client.search(
        index=target.index, body={"size": 10_000, "_source": False, "query": {"match_all": {}}}
    )
    return {hit["_id"] for hit in response["hits"]["hits"]}


def assert_accounted(outcome, docs) -> None:
    """Every input document counted exactly once."""
    assert outcome.indexed + outcome.deleted + len(outcome.failed) == len(docs)
    assert outcome.documents == len(docs)


# --- the index ------------------------------------------------------------------------------


def test_ensure_index_creates_a_knn_mapping_once(target):
    assert ensure_index(target.client, target.index, DIMENSIONS) is True
    assert ensure_index(target.client, target.index, DIMENSIONS) is False

    description = target.client.indices.get(index=target.index)[target.index]
    properties = description["mappings"]["properties"]
    vector = properties["embedding"]
    assert vector["type"] == "knn_vector"
    assert vector["dimension"] == DIMENSIONS
    assert vector["method"]["name"] == "hnsw"
    assert vector["method"]["space_type"] == "cosinesimil"
    assert properties["book_id"] == {"type": "keyword"}
    assert properties["title"]["type"] == "text"
    assert properties["title"]["fields"]["keyword"]["type"] == "keyword"
    assert properties["summary"]["type"] == "text"
    assert description["settings"]["index"]["knn"] == "true"


def test_ensure_index_refuses_an_index_of_another_dimension(target):
    ensure_index(target.client, target.index, DIMENSIONS)
    with pytest.raises(ValueError, match="384-dimensional"):
        ensure_index(target.client, target.index, 768)


def flat_settings(target: Target) -> dict:
    response = target.client.indices.get_settings(index=target.index, flat_settings=True)
    return response[target.index]["settings"]


def test_bulk_load_settings_turn_off_refresh_and_replicas_then_restore_them(target):
    ensure_index(target.client, target.index, DIMENSIONS)
    target.client.indices.put_settings(index=target.index, body={"index": {"refresh_interval": "5s"}})

    with bulk_load_settings(target.client, target.index):
        during = flat_settings(target)
        outcome = bulk_index(target.client, target.index, books(20))

    after = flat_settings(target)
    assert (during["index.refresh_interval"], during["index.number_of_replicas"]) == ("-1", "0")
    assert (after["index.refresh_interval"], after["index.number_of_replicas"]) == ("5s", "1")
    assert outcome.indexed == 20
    # The block ends with a refresh, so the load is searchable at once.
    assert target.client.count(index=target.index)["count"] == 20


def test_bulk_load_settings_restore_a_default_as_a_default_also_on_error(target):
    ensure_index(target.client, target.index, DIMENSIONS)

    with pytest.raises(RuntimeError, match="the load broke"):
        with bulk_load_settings(target.client, target.index):
            bulk_index(target.client, target.index, books(5))
            raise RuntimeError("the load broke")

    after = flat_settings(target)
    assert "index.refresh_interval" not in after  # back to the cluster's default, not a copy of it
    assert after["index.number_of_replicas"] == "1"
    assert target.client.count(index=target.index)["count"] == 5  # refreshed on the way out too


# --- bulk writing ---------------------------------------------------------------------------


def test_a_large_load_goes_in_requests_sized_by_bytes(target):
    ensure_index(target.client, target.index, DIMENSIONS)
    docs = books(2_000)
    max_bytes = 512 * KiB  # some 120 documents of ~4.3 kB (384 floats, a summary)
    produced = 0
    produced_at_first_request = None

    def stream():
        nonlocal produced
        for doc in docs:
            produced += 1
            yield doc

    real_bulk = target.client.bulk

    def spying_bulk(**kwargs):
        nonlocal produced_at_first_request
        if produced_at_first_request is None:
            produced_at_first_request = produced
        return real_bulk(**kwargs)

    target.client.bulk = spying_bulk
    with bulk_load_settings(target.client, target.index):
        outcome = bulk_index(target.client, target.index, stream(), max_bytes=max_bytes)

    assert_accounted(outcome, docs)
    assert (outcome.indexed, outcome.failed, outcome.retries) == (2_000, [], 0)
    # Greedy packing: every request but the last is within one document of full, none over.
    document_bytes = outcome.bytes_sent / len(docs)
    assert outcome.bytes_sent > 10 * max_bytes  # the test means something: ~8.6 MB of documents
    assert math.ceil(outcome.bytes_sent / max_bytes) <= outcome.requests
    assert outcome.requests <= math.ceil(outcome.bytes_sent / (max_bytes - 2 * document_bytes))
    # The input is read lazily: one batch (and one document beyond it) before the first send.
    assert produced_at_first_request <= max_bytes / document_bytes * 1.1 + 1
    assert indexed_ids(target) == {doc_id for doc_id, _ in docs}

    if target.server is not None:
        stats = target.server.stats
        assert stats.requests["bulk"] == outcome.requests == len(stats.bulk_bytes)
        assert sum(stats.bulk_bytes) == outcome.bytes_sent
        assert max(stats.bulk_bytes) <= max_bytes
        assert min(stats.bulk_bytes[:-1]) > max_bytes - 2 * document_bytes


def test_deletions_are_counted_and_a_missing_document_counts_as_deleted(target):
    ensure_index(target.client, target.index, DIMENSIONS)
    docs = books(10)
    bulk_index(target.client, target.index, docs)

    deletions = [(doc_id, None) for doc_id, _ in docs[:3]] + [("never-indexed", None)]
    outcome = bulk_index(target.client, target.index, deletions)

    assert (outcome.deleted, outcome.indexed, outcome.failed) == (4, 0, [])
    assert indexed_ids(target) == {doc_id for doc_id, _ in docs[3:]}


def test_a_document_the_mapping_rejects_is_recorded_and_not_retried(target):
    ensure_index(target.client, target.index, DIMENSIONS)
    docs = books(10)
    docs[4] = (docs[4][0], {**docs[4][1], "embedding": [0.1, 0.2, 0.3]})  # a vector of the wrong model
    sleeps = Sleeps()

    outcome = bulk_index(target.client, target.index, docs, sleep=sleeps)

    assert_accounted(outcome, docs)
    assert outcome.indexed == 9
    [failure] = outcome.failed
    assert (failure.doc_id, failure.status, failure.error_type, failure.attempts) == (
        docs[4][0],
        400,
        "mapper_parsing_exception",
        1,
    )
    assert failure.reason
    assert (outcome.retries, sleeps) == (0, [])
    assert indexed_ids(target) == {doc_id for doc_id, _ in docs} - {docs[4][0]}


def test_a_repeated_load_replaces_instead_of_duplicating(target):
    ensure_index(target.client, target.index, DIMENSIONS)
    docs = books(30)
    bulk_index(target.client, target.index, docs)
    outcome = bulk_index(target.client, target.index, docs + docs[:5])  # and an id twice in one load

    assert outcome.indexed == 35
    target.client.indices.refresh(index=target.index)
    assert target.client.count(index=target.index)["count"] == 30


def test_documents_that_are_not_json_fail_alone_and_numpy_vectors_are_accepted(target):
    ensure_index(target.client, target.index, DIMENSIONS)
    docs = books(3)
    docs[0] = (docs[0][0], {**docs[0][1], "embedding": np.ones(DIMENSIONS, dtype=np.float32)})
    docs[1] = (docs[1][0], {**docs[1][1], "year": float("nan")})

    outcome = bulk_index(target.client, target.index, docs)

    assert outcome.indexed == 2
    [failure] = outcome.failed
    assert (failure.doc_id, failure.status, failure.error_type, failure.attempts) == (
        docs[1][0],
        None,
        "serialization_error",
        0,
    )


# --- bulk writing against faults (local server only) ----------------------------------------


def test_a_load_through_rejections_loses_and_duplicates_nothing(local):
    ensure_index(local.client, local.index, DIMENSIONS)
    docs = books(2_000)
    permanent = {docs[i][0] for i in (3, 500, 1_234, 1_999)}
    local.server.set_faults(
        reject_bulk_requests=3,  # the first three requests: indexing pressure, 429
        item_429_fraction=0.1,  # a tenth of the items: the write queue is full, twice each
        item_429_times=2,
        item_400_ids=permanent,  # these never fit the mapping
    )
    sleeps = Sleeps()

    outcome = bulk_index(local.client, local.index, docs, max_bytes=512 * KiB, sleep=sleeps)

    assert_accounted(outcome, docs)
    assert {f.doc_id for f in outcome.failed} == permanent
    assert {(f.status, f.error_type) for f in outcome.failed} == {(400, "mapper_parsing_exception")}
    assert outcome.indexed == 2_000 - len(permanent)
    stored = local.server.documents(local.index)
    assert set(stored) == {doc_id for doc_id, _ in docs} - permanent
    stats = local.server.stats
    # Each document was written once: a rejected item or request writes nothing, so a
    # second write of any document would show as "updated".
    assert (stats.items["created"], stats.items["updated"]) == (outcome.indexed, 0)
    assert stats.items["failed_429"] > 0.1 * 2_000  # the faults did happen, twice for some
    assert stats.requests["bulk_rejected"] == 3
    assert outcome.requests == stats.requests["bulk"] + stats.requests["bulk_rejected"]
    assert outcome.retries >= 3 + 2  # three whole requests, and items at least twice
    assert len(sleeps) == outcome.retries
    assert all(0 < seconds <= 30 for seconds in sleeps)


def test_an_item_still_rejected_after_max_attempts_is_recorded_with_its_attempts(local):
    ensure_index(local.client, local.index, DIMENSIONS)
    docs = books(20)
    stubborn = docs[7][0]
    local.server.set_faults(item_429_ids={stubborn}, item_429_times=1_000)
    sleeps = Sleeps()

    outcome = bulk_index(
        local.client, local.index, docs, max_attempts=4, backoff_seconds=0.5, sleep=sleeps, jitter=lambda: 1.0
    )

    assert_accounted(outcome, docs)
    assert outcome.indexed == 19
    [failure] = outcome.failed
    assert (failure.doc_id, failure.status, failure.error_type, failure.attempts) == (
        stubborn,
        429,
        "rejected_execution_exception",
        4,
    )
    assert sleeps == [0.5, 1.0, 2.0]  # only the rejected item was resent, after growing waits
    assert (outcome.requests, outcome.retries) == (4, 3)
    assert local.server.stats.bulk_bytes[1] < local.server.stats.bulk_bytes[0] / 10


def test_whole_requests_rejected_past_max_attempts_fail_their_batch_and_the_load_goes_on(local):
    ensure_index(local.client, local.index, DIMENSIONS)
    docs = books(40)
    local.server.set_faults(reject_bulk_requests=4)
    max_bytes = 100 * KiB  # about 23 documents a request: two requests

    outcome = bulk_index(local.client, local.index, docs, max_bytes=max_bytes, max_attempts=3, sleep=Sleeps())

    assert_accounted(outcome, docs)
    first_batch = {f.doc_id for f in outcome.failed}
    assert first_batch == {doc_id for doc_id, _ in docs[: len(first_batch)]} and first_batch
    assert {(f.status, f.error_type, f.attempts) for f in outcome.failed} == {(429, "rejected_execution_exception", 3)}
    assert set(local.server.documents(local.index)) == {doc_id for doc_id, _ in docs} - first_batch


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_and_a_dropped_connection_are_retried(local, status):
    ensure_index(local.client, local.index, DIMENSIONS)
    docs = books(50)
    local.server.set_faults(reject_bulk_requests=2, reject_status=status, drop_bulk_connections=1)

    outcome = bulk_index(local.client, local.index, docs, sleep=Sleeps())

    assert (outcome.indexed, outcome.failed) == (50, [])
    assert (outcome.requests, outcome.retries) == (4, 3)
    assert set(local.server.documents(local.index)) == {doc_id for doc_id, _ in docs}


def test_the_clients_own_retries_beneath_the_writer_do_no_harm(local):
    # A client built plainly (transport max_retries=3) resends 503s at once, by itself.
    client = OpenSearch(hosts=[local.server.url])
    ensure_index(client, local.index, DIMENSIONS)
    docs = books(30)
    local.server.set_faults(reject_bulk_requests=5, reject_status=503)

    outcome = bulk_index(client, local.index, docs, sleep=Sleeps())

    assert (outcome.indexed, outcome.failed) == (30, [])
    assert outcome.requests == 2  # the writer's calls: four transport attempts, then one more
    assert local.server.stats.requests["bulk_rejected"] == 5


def test_a_request_larger_than_the_cluster_accepts_is_split(local):
    ensure_index(local.client, local.index, DIMENSIONS)
    docs = books(40)
    huge = (
        "book-huge",
        {**docs[0][1], "book_id": "book-huge", "summary": "x" * 40 * KiB},
    )
    local.server.set_faults(max_bulk_bytes=32 * KiB)

    outcome = bulk_index(local.client, local.index, docs + [huge], max_bytes=128 * KiB, sleep=Sleeps())

    assert_accounted(outcome, docs + [huge])
    assert outcome.indexed == 40
    [failure] = outcome.failed
    assert (failure.doc_id, failure.status) == ("book-huge", 413)
    stats = local.server.stats
    assert max(size for size in stats.bulk_bytes if size <= 32 * KiB) <= 32 * KiB
    # The first batch finds the limit; the next ones are made smaller instead of refused.
    refused = [size for size in stats.bulk_bytes if size > 32 * KiB]
    assert stats.requests["bulk_too_large"] == len(refused) <= 3  # 128 kB, 64 kB, the huge one


def test_a_document_larger_than_max_bytes_goes_alone(local):
    ensure_index(local.client, local.index, DIMENSIONS)
    docs = books(6)
    big_id = docs[3][0]
    docs[3] = (big_id, {**docs[3][1], "summary": "y" * 64 * KiB})

    outcome = bulk_index(local.client, local.index, docs, max_bytes=20 * KiB)

    assert outcome.indexed == 6
    sizes = local.server.stats.bulk_bytes
    assert [size > 20 * KiB for size in sizes].count(True) == 1
    assert len(sizes) == outcome.requests


def test_an_error_no_retry_can_fix_stops_the_load_with_what_was_done(local):
    ensure_index(local.client, local.index, DIMENSIONS)
    docs = books(40)
    sent = bulk_index(local.client, local.index, docs[:10])
    local.server.set_faults(reject_bulk_requests=1, reject_status=403)

    with pytest.raises(BulkAborted) as aborted:
        bulk_index(local.client, local.index, docs[10:], max_bytes=100 * KiB, sleep=Sleeps())

    assert sent.indexed == 10
    assert (aborted.value.outcome.requests, aborted.value.outcome.indexed) == (1, 0)
    assert "security_exception" in str(aborted.value)


def test_writers_in_parallel_threads_each_account_for_their_own_documents(local):
    ensure_index(local.client, local.index, DIMENSIONS)
    local.server.set_faults(item_429_fraction=0.2, reject_bulk_requests=2)
    docs = books(400)
    shares = [docs[0::4], docs[1::4], docs[2::4], docs[3::4]]

    def load(share):  # a client each, as separate workers would have
        return bulk_index(make_client(local.server.url), local.index, share, max_bytes=64 * KiB, sleep=Sleeps())

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(load, shares))

    assert [outcome.indexed for outcome in outcomes] == [100, 100, 100, 100]
    assert set(local.server.documents(local.index)) == {doc_id for doc_id, _ in docs}
    assert local.server.stats.items["updated"] == 0


def test_waits_grow_exponentially_up_to_the_cap_and_jitter_takes_off_at_most_half(local):
    ensure_index(local.client, local.index, DIMENSIONS)
    local.server.set_faults(reject_bulk_requests=6)
    longest, shortest = Sleeps(), Sleeps()

    bulk_index(
        local.client, local.index, books(2), max_attempts=7, backoff_seconds=0.5, max_backoff=4,
        sleep=longest, jitter=lambda: 1.0,
    )
    local.server.set_faults(reject_bulk_requests=6)
    bulk_index(
        local.client, local.index, books(2), max_attempts=7, backoff_seconds=0.5, max_backoff=4,
        sleep=shortest, jitter=lambda: 0.0,
    )

    assert longest == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert shortest == [seconds / 2 for seconds in longest]


# --- search ---------------------------------------------------------------------------------


def unit(*weights: tuple[int, float]) -> list[float]:
    vector = np.zeros(DIMENSIONS)
    for axis, weight in weights:
        vector[axis] = weight
    return (vector / np.linalg.norm(vector)).round(6).tolist()


CORPUS = {
    # Vector query: axis 0. Keyword query: "desert spice".
    "nearest": ("The Lighthouse", "Ann Vale", "A keeper and the sea.", unit((0, 1.0))),
    "both": ("Sea Stories", "Bo Lind", "Sailors cross a desert of water.", unit((0, 1.0), (1, 0.35))),
    "words": ("Desert Spice", "Cy Moor", "Spice trade across the desert, spice and sand.", unit((0, -1.0))),
    "other-1": ("Garden Notes", "Di Ash", "Roses and soil.", unit((2, 1.0))),
    "other-2": ("City Lights", "Ed Pine", "Trains at night.", unit((3, 1.0))),
    "other-3": ("Mountain Air", "Fa Rook", "Snow and stone.", unit((4, 1.0))),
}


@pytest.fixture
def corpus(target):
    ensure_index(target.client, target.index, DIMENSIONS)
    docs = [
        (book_id, {"book_id": book_id, "title": title, "author": author, "summary": summary, "embedding": vector})
        for book_id, (title, author, summary, vector) in CORPUS.items()
    ]
    with bulk_load_settings(target.client, target.index):
        assert bulk_index(target.client, target.index, docs).indexed == len(docs)
    return target


def test_vector_search_finds_the_nearest_book_first(corpus):
    hits = search(corpus.client, corpus.index, vector=unit((0, 1.0), (5, 0.05)), k=3)
    assert [book_id for book_id, _ in hits] == ["nearest", "both", hits[2][0]]
    assert hits[0][1] >= hits[1][1] >= hits[2][1]


def test_keyword_search_weighs_the_title(corpus):
    hits = search(corpus.client, corpus.index, text="desert spice", k=3, mode="keyword")
    assert [book_id for book_id, _ in hits][:2] == ["words", "both"]


def test_hybrid_search_favours_the_book_both_rankings_agree_on(corpus):
    # Second in both rankings beats first in one and last (or absent) in the other.
    hits = search(corpus.client, corpus.index, text="desert spice", vector=unit((0, 1.0)), k=3, mode="hybrid")
    assert hits[0][0] == "both"


def test_search_says_what_a_mode_needs(local):
    with pytest.raises(ValueError, match="needs text="):
        search(local.client, local.index, vector=[0.0], mode="hybrid")
    with pytest.raises(ValueError, match="unknown search mode"):
        search(local.client, local.index, text="x", mode="fuzzy")


def test_reciprocal_rank_fusion_adds_reciprocal_ranks_and_breaks_ties_by_id():
    fused = reciprocal_rank_fusion([[("a", 9.0), ("b", 5.0)], [("b", 0.7), ("c", 0.1)]], k=3)
    assert [book_id for book_id, _ in fused] == ["b", "a", "c"]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)

"""An OpenSearch REST API on a loopback port, for tests: enough of it for opensearch-py and
the books index, with faults to inject.

There is no OpenSearch server to run on these machines, and a mocked client would test
nothing of the wire: this is a real HTTP server (stdlib, one thread per connection) that
opensearch-py reaches over HTTP like a cluster. It speaks, in OpenSearch's formats:

- `GET /` (cluster info), `GET /_cluster/health`;
- `HEAD|GET|PUT|DELETE /<index>`, `GET /<index>/_mapping`, `GET|PUT /<index>/_settings`,
  `POST /<index>/_refresh` and `/_refresh`;
- `POST|PUT /_bulk` and `/<index>/_bulk` (index, create, update with `doc`, delete), with
  per-item statuses and the `errors` flag;
- `GET|HEAD /<index>/_doc/<id>`, `GET|POST /<index>/_count`, `GET|POST /<index>/_search`.

What it checks like a cluster: a bulk body must end with a newline; a `knn_vector` must
have its mapped dimension and an `integer`/`long`/`float` field a number (else the item
fails 400 `mapper_parsing_exception`); `dynamic: strict` mappings reject unknown fields;
`create` of an existing id is a 409; a delete that finds nothing is a 404 `not_found` that
does not set `errors`; settings that only a closed index may change are refused.
Searches see what the last refresh saw while `refresh_interval` is "-1" (as a cluster
does), and every write at once otherwise (as if the periodic refresh had just run);
`GET _doc` is real-time.

What it simplifies: one shard, no replicas, no analyzers. Queries: `match_all`, `knn`
(exact, brute-force: cosine scored (1 + cos) / 2 as OpenSearch scores `cosinesimil`, or
l2 scored 1 / (1 + d^2)), `match`, `multi_match` and `term`. Text scoring is term
overlap, not BM25: a field scores boost x (distinct query terms found in it) / (query
terms), and a document its best field (as `multi_match`'s default `best_fields` type);
ties go to the smaller id. Rankings therefore agree with a
cluster's only on clear-cut cases, which is what tests should use anyway.

Faults (`Faults`), set at start and changeable while it runs (`set_faults`):
- `reject_bulk_requests`: answer the next N `_bulk` requests whole with `reject_status`
  (429 with OpenSearch's indexing-pressure body; 503 with a JSON error; 502 and 504 as a
  proxy would, in plain text);
- `drop_bulk_connections`: close the next N `_bulk` connections without an answer;
- `max_bulk_bytes`: answer 413 to a `_bulk` body larger than this, as a managed cluster's
  request size limit does (10 MiB on some AWS instance types);
- `item_429_ids` / `item_429_fraction`: reject these items (or a stable, seeded fraction
  of ids) 429 `rejected_execution_exception` on their first `item_429_times` sends;
- `item_400_ids` / `item_400_fraction`: fail these items 400 `mapper_parsing_exception`,
  every time.
`stats` counts requests by kind, bulk items by outcome, and every bulk body's size.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import json
import math
import re
import socket
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

VERSION = "2.19.0"  # the OpenSearch version this server says it is

# Settings a cluster refuses to change on an open index.
STATIC_SETTINGS = frozenset({"index.number_of_shards", "index.knn", "index.codec"})
# Settings a cluster owns; they appear in GET _settings.
PRIVATE_SETTINGS = ("index.uuid", "index.creation_date", "index.provided_name", "index.version.created")


@dataclass
class Faults:
    reject_bulk_requests: int = 0  # the next N _bulk requests are answered whole with reject_status
    reject_status: int = 429
    drop_bulk_connections: int = 0  # the next N _bulk requests get no answer: the connection closes
    max_bulk_bytes: int | None = None  # a _bulk body larger than this is answered 413
    item_429_ids: Collection[str] = ()  # items (by _id) rejected 429 ...
    item_429_fraction: float = 0.0  # ... and a seeded, stable fraction of all ids ...
    item_429_times: int = 1  # ... on their first N sends (a large N: always)
    item_400_ids: Collection[str] = ()  # items failed 400 mapper_parsing_exception, every time
    item_400_fraction: float = 0.0
    seed: int = 0  # chooses the fractions' ids

    def rejects_429(self, doc_id: str) -> bool:
        return doc_id in self.item_429_ids or _in_fraction(self.seed, "429", doc_id, self.item_429_fraction)

    def fails_400(self, doc_id: str) -> bool:
        return doc_id in self.item_400_ids or _in_fraction(self.seed, "400", doc_id, self.item_400_fraction)


def _in_fraction(seed: int, salt: str, doc_id: str, fraction: float) -> bool:
    # A hash, not a random draw: the same ids are chosen on every send and in every run.
    return fraction > 0 and zlib.crc32(f"{seed}:{salt}:{doc_id}".encode()) < fraction * 2**32


@dataclass
class Stats:
    # by kind: "bulk" (processed), "bulk_rejected", "bulk_dropped", "bulk_too_large", "search", ...
    requests: Counter = field(default_factory=Counter)
    items: Counter = field(default_factory=Counter)  # bulk items by outcome: "indexed", "rejected_429", ...
    bulk_bytes: list[int] = field(default_factory=list)  # the body size of every _bulk request, in order


class ApiError(Exception):
    """An error answered in OpenSearch's format: {"error": {...}, "status": N}."""

    def __init__(self, status: int, error_type: str, reason: str, **details: Any):
        super().__init__(reason)
        self.status = status
        self.body = {"error": _error(error_type, reason, **details), "status": status}


def _error(error_type: str, reason: str, **details: Any) -> dict[str, Any]:
    cause = {"type": error_type, "reason": reason, **details}
    return {"root_cause": [dict(cause)], **cause}


def _index_not_found(name: str) -> ApiError:
    return ApiError(
        404,
        "index_not_found_exception",
        f"no such index [{name}]",
        index=name,
        **{"resource.type": "index_or_alias", "resource.id": name, "index_uuid": "_na_"},
    )


# --- the cluster's state ----------------------------------------------------------------------


class _Index:
    def __init__(self, name: str, settings: dict[str, str], mappings: dict[str, Any]):
        self.name = name
        self.uuid = uuid.uuid4().hex[:22]
        self.settings = {
            "index.number_of_shards": "1",
            "index.number_of_replicas": "1",
            **settings,
            "index.uuid": self.uuid,
            "index.creation_date": str(int(time.time() * 1000)),
            "index.provided_name": name,
            "index.version.created": "136407827",
        }
        self.mappings = mappings
        self.docs: dict[str, dict[str, Any]] = {}  # real time: what GET _doc sees
        self.versions: dict[str, int] = {}
        self.refreshed: dict[str, dict[str, Any]] = {}  # what searches saw at the last refresh
        self.seq_no = 0

    @property
    def refreshes_itself(self) -> bool:
        return self.settings.get("index.refresh_interval", "1s") != "-1"

    def searchable(self) -> dict[str, dict[str, Any]]:
        return self.docs if self.refreshes_itself else self.refreshed

    def refresh(self) -> None:
        self.refreshed = dict(self.docs)  # documents are replaced, never mutated: a shallow copy is a snapshot

    def properties(self) -> dict[str, Any]:
        return self.mappings.get("properties", {})

    def next_seq_no(self) -> int:
        self.seq_no += 1
        return self.seq_no - 1


class _Cluster:
    """All indices, faults and stats, behind one lock: handlers run on many threads."""

    def __init__(self, faults: Faults):
        self.lock = threading.RLock()
        self.indices: dict[str, _Index] = {}
        self.faults = faults
        self.stats = Stats()
        self.sends_429: Counter = Counter()  # (index, id) -> times rejected by item_429 faults

    def index(self, name: str) -> _Index:
        try:
            return self.indices[name]
        except KeyError:
            raise _index_not_found(name) from None

    def count(self, kind: str) -> None:
        self.stats.requests[kind] += 1

    # indices ---------------------------------------------------------------------------------

    def create_index(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        if name in self.indices:
            existing = self.indices[name]
            raise ApiError(
                400,
                "resource_already_exists_exception",
                f"index [{name}/{existing.uuid}] already exists",
                index=name,
                index_uuid=existing.uuid,
            )
        if name != name.lower() or name.startswith(("_", "-", "+")) or not name:
            raise ApiError(400, "invalid_index_name_exception", f"Invalid index name [{name}]", index=name)
        mappings = body.get("mappings", {})
        _check_mappings(mappings)
        self.indices[name] = _Index(name, _index_settings(body.get("settings", {})), mappings)
        return {"acknowledged": True, "shards_acknowledged": True, "index": name}

    def put_settings(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        index = self.index(name)
        changes = _index_settings(body)
        static = sorted(set(changes) & STATIC_SETTINGS)
        if static:
            raise ApiError(
                400,
                "illegal_argument_exception",
                f"Can't update non dynamic settings [[{', '.join(static)}]] for open indices [[{name}/{index.uuid}]]",
            )
        was_refreshing = index.refreshes_itself
        for key, value in changes.items():
            if value is None:
                index.settings.pop(key, None)  # null resets a setting to its default
            else:
                index.settings[key] = value
        if was_refreshing and not index.refreshes_itself:
            index.refresh()  # what the last periodic refresh showed stays searchable
        return {"acknowledged": True}

    # bulk ------------------------------------------------------------------------------------

    def bulk(self, default_index: str | None, body: bytes) -> dict[str, Any]:
        started = time.monotonic()
        items = [self._bulk_item(default_index, action, meta, source) for action, meta, source in _bulk_actions(body)]
        took = int((time.monotonic() - started) * 1000)
        return {"took": took, "errors": any("error" in next(iter(item.values())) for item in items), "items": items}

    def _bulk_item(self, default_index: str | None, action: str, meta: dict[str, Any], source: Any) -> dict[str, Any]:
        name = meta.get("_index") or default_index
        if not name:
            raise ApiError(400, "action_request_validation_exception", "Validation Failed: 1: index is missing;")
        doc_id = meta.get("_id")
        if doc_id is None and action != "index":
            raise ApiError(400, "action_request_validation_exception", "Validation Failed: 1: id is missing;")
        doc_id = str(doc_id) if doc_id is not None else uuid.uuid4().hex[:20]
        if name not in self.indices:  # bulk creates a missing index, as a cluster's default does
            self.create_index(name, {})
        index = self.indices[name]
        try:
            self._apply_faults(index, action, doc_id)
            result = self._apply(index, action, doc_id, source)
        except ApiError as exc:
            self.stats.items[f"failed_{exc.status}"] += 1
            return {action: {"_index": name, "_id": doc_id, "status": exc.status, "error": _item_error(exc)}}
        self.stats.items[result["result"]] += 1
        return {action: {"_index": name, "_id": doc_id, **result}}

    def _apply_faults(self, index: _Index, action: str, doc_id: str) -> None:
        """Raise the item error that the injected faults give this item, if any."""
        faults = self.faults
        key = (index.name, doc_id)
        if faults.rejects_429(doc_id) and self.sends_429[key] < faults.item_429_times:
            self.sends_429[key] += 1
            raise ApiError(
                429,
                "rejected_execution_exception",
                "rejected execution of primary operation "
                f"[shard_detail=[{index.name}][0][P], shard_coordinating_and_primary_bytes=0, "
                "shard_operation_bytes=8192, shard_max_coordinating_and_primary_bytes=53687091]",
            )
        if action != "delete" and faults.fails_400(doc_id):
            raise _mapper_parsing(doc_id, "year", "integer", "not-a-year", 'For input string: "not-a-year"')

    def _apply(self, index: _Index, action: str, doc_id: str, source: Any) -> dict[str, Any]:
        exists = doc_id in index.docs
        if action == "delete":
            if not exists:
                return self._written(index, doc_id, "not_found", 404, version=1)
            del index.docs[doc_id]
            return self._written(index, doc_id, "deleted", 200, version=index.versions[doc_id] + 1)
        if action == "create" and exists:
            raise ApiError(
                409,
                "version_conflict_engine_exception",
                f"[{doc_id}]: version conflict, document already exists (current version [{index.versions[doc_id]}])",
                index=index.name,
                shard="0",
                index_uuid=index.uuid,
            )
        if action == "update":
            if not exists:
                raise ApiError(404, "document_missing_exception", f"[{doc_id}]: document missing", index=index.name)
            source = {**index.docs[doc_id], **(source or {}).get("doc", {})}
        if not isinstance(source, dict):
            raise ApiError(400, "mapper_parsing_exception", "failed to parse, document is empty")
        _check_document(index, doc_id, source)
        index.docs[doc_id] = source
        version = index.versions.get(doc_id, 0) + 1 if exists else 1
        result = "updated" if exists else "created"
        return self._written(index, doc_id, result, 200 if exists else 201, version=version)

    def _written(self, index: _Index, doc_id: str, result: str, status: int, *, version: int) -> dict[str, Any]:
        index.versions[doc_id] = version
        return {
            "_version": version,
            "result": result,
            "_shards": {"total": 1, "successful": 1, "failed": 0},
            "_seq_no": index.next_seq_no(),
            "_primary_term": 1,
            "status": status,
        }

    # reading ---------------------------------------------------------------------------------

    def get_doc(self, name: str, doc_id: str) -> tuple[int, dict[str, Any]]:
        index = self.index(name)
        if doc_id not in index.docs:
            return 404, {"_index": name, "_id": doc_id, "found": False}
        return 200, {
            "_index": name,
            "_id": doc_id,
            "_version": index.versions[doc_id],
            "_seq_no": 0,
            "_primary_term": 1,
            "found": True,
            "_source": index.docs[doc_id],
        }

    def search(self, name: str, body: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
        index = self.index(name)
        started = time.monotonic()
        scores = _score(index, index.searchable(), body.get("query", {"match_all": {}}))
        size = int(body.get("size", params.get("size", 10)))
        start = int(body.get("from", params.get("from", 0)))
        ranked = sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))
        source_filter = body.get("_source", True)
        hits = [self._hit(index, doc_id, score, source_filter) for doc_id, score in ranked[start : start + size]]
        return {
            "took": int((time.monotonic() - started) * 1000),
            "timed_out": False,
            "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
            "hits": {
                "total": {"value": len(scores), "relation": "eq"},
                "max_score": ranked[0][1] if ranked else None,
                "hits": hits,
            },
        }

    def _hit(self, index: _Index, doc_id: str, score: float, source_filter: Any) -> dict[str, Any]:
        hit = {"_index": index.name, "_id": doc_id, "_score": score}
        source = index.searchable()[doc_id]
        if source_filter is True:
            hit["_source"] = source
        elif isinstance(source_filter, (list, str)):
            wanted = [source_filter] if isinstance(source_filter, str) else source_filter
            hit["_source"] = {key: value for key, value in source.items() if key in wanted}
        return hit

    def count_docs(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        index = self.index(name)
        matched = _score(index, index.searchable(), body.get("query", {"match_all": {}}))
        return {"count": len(matched), "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0}}


# --- settings and mappings ----------------------------------------------------------------


def _index_settings(body: dict[str, Any]) -> dict[str, Any]:
    """Settings as a cluster stores them: flat `index.*` keys, values as strings, None kept
    (it resets). Accepts {"index": {...}}, {"index.x": ...} and {"x": ...} alike."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        else:
            flat[prefix if prefix.startswith("index.") else f"index.{prefix}"] = _setting_text(value)

    walk("", body.get("settings", body) if "settings" in body else body)
    return flat


def _setting_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _nested(flat: dict[str, str]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _check_mappings(mappings: dict[str, Any]) -> None:
    for name, spec in mappings.get("properties", {}).items():
        if spec.get("type") == "knn_vector" and not isinstance(spec.get("dimension"), int):
            raise ApiError(400, "mapper_parsing_exception", f"Dimension value missing for vector: {name}")


def _mapper_parsing(doc_id: str, field_name: str, field_type: str, value: Any, cause: str = "") -> ApiError:
    error = ApiError(
        400,
        "mapper_parsing_exception",
        f"failed to parse field [{field_name}] of type [{field_type}] in document with id '{doc_id}'. "
        f"Preview of field's value: '{str(value)[:60]}'",
    )
    if cause:
        error.body["error"]["caused_by"] = {"type": "illegal_argument_exception", "reason": cause}
    return error


def _check_document(index: _Index, doc_id: str, source: dict[str, Any]) -> None:
    """The checks a cluster's mappers make that a books document can fail."""
    properties = index.properties()
    if str(index.mappings.get("dynamic")).lower() == "strict":
        unknown = sorted(set(source) - set(properties))
        if unknown:
            raise ApiError(
                400,
                "strict_dynamic_mapping_exception",
                f"mapping set to strict, dynamic introduction of [{unknown[0]}] within [_doc] is not allowed",
            )
    for name, spec in properties.items():
        if source.get(name) is None:
            continue
        value = source[name]
        kind = spec.get("type")
        if kind == "knn_vector":
            dimension = spec["dimension"]
            if not isinstance(value, list) or not all(_is_number(x) for x in value):
                raise _mapper_parsing(doc_id, name, kind, value, "Vector must be an array of numbers")
            if len(value) != dimension:
                raise _mapper_parsing(
                    doc_id, name, kind, value, f"Vector dimension mismatch. Expected: {dimension}, Given: {len(value)}"
                )
        elif kind in ("integer", "long", "short", "float", "double") and not _parses_as_number(value):
            raise _mapper_parsing(doc_id, name, kind, value, f'For input string: "{value}"')


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parses_as_number(value: Any) -> bool:
    if _is_number(value):
        return True
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def _item_error(exc: ApiError) -> dict[str, Any]:
    error = dict(exc.body["error"])
    error.pop("root_cause", None)  # bulk items carry the error without root_cause
    return error


# --- bulk bodies ----------------------------------------------------------------------------


def _bulk_actions(body: bytes) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(action, metadata, source or None) of an NDJSON bulk body; a malformed body is an
    error of the whole request, as on a cluster (which checks it before any item runs)."""
    if not body.endswith(b"\n"):
        raise ApiError(400, "illegal_argument_exception", "The bulk request must be terminated by a newline [\\n]")
    lines = [line for line in body.split(b"\n") if line.strip()]
    actions = []
    position = 0
    while position < len(lines):
        header = _json_line(lines[position], position)
        if not isinstance(header, dict) or len(header) != 1:
            raise ApiError(
                400, "illegal_argument_exception", f"Malformed action/metadata line [{position + 1}], expected START_OBJECT"
            )
        action, meta = next(iter(header.items()))
        if action not in ("index", "create", "update", "delete"):
            raise ApiError(
                400,
                "illegal_argument_exception",
                f"Malformed action/metadata line [{position + 1}], "
                f"expected one of [create, delete, index, update] but found [{action}]",
            )
        position += 1
        source = None
        if action != "delete":
            if position >= len(lines):
                raise ApiError(400, "illegal_argument_exception", f"The bulk request's {action} action has no source")
            source = _json_line(lines[position], position)
            position += 1
        actions.append((action, meta or {}, source))
    if not actions:
        raise ApiError(400, "action_request_validation_exception", "Validation Failed: 1: no requests added;")
    return iter(actions)


def _json_line(line: bytes, position: int) -> Any:
    try:
        return json.loads(line)
    except ValueError as exc:
        raise ApiError(400, "json_parse_exception", f"line [{position + 1}]: {exc}") from None


# --- queries --------------------------------------------------------------------------------

_TOKEN = re.compile(r"\w+", re.UNICODE)


def _score(index: _Index, docs: dict[str, dict[str, Any]], query: dict[str, Any]) -> dict[str, float]:
    """{doc id: score} of the documents that match `query`."""
    if len(query) != 1:
        raise ApiError(400, "parsing_exception", "query malformed, expected exactly one query type")
    kind, spec = next(iter(query.items()))
    if kind == "match_all":
        return {doc_id: 1.0 for doc_id in docs}
    if kind == "knn":
        return _knn(index, docs, spec)
    if kind == "multi_match":
        fields = spec.get("fields") or [name for name, f in index.properties().items() if f.get("type") == "text"]
        return _text_scores(docs, str(spec.get("query", "")), fields)
    if kind == "match":
        (field_name, value), = spec.items()
        text = value.get("query", "") if isinstance(value, dict) else value
        return _text_scores(docs, str(text), [field_name])
    if kind == "term":
        (field_name, value), = spec.items()
        wanted = value.get("value") if isinstance(value, dict) else value
        return {doc_id: 1.0 for doc_id, doc in docs.items() if _field_value(doc, field_name) == wanted}
    raise ApiError(400, "parsing_exception", f"unknown query [{kind}]", line=1, col=1)


def _knn(index: _Index, docs: dict[str, dict[str, Any]], spec: dict[str, Any]) -> dict[str, float]:
    import numpy as np  # only searches need it; the server starts without it

    (field_name, request), = spec.items()
    mapping = index.properties().get(field_name, {})
    if mapping.get("type") != "knn_vector":
        raise ApiError(400, "query_shard_exception", f"Field '{field_name}' is not knn_vector type.", index=index.name)
    query = np.asarray(request["vector"], dtype=np.float64)
    if query.shape != (mapping["dimension"],):
        raise ApiError(
            400,
            "illegal_argument_exception",
            f"Query vector has invalid dimension: {query.shape[0]}. Dimension should be: {mapping['dimension']}",
        )
    ids = [doc_id for doc_id, doc in docs.items() if doc.get(field_name) is not None]
    if not ids:
        return {}
    vectors = np.asarray([docs[doc_id][field_name] for doc_id in ids], dtype=np.float64)
    if mapping.get("method", {}).get("space_type", "l2") == "cosinesimil":
        norms = np.linalg.norm(vectors, axis=1) * np.linalg.norm(query)
        cosine = (vectors @ query) / np.where(norms == 0, 1.0, norms)
        scores = (1.0 + cosine) / 2.0
    else:
        scores = 1.0 / (1.0 + ((vectors - query) ** 2).sum(axis=1))
    best = np.argsort(-scores, kind="stable")[: int(request.get("k", 10))]
    return {ids[i]: float(scores[i]) for i in best}


def _text_scores(docs: dict[str, dict[str, Any]], text: str, fields: list[str]) -> dict[str, float]:
    terms = set(_TOKEN.findall(text.lower()))
    if not terms:
        return {}
    weighted = [_field_and_boost(spec) for spec in fields]
    scores: dict[str, float] = {}
    for doc_id, doc in docs.items():
        score = 0.0
        for field_name, boost in weighted:
            value = _field_value(doc, field_name)
            if value is not None:
                score = max(score, boost * len(terms & set(_TOKEN.findall(str(value).lower()))) / len(terms))
        if score > 0:
            scores[doc_id] = score
    return scores


def _field_and_boost(spec: str) -> tuple[str, float]:
    name, _, boost = spec.partition("^")
    return name, float(boost) if boost else 1.0


def _field_value(doc: dict[str, Any], name: str) -> Any:
    # "title.keyword" is a subfield of title: the same value, matched whole.
    return doc.get(name.removesuffix(".keyword"))


# --- HTTP -----------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as urllib3 expects
    # Headers and body go out in separate writes; with Nagle's algorithm the body would wait
    # for the client's delayed ACK, some 40 ms a request.
    disable_nagle_algorithm = True
    server: _Server

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # tests make thousands of requests; a line each would bury the output

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = [unquote(segment) for segment in parts.path.split("/") if segment]
        params = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        body = self._read_body()
        cluster = self.server.cluster
        try:
            if _is_bulk(method, path) and self._bulk_fault(cluster, body):
                return
            with cluster.lock:
                status, answer = _route(cluster, method, path, params, body)
        except ApiError as exc:
            status, answer = exc.status, exc.body
        except Exception as exc:  # a bug here must show as a 500 the test can read, not a hang
            status, answer = 500, {"error": _error("exception", f"{type(exc).__name__}: {exc}"), "status": 500}
        self._answer(method, status, answer)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Content-Encoding") == "gzip":  # a client built with http_compress=True
            body = gzip.decompress(body)
        return body

    def _bulk_fault(self, cluster: _Cluster, body: bytes) -> bool:
        """Answer (or drop) a _bulk request by the whole-request faults; True if one applied."""
        with cluster.lock:
            cluster.stats.bulk_bytes.append(len(body))
            faults = cluster.faults
            if faults.drop_bulk_connections > 0:
                faults.drop_bulk_connections -= 1
                cluster.count("bulk_dropped")
                drop = True
            elif faults.max_bulk_bytes is not None and len(body) > faults.max_bulk_bytes:
                cluster.count("bulk_too_large")
                drop, status = False, 413
            elif faults.reject_bulk_requests > 0:
                faults.reject_bulk_requests -= 1
                cluster.count("bulk_rejected")
                drop, status = False, faults.reject_status
            else:
                return False
        if drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif status == 413:
            limit = cluster.faults.max_bulk_bytes
            self._send(413, json.dumps({"Message": f"Request size exceeded {limit} bytes"}).encode(), "application/json")
        else:
            self._answer_rejection(status)
        return True

    def _answer_rejection(self, status: int) -> None:
        if status == 429:
            self._answer("POST", 429, ApiError(429, "rejected_execution_exception", _COORDINATING_REJECTION).body)
        elif status in (502, 504):  # from the proxy or load balancer in front, not from OpenSearch
            text = {502: "Bad Gateway", 504: "Gateway Timeout"}[status]
            self._send(status, f"<html><body><h1>{status} {text}</h1></body></html>".encode(), "text/html")
        elif status in (401, 403):
            reason = "no permissions for [indices:data/write/bulk] and User [name=floodgate, backend_roles=[]]"
            self._answer("POST", status, ApiError(status, "security_exception", reason).body)
        else:
            reason = "[books][0] primary shard is not active Timeout: [1m]"
            self._answer("POST", status, ApiError(status, "unavailable_shards_exception", reason).body)

    def _answer(self, method: str, status: int, answer: Any) -> None:
        payload = b"" if method == "HEAD" else json.dumps(answer).encode()
        self._send(status, payload, "application/json; charset=UTF-8")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)


_COORDINATING_REJECTION = (
    "rejected execution of coordinating operation [coordinating_and_primary_bytes=53670912, "
    "replica_bytes=0, all_bytes=53670912, coordinating_operation_bytes=10485760, "
    "max_coordinating_and_primary_bytes=53687091]"
)


def _is_bulk(method: str, path: list[str]) -> bool:
    return method in ("POST", "PUT") and 1 <= len(path) <= 2 and path[-1] == "_bulk"


def _route(cluster: _Cluster, method: str, path: list[str], params: dict[str, str], body: bytes) -> tuple[int, Any]:
    """(status, JSON answer) of one request; runs under the cluster's lock."""
    data = _json_body(body) if body and not _is_bulk(method, path) else {}
    if not path:
        cluster.count("info")
        return 200, _cluster_info()
    if path == ["_cluster", "health"]:
        cluster.count("health")
        return 200, {"cluster_name": "floodgate-local", "status": "green", "number_of_nodes": 1, "timed_out": False}
    if path == ["_refresh"] and method in ("POST", "GET"):
        cluster.count("refresh")
        for index in cluster.indices.values():
            index.refresh()
        return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
    if _is_bulk(method, path):
        cluster.count("bulk")
        return 200, cluster.bulk(path[0] if len(path) == 2 else None, body)
    name = path[0]
    if len(path) == 1:
        return _route_index(cluster, method, name, params, data)
    if path[1] == "_settings" and len(path) == 2:
        if method == "GET":
            cluster.count("settings_get")
            index = cluster.index(name)
            settings = index.settings if params.get("flat_settings") == "true" else _nested(index.settings)
            return 200, {name: {"settings": settings}}
        if method == "PUT":
            cluster.count("settings_put")
            return 200, cluster.put_settings(name, data)
    if path[1] == "_mapping" and len(path) == 2 and method == "GET":
        cluster.count("mapping_get")
        return 200, {name: {"mappings": cluster.index(name).mappings}}
    if path[1] == "_refresh" and len(path) == 2 and method in ("POST", "GET"):
        cluster.count("refresh")
        cluster.index(name).refresh()
        return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
    if path[1] == "_doc" and len(path) == 3 and method in ("GET", "HEAD"):
        cluster.count("doc_get")
        return cluster.get_doc(name, path[2])
    if path[1] == "_count" and len(path) == 2 and method in ("GET", "POST"):
        cluster.count("count")
        return 200, cluster.count_docs(name, data)
    if path[1] == "_search" and len(path) == 2 and method in ("GET", "POST"):
        cluster.count("search")
        return 200, cluster.search(name, data, params)
    raise ApiError(400, "illegal_argument_exception", f"no handler found for uri [/{'/'.join(path)}] and method [{method}]")


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ApiError(400, "json_parse_exception", str(exc)) from None


def _route_index(cluster: _Cluster, method: str, name: str, params: dict[str, str], data: dict[str, Any]) -> tuple[int, Any]:
    if method == "HEAD":
        cluster.count("index_exists")
        return (200 if name in cluster.indices else 404), {}
    if method == "PUT":
        cluster.count("index_create")
        return 200, cluster.create_index(name, data)
    if method == "DELETE":
        cluster.count("index_delete")
        if name not in cluster.indices:
            if params.get("ignore_unavailable") == "true":
                return 200, {"acknowledged": True}
            raise _index_not_found(name)
        del cluster.indices[name]
        return 200, {"acknowledged": True}
    if method == "GET":
        cluster.count("index_get")
        index = cluster.index(name)
        return 200, {name: {"aliases": {}, "mappings": index.mappings, "settings": _nested(index.settings)}}
    raise ApiError(405, "method_not_allowed", f"Incorrect HTTP method for uri [/{name}] and method [{method}]")


def _cluster_info() -> dict[str, Any]:
    return {
        "name": "floodgate-local",
        "cluster_name": "floodgate-local",
        "cluster_uuid": "floodgate-local-cluster",
        "version": {
            "distribution": "opensearch",
            "number": VERSION,
            "build_type": "local",
            "lucene_version": "9.12.1",
            "minimum_wire_compatibility_version": "7.10.0",
            "minimum_index_compatibility_version": "7.0.0",
        },
        "tagline": "The OpenSearch Project: https://opensearch.org/",
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a client's idle keep-alive connection must not hold up shutdown
    cluster: _Cluster


# --- the handle tests hold --------------------------------------------------------------------


class LocalOpenSearch:
    """A running server: `url`, its `faults`, a snapshot of its `stats`, and its documents."""

    def __init__(self, server: _Server):
        self._server = server
        self._cluster = server.cluster
        host, port = server.server_address[:2]
        self.url = f"http://{host}:{port}"

    @property
    def faults(self) -> Faults:
        """The live faults; change them with `set_faults`, which holds the lock."""
        return self._cluster.faults

    def set_faults(self, **changes: Any) -> None:
        with self._cluster.lock:
            for name, value in changes.items():
                if not hasattr(self._cluster.faults, name):
                    raise TypeError(f"no fault named {name!r}")
                setattr(self._cluster.faults, name, value)

    @property
    def stats(self) -> Stats:
        """A copy of the counters as they are now."""
        with self._cluster.lock:
            return copy.deepcopy(self._cluster.stats)

    def reset_stats(self) -> None:
        with self._cluster.lock:
            self._cluster.stats = Stats()

    def documents(self, index: str) -> dict[str, dict[str, Any]]:
        """Every document of `index` now (real time, whatever the last refresh), by id."""
        with self._cluster.lock:
            return dict(self._cluster.index(index).docs) if index in self._cluster.indices else {}

    def settings(self, index: str) -> dict[str, str]:
        with self._cluster.lock:
            return dict(self._cluster.index(index).settings)


@contextlib.contextmanager
def opensearch_server(**faults: Any) -> Iterator[LocalOpenSearch]:
    """Serve an OpenSearch API on a free loopback port for the block; `faults` as in `Faults`."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.cluster = _Cluster(Faults(**faults))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="opensearch-server", daemon=True
    )
    thread.start()
    try:
        yield LocalOpenSearch(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


__all__ = ["ApiError", "Faults", "LocalOpenSearch", "Stats", "opensearch_server"]

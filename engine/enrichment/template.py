"""The request a record becomes, and the fields kept from the API's answer.

A template is settings, not code:

- `method` and `path` (`/v1/companies/{domain}`: `{field}` is the record's value,
  percent-encoded);
- `query_fields` (query parameter → record field) and `body_fields` (JSON body key →
  record field; None sends the whole record as the body for POST, PUT and PATCH);
- `headers`, static (the API key is added by the client, never held here);
- `response_fields` (output column → dotted path in the JSON answer, `data.score`) and
  `response_types` (output column → string | int64 | float64 | bool | json; a column
  without one is typed from its values, chunk by chunk);
- batching: with `batch_size` > 1, up to that many records go in one call to
  `batch_path`, their bodies in `{batch_items_key: [...]}`, and the answer's
  `batch_results_key` holds one result per record, in order (a result with an `error`
  key is that record's failure).

Bodies are built with one encoding per record (or per batch), straight to bytes
(jsoncodec: orjson): the request path is the hot path at thousands of requests per second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from engine.enrichment.jsoncodec import dumps, dumps_text

_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
RESPONSE_TYPES = ("string", "int64", "float64", "bool", "json")


class RecordError(ValueError):
    """A record the template cannot make a request of (a missing field): a dead letter."""


class ResponseError(ValueError):
    """An answer the template cannot read (not JSON, a batch of the wrong length)."""


class Request:
    """A request's path (under the base URL), query and body. A plain class: one is made per
    request sent, and a frozen dataclass's __init__ costs a microsecond more."""

    __slots__ = ("path", "params", "body")

    def __init__(self, path: str, params: tuple[tuple[str, str], ...] | None, body: bytes | None):
        self.path, self.params, self.body = path, params, body


@dataclass(frozen=True)
class RequestTemplate:
    method: str = "POST"
    path: str = "/v1/enrich"
    query_fields: dict[str, str] = field(default_factory=dict)
    body_fields: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    response_fields: dict[str, str] = field(default_factory=dict)
    response_types: dict[str, str] = field(default_factory=dict)
    batch_size: int = 1
    batch_path: str | None = None
    batch_items_key: str = "records"
    batch_results_key: str = "results"

    def __post_init__(self):
        object.__setattr__(self, "method", self.method.upper())
        if not self.path.startswith("/"):
            raise ValueError(f"the template's path must start with '/': {self.path!r}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.batch_size > 1 and self.method not in BODY_METHODS:
            raise ValueError(f"batching sends records in a body: method {self.method} has none")
        for column, kind in self.response_types.items():
            if kind not in RESPONSE_TYPES:
                raise ValueError(f"response_types[{column!r}] is {kind!r}, not one of {', '.join(RESPONSE_TYPES)}")
        object.__setattr__(self, "_path_fields", tuple(_PLACEHOLDER.findall(self.path)))
        object.__setattr__(self, "_response_paths", {c: tuple(p.split(".")) for c, p in self.response_fields.items()})

    @property
    def batched(self) -> bool:
        return self.batch_size > 1

    def fields_used(self) -> set[str]:
        return {*self._path_fields, *self.query_fields.values(), *(self.body_fields or {}).values()}

    def body_of(self, record: dict[str, Any]) -> Any:
        if self.body_fields is None:
            return record
        try:
            return {key: record[name] for key, name in self.body_fields.items()}
        except KeyError as exc:
            raise RecordError(f"no field {exc.args[0]!r} for the request body") from None

    def request(self, record: dict[str, Any]) -> Request:
        """The request of one record (unbatched)."""
        path = self.path
        if self._path_fields:
            try:
                path = _PLACEHOLDER.sub(lambda m: quote(_text(record[m.group(1)]), safe=""), path)
            except KeyError as exc:
                raise RecordError(f"no field {exc.args[0]!r} for the URL path") from None
        params = None
        if self.query_fields:
            try:
                params = tuple((param, _text(record[name])) for param, name in self.query_fields.items())
            except KeyError as exc:
                raise RecordError(f"no field {exc.args[0]!r} for the query") from None
        body = dumps(self.body_of(record)) if self.method in BODY_METHODS else None
        return Request(path, params, body)

    def batch_request(self, bodies: list[Any]) -> Request:
        return Request(self.batch_path or self.path.rstrip("/") + "/batch", None, dumps({self.batch_items_key: bodies}))

    def fields_of(self, answer: Any) -> dict[str, Any]:
        """The output columns of one record's answer (a missing path gives None)."""
        out = {}
        for column, path in self._response_paths.items():
            value = answer
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
                if value is None:
                    break
            kind = self.response_types.get(column)
            out[column] = value if kind is None or value is None else _convert(value, kind, column)
        return out

    def columns(self) -> dict[str, str | None]:
        """Output column → its declared type (None: typed from the values)."""
        return {column: self.response_types.get(column) for column in self.response_fields}

    def batch_answers(self, payload: Any, count: int) -> list[Any]:
        results = payload.get(self.batch_results_key) if isinstance(payload, dict) else None
        if not isinstance(results, list) or len(results) != count:
            got = f"{len(results)} results" if isinstance(results, list) else f"no '{self.batch_results_key}' list"
            raise ResponseError(f"a batch of {count} records was answered with {got}")
        return results


def _convert(value: Any, kind: str, column: str) -> Any:
    if kind == "json":
        return dumps_text(value)
    if kind == "string":
        return value if isinstance(value, str) else dumps_text(value)
    if kind == "bool" and isinstance(value, bool):
        return value
    if not isinstance(value, bool):  # True is an int in Python, not in JSON
        if kind == "float64" and isinstance(value, (int, float)):
            return float(value)
        if kind == "int64" and (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            return int(value)
    raise ResponseError(f"response field {column!r} is {dumps_text(value)[:80]}, not {kind}")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else dumps_text(value)

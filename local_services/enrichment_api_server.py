"""An enrichment API on a loopback port, for tests and the benchmark, with faults to inject
and a rate limit it enforces and counts.

A real HTTP server (aiohttp, uvloop where installed). Endpoints:

- `/v1/enrich` (POST with a JSON body, or GET with query parameters) and
  `/v1/enrich/{id}`: one record, answered `{"id", "data": {"score", "label"}}` where score
  and label are functions of the ID (`expected_fields`), so a test can check every output;
- `POST /v1/enrich/batch`: `{"records": [...]}` answered `{"results": [...]}`, one result
  per record in order (an ID in `config.reject_ids` gets `{"error": ...}` there);
  an ID in `reject_ids` is answered 400, one in `fail_ids` 503, every time;
- `GET /_stats` (`?ids=1` adds the per-ID request counts), `POST /_config` (change the
  config while it runs), `POST /_reset` (zero the counters): not counted, never limited.

The record's ID is its `id` field (body, query or path).

Its own rate limit (`rate_limit` requests per 1-second window of its clock): every request
beyond the limit in its window is answered 429 with `Retry-After: 1` and counted in
`over_limit`; the bench and the tests read that count to prove a client stayed under it.
Faults, drawn per request from a seeded generator, in this order: `fail_status` (every
request after the first `fail_after`: the all-failure API, or one that breaks mid-file),
then `p_drop` (close the connection unanswered), `p_timeout` (answer after
`hang_seconds`), `p_429` (with `Retry-After: retry_after`), `p_500`, `p_503`;
`latency_ms` (± `latency_jitter_ms`) before every answer. With `api_key` set, a request
without `Authorization: Bearer <key>` gets 401 (its body echoes the header it got, as a
careless API might: the client must keep it out of its errors).

Run it in its own process (`api_server_process`: the benchmark, so that the server does
not share the client's GIL), in a thread (`api_server_thread`), or by hand:
`python -m local_services.enrichment_api_server --port 8765 --rate-limit 5000`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request
from urllib.parse import unquote
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from aiohttp import web

from engine.enrichment.jsoncodec import dumps, loads  # orjson where installed: less server CPU

_WINDOWS_KEPT = 3600


@dataclass
class ServerConfig:
    rate_limit: float | None = None  # requests per 1-second window; None: no limit
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    p_429: float = 0.0
    p_500: float = 0.0
    p_503: float = 0.0
    p_timeout: float = 0.0
    p_drop: float = 0.0
    retry_after: float = 1.0  # the Retry-After of injected 429s
    hang_seconds: float = 30.0  # a "timeout" answers after this long
    fail_status: int | None = None  # every request gets this status ...
    fail_after: int = 0  # ... after the first fail_after requests
    reject_ids: list[str] = field(default_factory=list)  # answered 400 (batch: an item error)
    fail_ids: list[str] = field(default_factory=list)  # answered 503, every time
    api_key: str | None = None
    track_ids: bool = True
    seed: int = 0

    def update(self, changes: dict[str, Any]) -> None:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}")
        for name, value in changes.items():
            setattr(self, name, value)


def expected_fields(record_id: str) -> dict[str, Any]:
    """What the server answers for a record ID, under `data`."""
    crc = zlib.crc32(str(record_id).encode())
    return {"score": (crc % 10000) / 100.0, "label": f"label-{crc % 7}"}


class EnrichmentApi:
    def __init__(self, config: ServerConfig):
        self.config = config
        self._rng = random.Random(config.seed)
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.over_limit = 0
        self.statuses: Counter = Counter()
        self.faults: Counter = Counter()
        self.windows: dict[int, int] = {}  # window (whole seconds of the clock) → requests
        self.ids: Counter = Counter()
        self._rng = random.Random(self.config.seed)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """One handler, dispatching by path: aiohttp's low-level server without an
        Application's router and middleware costs the server about a third less CPU per
        request, which the client on the same two cores needs."""
        path = request.path
        if path == "/v1/enrich/batch" and request.method == "POST":
            return await self._batch(request)
        if path == "/v1/enrich":
            return await self._one(request, None)
        if path.startswith("/v1/enrich/"):
            return await self._one(request, unquote(path[len("/v1/enrich/") :]))
        if path == "/_stats":
            return _json(self.stats(ids=request.query.get("ids") == "1"))
        if path == "/_config" and request.method == "POST":
            try:
                self.config.update(json.loads(await request.read()))
            except (ValueError, TypeError) as exc:
                return _json({"error": str(exc)}, 400)
            return _json(asdict(self.config) | {"api_key": None})
        if path == "/_reset" and request.method == "POST":
            self.reset()
            return _json({"reset": True})
        return _json({"error": f"no route {request.method} {path}"}, 404)

    # -- the API ------------------------------------------------------------------------------

    async def _admit(self, request: web.BaseRequest) -> web.StreamResponse | None:
        """Count the request against its window; an answer when it is not served normally."""
        config = self.config
        self.requests += 1
        now = time.monotonic()
        window = int(now)
        count = self.windows.get(window, 0) + 1
        self.windows[window] = count
        if len(self.windows) > _WINDOWS_KEPT:
            del self.windows[min(self.windows)]
        if config.rate_limit is not None and count > config.rate_limit:
            self.over_limit += 1
            return self._answer(429, {"error": "rate limit exceeded"}, {"Retry-After": str(math.ceil(window + 1 - now))})
        if config.api_key is not None and request.headers.get("Authorization") != f"Bearer {config.api_key}":
            # echoes what it got, as careless APIs do: the client must keep it out of its errors
            return self._answer(401, {"error": "missing or wrong API key", "got": request.headers.get("Authorization")})
        if config.fail_status is not None and self.requests > config.fail_after:
            self.faults[f"status_{config.fail_status}"] += 1
            return self._answer(config.fail_status, {"error": "the API is failing"})
        draw = self._rng.random()
        for name, p in (("drop", config.p_drop), ("timeout", config.p_timeout), ("429", config.p_429), ("500", config.p_500), ("503", config.p_503)):
            if draw < p:
                self.faults[name] += 1
                if name == "drop":
                    request.transport.close()  # no answer: the client sees the connection end
                    self.statuses["dropped"] += 1
                    return web.Response(status=500)  # never reaches the client
                if name == "timeout":
                    await asyncio.sleep(config.hang_seconds)
                    return None
                if name == "429":
                    return self._answer(429, {"error": "slow down"}, {"Retry-After": f"{config.retry_after:g}"})
                return self._answer(int(name), {"error": f"injected {name}"})
            draw -= p
        return None

    async def _delay(self) -> None:
        config = self.config
        if config.latency_ms or config.latency_jitter_ms:
            jitter = self._rng.uniform(-config.latency_jitter_ms, config.latency_jitter_ms)
            await asyncio.sleep(max(0.0, config.latency_ms + jitter) / 1000)

    def _answer(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
        self.statuses[status] += 1
        return web.Response(status=status, body=dumps(payload), content_type="application/json", headers=headers)

    async def _one(self, request: web.BaseRequest, path_id: str | None) -> web.StreamResponse:
        refused = await self._admit(request)
        if refused is not None:
            return refused
        record_id = path_id or request.query.get("id")
        if record_id is None and request.can_read_body:
            try:
                body = loads(await request.read())
            except ValueError:
                return self._answer(400, {"error": "the body is not JSON"})
            record_id = body.get("id") if isinstance(body, dict) else None
        if record_id is None:
            return self._answer(400, {"error": "no id"})
        record_id = str(record_id)
        if self.config.track_ids:
            self.ids[record_id] += 1
        await self._delay()
        if record_id in self.config.reject_ids:
            return self._answer(400, {"error": f"record {record_id} is not valid"})
        if record_id in self.config.fail_ids:
            return self._answer(503, {"error": f"record {record_id} keeps failing"})
        return self._answer(200, {"id": record_id, "data": expected_fields(record_id)})

    async def _batch(self, request: web.BaseRequest) -> web.StreamResponse:
        refused = await self._admit(request)
        if refused is not None:
            return refused
        try:
            records = loads(await request.read())["records"]
        except (ValueError, KeyError, TypeError):
            return self._answer(400, {"error": "expected {\"records\": [...]}"})
        results = []
        for record in records:
            record_id = str(record.get("id")) if isinstance(record, dict) else None
            if self.config.track_ids and record_id is not None:
                self.ids[record_id] += 1
            if record_id is None or record_id in self.config.reject_ids:
                results.append({"error": {"code": "invalid", "id": record_id}})
            else:
                results.append({"id": record_id, "data": expected_fields(record_id)})
        await self._delay()
        return self._answer(200, {"results": results})

    # -- control ------------------------------------------------------------------------------

    def stats(self, ids: bool = False) -> dict[str, Any]:
        counts = list(self.windows.values())
        out = {
            "requests": self.requests,
            "over_limit": self.over_limit,
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "faults": dict(self.faults),
            "max_window": max(counts, default=0),
            "windows": {str(k): v for k, v in sorted(self.windows.items())},
            "config": asdict(self.config),
        }
        out["config"].pop("api_key", None)
        if ids:
            out["ids"] = dict(self.ids)
        return out



def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(payload).encode(), content_type="application/json")


async def start(config: ServerConfig, host: str = "127.0.0.1", port: int = 0) -> tuple[Any, str]:
    """Listen; returns (a coroutine function that stops it, the URL)."""
    api = EnrichmentApi(config)
    # handler_cancellation: a client that gives up on a "timeout" frees the server's task too
    server = web.Server(api.handle, handler_cancellation=True, access_log=None)
    listener = await asyncio.get_running_loop().create_server(server, host, port, backlog=4096)
    bound = listener.sockets[0].getsockname()

    async def stop() -> None:
        listener.close()
        await server.shutdown(1.0)
        await listener.wait_closed()

    return stop, f"http://{bound[0]}:{bound[1]}"


class ServerHandle:
    """A running server: its URL, and its control endpoints as plain calls."""

    def __init__(self, url: str):
        self.url = url

    def _call(self, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=data, method="GET" if data is None else "POST")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def stats(self, ids: bool = False) -> dict[str, Any]:
        return self._call("/_stats?ids=1" if ids else "/_stats")

    def configure(self, **changes: Any) -> dict[str, Any]:
        return self._call("/_config", changes)

    def reset(self) -> None:
        self._call("/_reset", {})


@contextlib.contextmanager
def api_server_thread(config: ServerConfig | None = None) -> Iterator[ServerHandle]:
    """The server on its own event loop in a thread of this process."""
    config = config or ServerConfig()
    loop = asyncio.new_event_loop()
    started: dict[str, Any] = {}
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            started["stop"], started["url"] = loop.run_until_complete(start(config))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            started["error"] = exc
        ready.set()
        if "error" not in started:
            loop.run_forever()

    thread = threading.Thread(target=serve, name="enrichment-api", daemon=True)
    thread.start()
    ready.wait(30)
    if "url" not in started:
        raise RuntimeError(f"the enrichment API server did not start: {started.get('error')}")
    try:
        yield ServerHandle(started["url"])
    finally:
        asyncio.run_coroutine_threadsafe(started["stop"](), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


@contextlib.contextmanager
def api_server_process(config: ServerConfig | None = None, start_timeout: float = 60.0) -> Iterator[ServerHandle]:
    """The server in a process of its own (its own GIL and core); yields once it listens."""
    config = config or ServerConfig()
    process = subprocess.Popen(
        [sys.executable, "-m", "local_services.enrichment_api_server", "--port", "0", "--config", json.dumps(asdict(config))],
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        line = _first_line(process, start_timeout)
        if not line.startswith("listening on "):
            raise RuntimeError(f"the enrichment API server did not start (exit {process.poll()}): {line!r}")
        yield ServerHandle(line.split()[-1])
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _first_line(process: subprocess.Popen, timeout: float) -> str:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0].strip() if result else ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A local enrichment API with faults and a rate limit.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--rate-limit", type=float, default=None)
    parser.add_argument("--config", default="{}", help="ServerConfig fields as JSON")
    args = parser.parse_args(argv)
    config = ServerConfig()
    config.update(json.loads(args.config))
    if args.rate_limit is not None:
        config.rate_limit = args.rate_limit

    async def serve() -> None:
        stop, url = await start(config, args.host, args.port)
        print(f"listening on {url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await stop()

    try:
        import uvloop

        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

"""A Bedrock runtime API on a loopback port: Converse and InvokeModel (Titan text embeddings)
as botocore sends and parses them, with deterministic fake models and fault injection.

Wire format, from botocore's service model (bedrock-runtime 2023-09-30, rest-json):
``POST /model/{modelId}/converse`` and ``POST /model/{modelId}/invoke``, the model id
percent-encoded as one path segment (``:`` as ``%3A``, ``/`` of an ARN as ``%2F``); JSON
bodies; errors as an HTTP status, an ``x-amzn-ErrorType`` header (botocore takes the part
before ``:``) and a ``{"message": ...}`` body. Requests are SigV4-signed; any signature is
accepted and none is checked.

The fake models: the "summary" of a text is the first sentence of each of its paragraphs,
joined by spaces into one paragraph and cut to ``maxTokens * 4`` characters, so tests can
follow a map-reduce by its output. Token counts are words and punctuation marks (a crude
tokenizer, deliberately not the client's estimate). Embeddings are unit vectors (or, with
``normalize: false``, vectors scaled by the text's length) drawn from a hash of the text.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import numpy as np

# Credentials for clients of this server (it checks none); real ones never appear in tests.
TEST_CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}

ERROR_STATUS = {
    "ValidationException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ModelTimeoutException": 408,
    "ThrottlingException": 429,
    "ModelNotReadyException": 429,
    "InternalServerException": 500,
    "ServiceUnavailableException": 503,
}
_DEFAULT_MESSAGES = {
    "ThrottlingException": "Too many requests, please wait before trying again.",
    "ServiceUnavailableException": "Bedrock is unable to process your request.",
    "ModelNotReadyException": "Model is not ready to serve inference requests.",
    "ModelTimeoutException": "Model has timed out in processing the request.",
    "InternalServerException": "The server encountered an internal error.",
}
TITAN_V2_DIMENSIONS = (256, 512, 1024)
TITAN_V2_MAX_TOKENS = 8192

_ROUTE = re.compile(r"^/model/([^/]+)/(converse|invoke)$")
_TOKEN = re.compile(r"\w+|[^\w\s]")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_FIRST_SENTENCE = re.compile(r".*?[.!?](?=\s|$)", re.DOTALL)


def count_tokens(text: str) -> int:
    """The server's token count: words and punctuation marks."""
    return len(_TOKEN.findall(text))


def fake_summary(text: str, max_tokens: int) -> tuple[str, str]:
    """(summary, stopReason): the first sentence of each paragraph, cut to max_tokens * 4 characters."""
    firsts = []
    for paragraph in _PARAGRAPH_BREAK.split(text.strip()):
        paragraph = " ".join(paragraph.split())
        if paragraph:
            match = _FIRST_SENTENCE.match(paragraph)
            firsts.append(match.group(0) if match else paragraph)
    summary = " ".join(firsts)
    limit = max_tokens * 4
    if len(summary) > limit:
        return summary[:limit], "max_tokens"
    return summary, "end_turn"


def fake_embedding(text: str, dimensions: int, normalize: bool) -> np.ndarray:
    """A vector that depends only on the text: the same text, the same vector, anywhere."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dimensions)
    vector /= np.linalg.norm(vector)
    return vector if normalize else vector * (1.0 + len(text) / 100)


@dataclass
class BedrockFaults:
    """What goes wrong, and when. Change the fields while the server runs; each request reads
    them under the server's lock. Checked in this order: denied models, stalls, ``fail_next``,
    ``throttle_next``, ``unavailable_next``, ``throttle_next_for``, ``throttle_models``,
    ``throttle_fraction``, then the request's own validity (context size, dimensions)."""

    throttle_next: int = 0  # the next N requests: 429 ThrottlingException
    throttle_fraction: float = 0.0  # this share of requests, chosen by a seeded RNG
    throttle_models: set[str] = field(default_factory=set)  # every request for these models
    throttle_next_for: dict[str, int] = field(default_factory=dict)  # model -> next N requests for it
    unavailable_next: int = 0  # the next N requests: 503 ServiceUnavailableException
    fail_next: list[str] = field(default_factory=list)  # error codes for the next requests, in order
    stall_next: int = 0  # the next N requests wait stall_s before answering (client read timeouts)
    stall_s: float = 1.0
    deny_models: set[str] = field(default_factory=set)  # 403, the message echoing the request's credential
    context_tokens: int | None = None  # converse input (system + messages) above this: 400 ValidationException
    latency_s: float = 0.0  # every successful request takes at least this long
    seed: int = 0


@dataclass(frozen=True)
class ConverseRecord:
    model_id: str
    system: str
    prompt_head: str  # the first 200 characters of the last user message
    input_tokens: int
    output_tokens: int
    max_tokens: int | None
    temperature: float | None


class BedrockStats:
    """What the server saw, counted under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()  # (operation, model)
        self.errors: collections.Counter[tuple[str, str]] = collections.Counter()  # (operation, error code)
        self.converse: list[ConverseRecord] = []  # successful converse calls, in completion order
        self.largest_input_tokens = 0  # of any converse request, rejected ones included
        self.in_flight = 0
        self.max_in_flight = 0

    def count(self, operation: str | None = None, model_id: str | None = None) -> int:
        with self.lock:
            return sum(
                n
                for (op, model), n in self.requests.items()
                if (operation is None or op == operation) and (model_id is None or model == model_id)
            )

    def error_count(self, code: str | None = None, operation: str | None = None) -> int:
        with self.lock:
            return sum(
                n
                for (op, error), n in self.errors.items()
                if (code is None or error == code) and (operation is None or op == operation)
            )


def _malformed(detail: str) -> str:
    """InvokeModel's message for a body the model refuses, as the service words it."""
    return f"Malformed input request: {detail}, please reformat your input and try again."


class _ApiError(Exception):
    def __init__(self, code: str, message: str | None = None):
        super().__init__(code)
        self.code = code
        self.message = message or _DEFAULT_MESSAGES.get(code, code)


class BedrockServer:
    """The server and its state; ``start()`` it, or use ``bedrock_server()``."""

    def __init__(self, faults: BedrockFaults | None = None, host: str = "127.0.0.1", port: int = 0):
        self.faults = faults or BedrockFaults()
        self.stats = BedrockStats()
        self._lock = threading.Lock()  # fault decisions: counters and the RNG
        self._rng = random.Random(self.faults.seed)
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> BedrockServer:
        # A short poll interval: stop() waits up to one interval for the loop to notice.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="bedrock-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(10)

    # -- fault decisions

    def _injected_fault(self, model_id: str, authorization: str) -> tuple[str | None, str | None, float]:
        """(error code or None, message, seconds to stall) for the request about to be served."""
        faults = self.faults
        with self._lock:
            if model_id in faults.deny_models:
                # Real AWS messages name the caller; this one echoes the credential scope, the
                # worst case a client must keep out of its own error messages.
                credential = re.search(r"Credential=([^,\s]+)", authorization)
                who = credential.group(1) if credential else "anonymous"
                return "AccessDeniedException", f"{who} is not authorized to invoke model {model_id}", 0.0
            stall = 0.0
            if faults.stall_next > 0:
                faults.stall_next -= 1
                stall = faults.stall_s
            if faults.fail_next:
                return faults.fail_next.pop(0), None, stall
            if faults.throttle_next > 0:
                faults.throttle_next -= 1
                return "ThrottlingException", None, stall
            if faults.unavailable_next > 0:
                faults.unavailable_next -= 1
                return "ServiceUnavailableException", None, stall
            if faults.throttle_next_for.get(model_id, 0) > 0:
                faults.throttle_next_for[model_id] -= 1
                return "ThrottlingException", None, stall
            if model_id in faults.throttle_models:
                return "ThrottlingException", None, stall
            if faults.throttle_fraction and self._rng.random() < faults.throttle_fraction:
                return "ThrottlingException", None, stall
            return None, None, stall

    # -- operations

    def converse(self, model_id: str, request: dict) -> dict:
        started = time.monotonic()
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages or messages[-1].get("role") != "user":
            raise _ApiError("ValidationException", "messages must be a non-empty list ending with a user message")
        system = "\n".join(block.get("text", "") for block in request.get("system") or [])
        texts = [block.get("text", "") for message in messages for block in message.get("content", [])]
        config = request.get("inferenceConfig") or {}
        max_tokens = config.get("maxTokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise _ApiError("ValidationException", "inferenceConfig.maxTokens must be a positive integer")
        input_tokens = count_tokens(system) + sum(count_tokens(t) for t in texts)
        with self.stats.lock:
            self.stats.largest_input_tokens = max(self.stats.largest_input_tokens, input_tokens)
        if self.faults.context_tokens is not None and input_tokens > self.faults.context_tokens:
            raise _ApiError("ValidationException", "Input is too long for requested model.")
        prompt = "".join(block.get("text", "") for block in messages[-1].get("content", []))
        summary, stop_reason = fake_summary(prompt, max_tokens or 4096)
        output_tokens = count_tokens(summary)
        self._pause(started)
        with self.stats.lock:
            self.stats.converse.append(
                ConverseRecord(
                    model_id, system, prompt[:200], input_tokens, output_tokens, max_tokens, config.get("temperature")
                )
            )
        return {
            "output": {"message": {"role": "assistant", "content": [{"text": summary}]}},
            "stopReason": stop_reason,
            "usage": {
                "inputTokens": input_tokens,
                "outputTokens": output_tokens,
                "totalTokens": input_tokens + output_tokens,
            },
            "metrics": {"latencyMs": int((time.monotonic() - started) * 1000)},
        }

    def invoke(self, model_id: str, request: dict) -> dict:
        started = time.monotonic()
        if "titan-embed-text" not in model_id:
            raise _ApiError(
                "ValidationException", f"this local server runs Titan text embedding models only, not {model_id}"
            )
        text = request.get("inputText")
        if not isinstance(text, str) or not text.strip():
            raise _ApiError("ValidationException", _malformed("#/inputText: expected a non-empty string"))
        dimensions = request.get("dimensions", 1024)
        if dimensions not in TITAN_V2_DIMENSIONS:
            raise _ApiError("ValidationException", _malformed(f"#/dimensions: {dimensions} is not a valid enum value"))
        tokens = count_tokens(text)
        if tokens > TITAN_V2_MAX_TOKENS:
            raise _ApiError("ValidationException", "400 Bad Request: Too many input tokens.")
        vector = fake_embedding(text, dimensions, bool(request.get("normalize", True))).tolist()
        self._pause(started)
        return {"embedding": vector, "inputTextTokenCount": tokens, "embeddingsByType": {"float": vector}}

    def _pause(self, started: float) -> None:
        """Hold a successful request to the configured latency, so concurrency overlaps."""
        remaining = self.faults.latency_s - (time.monotonic() - started)
        if remaining > 0:
            time.sleep(remaining)

    # -- bookkeeping

    def _enter(self, operation: str, model_id: str) -> None:
        with self.stats.lock:
            self.stats.requests[(operation, model_id)] += 1
            self.stats.in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)

    def _leave(self, operation: str, error_code: str | None) -> None:
        with self.stats.lock:
            self.stats.in_flight -= 1
            if error_code:
                self.stats.errors[(operation, error_code)] += 1


def _make_handler(server: BedrockServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

        def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            route = _ROUTE.match(urlsplit(self.path).path)
            if route is None:
                path = urlsplit(self.path).path
                self._send_error(_ApiError("ResourceNotFoundException", f"no such operation: POST {path}"))
                return
            model_id, operation = unquote(route.group(1)), route.group(2)
            server._enter(operation, model_id)
            error_code = None
            try:
                code, message, stall = server._injected_fault(model_id, self.headers.get("Authorization", ""))
                if stall:
                    time.sleep(stall)
                if code is not None:
                    raise _ApiError(code, message)
                try:
                    request = json.loads(body or b"{}")
                except ValueError:
                    raise _ApiError("ValidationException", "Malformed input request: the body is not JSON") from None
                serve = server.converse if operation == "converse" else server.invoke
                answer = serve(model_id, request)
                self._send_json(200, answer)
            except _ApiError as exc:
                error_code = exc.code
                self._send_error(exc)
            finally:
                server._leave(operation, error_code)

        def do_GET(self) -> None:  # noqa: N802
            self._send_error(_ApiError("ResourceNotFoundException", f"no such operation: GET {self.path}"))

        def _send_error(self, exc: _ApiError) -> None:
            self._send_json(
                ERROR_STATUS.get(exc.code, 400),
                {"message": exc.message},
                {"x-amzn-ErrorType": f"{exc.code}:http://internal.amazon.com/coral/com.amazon.bedrock/"},
            )

        def _send_json(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a read timeout)
                self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the stdlib's name)
            pass  # quiet: tests read the stats, not a log

    return Handler


@contextlib.contextmanager
def bedrock_server(**faults: object) -> Iterator[BedrockServer]:
    """Run a Bedrock runtime API on a free loopback port for the block; ``faults`` are
    ``BedrockFaults`` fields. The server has ``.url``, ``.stats`` and ``.faults``."""
    server = BedrockServer(BedrockFaults(**faults)).start()  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()

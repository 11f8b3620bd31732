"""A real HTTP webhook receiver on a loopback port, as a merchant's endpoint would be.

It checks each request's X-Floodgate-Signature against the shared secret (a bad or
missing one gets 401), answers from a script (e.g. 500, 500, then 200 by default), can
hold an answer back to make the sender time out, and accepts each Idempotency-Key once:
a repeat of an accepted delivery gets 200 and is not accepted again. Tests read
`attempts` (every request, in order) and `accepted` (the deliveries that counted), and
wait for them with `wait_for` (a condition variable, not a sleep).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from engine.catalog.webhook import ATTEMPT_HEADER, EVENT_HEADER, IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify


@dataclass
class Attempt:
    event: str | None
    idempotency_key: str | None
    attempt: int | None
    signature_valid: bool
    status: int  # what the receiver answered
    body: dict | None


@dataclass
class Receiver:
    secret: str
    url: str = ""
    script: list[int] = field(default_factory=list)  # statuses to answer first, in order; then 200
    hold_seconds: list[float] = field(default_factory=list)  # per request, in order: wait before answering
    attempts: list[Attempt] = field(default_factory=list)
    accepted: list[Attempt] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _release: threading.Event = field(default_factory=threading.Event)
    _arrived: int = 0

    def wait_for(self, accepted: int, timeout: float = 30.0) -> bool:
        """Block until `accepted` deliveries were accepted (or the timeout passes)."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self.accepted) >= accepted, timeout)

    def release_held(self) -> None:
        """Let any held answer go at once (the end of a test)."""
        self._release.set()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length)
        valid = verify(self.secret, raw, handler.headers.get(SIGNATURE_HEADER))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        key = handler.headers.get(IDEMPOTENCY_HEADER)
        with self._changed:
            index = self._arrived  # in order of arrival: a held request does not hold the next ones
            self._arrived += 1
            hold = self.hold_seconds[index] if index < len(self.hold_seconds) else 0.0
        if hold:
            self._release.wait(hold)  # the sender's timeout is shorter: it gives up first
        with self._changed:
            if not valid:
                status = 401
            elif index < len(self.script):
                status = self.script[index]
            else:
                status = 200
            attempt_header = handler.headers.get(ATTEMPT_HEADER)
            attempt = Attempt(
                handler.headers.get(EVENT_HEADER), key, int(attempt_header) if attempt_header else None, valid, status, body
            )
            self.attempts.append(attempt)
            if status == 200 and all(a.idempotency_key != key for a in self.accepted):
                self.accepted.append(attempt)
            self._changed.notify_all()
        try:
            handler.send_response(status)
            handler.send_header("Content-Length", "2")
            handler.end_headers()
            handler.wfile.write(b"{}")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the sender timed out and went away


@contextlib.contextmanager
def webhook_receiver(secret: str, script: list[int] | None = None, hold_seconds: list[float] | None = None) -> Iterator[Receiver]:
    receiver = Receiver(secret, script=list(script or []), hold_seconds=list(hold_seconds or []))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            receiver._handle(self)

        def log_message(self, format, *args):  # noqa: A002 - quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/catalog"
    try:
        yield receiver
    finally:
        receiver.release_held()
        server.shutdown()
        server.server_close()
        thread.join(10)

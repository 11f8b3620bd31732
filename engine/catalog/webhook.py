"""One signed webhook per upload, delivered with retries.

A POST of a JSON body, with:

- `X-Floodgate-Signature: sha256=<hex>`: HMAC-SHA256 of the exact body bytes with the
  shared secret; a receiver recomputes it and compares in constant time (`verify`);
- `X-Floodgate-Event`: upload.completed or upload.failed;
- `Idempotency-Key`: `<event>:<upload id>`, the same on every attempt and every re-run for
  the upload, so a receiver that saw it already can answer 2xx and do nothing;
- `X-Floodgate-Delivery-Attempt`: 1, 2, …

Retried, with exponential backoff and jitter (honouring Retry-After), on 5xx, 408, 429,
timeouts and connection errors; other 4xx answers mean the receiver refuses it and are
not retried. The body is made once, so every attempt sends the same bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit

SIGNATURE_HEADER = "X-Floodgate-Signature"
EVENT_HEADER = "X-Floodgate-Event"
IDEMPOTENCY_HEADER = "Idempotency-Key"
ATTEMPT_HEADER = "X-Floodgate-Delivery-Attempt"
COMPLETED, FAILED = "upload.completed", "upload.failed"
_RETRIED_STATUS = {408, 429}


def sign(secret: str | bytes, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(secret: str | bytes, body: bytes, signature: str | None) -> bool:
    return bool(signature) and hmac.compare_digest(sign(secret, body), signature)


def idempotency_key(event: str, upload_id: str) -> str:
    return f"{event}:{upload_id}"


def event_body(event: str, upload: dict, data: dict) -> bytes:
    body = {"event": event, "occurred_at": datetime.now(timezone.utc).isoformat(), "upload": upload, "data": data}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def redact(url: str) -> str:
    """The URL without credentials or query (which may carry a token), for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


@dataclass
class Delivery:
    delivered: bool
    attempts: int
    status: int | None  # the last HTTP status, if any answer came
    error: str | None  # why the last attempt failed
    idempotency_key: str
    seconds: float
    body: bytes = b""  # what was signed and sent: a later redelivery sends the same bytes


def deliver(
    url: str,
    secret: str,
    event: str,
    body: bytes,
    key: str,
    *,
    timeout_seconds: float = 10.0,
    max_attempts: int = 5,
    backoff_seconds: float = 1.0,
    max_backoff_seconds: float = 30.0,
    log: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "floodgate-catalog",
        SIGNATURE_HEADER: sign(secret, body),
        EVENT_HEADER: event,
        IDEMPOTENCY_HEADER: key,
    }
    started = time.monotonic()
    status: int | None = None
    error: str | None = None
    for attempt in range(1, max_attempts + 1):
        retry_after: float | None = None
        request = urllib.request.Request(url, data=body, method="POST", headers={**headers, ATTEMPT_HEADER: str(attempt)})
        try:
            with urllib.request.urlopen(request, timeout=timeout_seconds) as response:
                status = response.status
                response.read(65536)
            return Delivery(True, attempt, status, None, key, time.monotonic() - started, body)
        except urllib.error.HTTPError as exc:
            status, error = exc.code, f"HTTP {exc.code}"
            retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            exc.close()
            if exc.code < 500 and exc.code not in _RETRIED_STATUS:
                break  # the receiver refuses this request: sending it again changes nothing
        except (socket.timeout, TimeoutError) as exc:
            status, error = None, f"timed out after {timeout_seconds:g}s ({type(exc).__name__})"
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            status = None
            error = f"timed out after {timeout_seconds:g}s" if isinstance(reason, socket.timeout) else f"{type(reason).__name__}: {reason}"
        if attempt == max_attempts:
            break
        wait = min(max_backoff_seconds, backoff_seconds * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
        if retry_after is not None:
            wait = min(max_backoff_seconds, max(wait, retry_after))
        if log is not None:
            log(f"webhook {event} to {redact(url)}: attempt {attempt} failed ({error}); retrying in {wait:.1f}s")
        sleep(wait)
    return Delivery(False, attempt, status, error, key, time.monotonic() - started, body)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: the exponential backoff stands

"""The completion webhook of the product catalog (engine/catalog/webhook.py says what is sent).

Without a URL (the local default) nothing is sent and the step records that. In
production the URL and the secret come from dg.EnvVar (FLOODGATE_WEBHOOK_URL,
FLOODGATE_WEBHOOK_SECRET); neither appears in logs or metadata (the URL only without its
credentials and query).
"""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg

from engine.catalog.webhook import Delivery, deliver, event_body, idempotency_key, redact


class WebhookSender(dg.ConfigurableResource):
    url: str | None = None
    secret: str | None = None
    timeout_seconds: float = 10.0
    max_attempts: int = 6
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 30.0

    @property
    def configured(self) -> bool:
        return bool(self.url)

    def describe(self) -> str:
        return redact(self.url) if self.url else "(no webhook URL configured)"

    def send(self, event: str, upload_id: str, upload: dict, data: dict,
             log: Callable[[str], None] | None = None) -> Delivery | None:
        """Deliver one event; None when no URL is configured."""
        if not self.url:
            return None
        return self.deliver_body(event, idempotency_key(event, upload_id), event_body(event, upload, data), log=log)

    def deliver_body(self, event: str, key: str, body: bytes, *, max_attempts: int | None = None,
                     log: Callable[[str], None] | None = None) -> Delivery:
        """Deliver a body made before (a parked delivery: orchestration/webhook_outbox.py)."""
        if not self.url:
            raise dg.Failure("no webhook URL configured (FLOODGATE_WEBHOOK_URL)")
        if not self.secret:
            raise dg.Failure("a webhook URL is configured without a secret to sign with (FLOODGATE_WEBHOOK_SECRET)")
        return deliver(
            self.url, self.secret, event, body, key,
            timeout_seconds=self.timeout_seconds, max_attempts=max_attempts or self.max_attempts,
            backoff_seconds=self.backoff_seconds, max_backoff_seconds=self.max_backoff_seconds, log=log,
        )

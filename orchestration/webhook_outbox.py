"""Catalog webhooks that could not be delivered, kept until they are.

The webhook step and the failure sensor each try a delivery for about half a minute
(WebhookSender: attempts with backoff). A receiver that is down for longer would lose the
upload's one outcome: the failure sensor's tick failed, and Dagster's run-status cursor
moved on all the same, so that run was never looked at again. Instead, the failure sensor
parks an undelivered event in the object store, as `<outbox_prefix>/<upload id>.<event>.json`
with the exact body it signed, and `catalog_webhook_redelivery_sensor` sends it again every
few minutes until the receiver takes it, then removes it. The Idempotency-Key is the
event's own (`<event>:<upload id>`), so a receiver that did get an earlier attempt answers
2xx and does nothing.

A tick tries each parked event once, the least recently tried first, and stops at the
first that fails:
the receiver is still down, and the rest wait for the next tick (a tick must finish in
well under a minute).

An event still not taken `webhook_redelivery_hours` after it was parked (72 by default, as
webhook senders commonly give up after about three days) is not sent again: a receiver
that has refused it that long refuses it for a reason of its own (a 4xx for its body, a
URL that is gone), and a tick would otherwise spend an attempt on it every few minutes
for ever. It is moved, whole, to `<expired_webhooks_prefix>/`, where an operator can read
or move it back, and the tick logs an error naming it.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import dagster as dg

from assets.catalog.settings import CatalogSettings
from engine.catalog.webhook import Delivery
from resources.object_store import ObjectStore
from resources.webhook import WebhookSender

MAX_PER_TICK = 50


def outbox_key(settings: CatalogSettings, upload_id: str, event: str) -> str:
    return f"{settings.outbox_prefix.rstrip('/')}/{upload_id}.{event}.json"


def expired_key(settings: CatalogSettings, parked_key: str) -> str:
    """Where a parked event goes once the sensor has given up on it (the same file name)."""
    return f"{settings.expired_webhooks_prefix.rstrip('/')}/{parked_key.rsplit('/', 1)[-1]}"


def park(store: ObjectStore, settings: CatalogSettings, partition: str, upload_id: str, event: str,
         delivery: Delivery) -> str:
    """Keep an undelivered event for the redelivery sensor; returns the parked object's URI."""
    now = datetime.now(timezone.utc).isoformat()
    entry = {
        "event": event, "upload_id": upload_id, "partition": partition, "idempotency_key": delivery.idempotency_key,
        "body": delivery.body.decode(), "parked_at": now, "last_attempt_at": now, "attempts": delivery.attempts,
        "last_status": delivery.status, "last_error": delivery.error,
    }
    key = outbox_key(settings, upload_id, event)
    _write(store, key, entry)
    return store.uri(key)


def _write(store: ObjectStore, key: str, entry: dict) -> None:
    with store.open_write(key) as out:
        out.write(json.dumps(entry, sort_keys=True).encode())


@dg.sensor(
    name="catalog_webhook_redelivery_sensor",
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Sends again, until the receiver takes them, the catalog webhooks (upload.completed or upload.failed) "
        "that were not delivered after their retries, as they were first signed and with the same Idempotency-Key; "
        "after webhook_redelivery_hours (72) it moves one aside, under expired_webhooks_prefix, and logs an error."
    ),
)
def catalog_webhook_redelivery_sensor(
    context: dg.SensorEvaluationContext,
    object_store: ObjectStore,
    catalog_settings: CatalogSettings,
    catalog_webhook: WebhookSender,
) -> dg.SkipReason:
    prefix = catalog_settings.outbox_prefix.rstrip("/") + "/"
    parked = sorted(object_store.list(prefix), key=lambda info: (info.last_modified, info.key))
    if not parked:
        return dg.SkipReason("no undelivered webhook")
    if not catalog_webhook.configured:
        context.log.warning(f"{len(parked)} undelivered webhooks under {object_store.uri(prefix)}, and no webhook URL configured")
        return dg.SkipReason("no webhook URL configured")
    delivered = expired = 0
    give_up_before = None
    if catalog_settings.webhook_redelivery_hours > 0:
        give_up_before = datetime.now(timezone.utc) - timedelta(hours=catalog_settings.webhook_redelivery_hours)
    for info in parked[:MAX_PER_TICK]:
        with object_store.open_read(info.key) as f:
            entry = json.loads(f.read())
        if give_up_before is not None and datetime.fromisoformat(entry["parked_at"]) < give_up_before:
            _expire(context, object_store, catalog_settings, info.key, entry)
            expired += 1
            continue
        delivery = catalog_webhook.deliver_body(
            entry["event"], entry["idempotency_key"], entry["body"].encode(), max_attempts=1, log=context.log.warning
        )
        if delivery.delivered:
            object_store.delete(info.key)
            delivered += 1
            context.log.info(f"{entry['event']} for {entry['partition']} delivered, parked since {entry['parked_at']}")
            continue
        entry.update(attempts=entry["attempts"] + delivery.attempts, last_status=delivery.status, last_error=delivery.error,
                     last_attempt_at=datetime.now(timezone.utc).isoformat())
        _write(object_store, info.key, entry)
        context.log.warning(
            f"{entry['event']} for {entry['partition']} still not delivered ({delivery.error}; {entry['attempts']} "
            f"attempts since {entry['parked_at']}); {len(parked) - delivered - expired} wait for the next tick"
        )
        break
    gave_up = f", {expired} given up (moved under {catalog_settings.expired_webhooks_prefix}/)" if expired else ""
    return dg.SkipReason(f"{delivered} of {len(parked)} undelivered webhooks delivered{gave_up}")


def _expire(context, store: ObjectStore, settings: CatalogSettings, key: str, entry: dict) -> None:
    """Stop sending a parked event: move it under the expired prefix (written before the
    parked copy is deleted, so a failure in between leaves it parked, not lost)."""
    target = expired_key(settings, key)
    entry["expired_at"] = datetime.now(timezone.utc).isoformat()
    _write(store, target, entry)
    store.delete(key)
    context.log.error(
        f"{entry['event']} for {entry['partition']} given up after {entry['attempts']} attempts since "
        f"{entry['parked_at']} (more than {settings.webhook_redelivery_hours:g} h; last: "
        f"{entry['last_error'] or entry['last_status']}); kept at {store.uri(target)}"
    )

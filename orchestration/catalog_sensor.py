"""The product catalog's sensors.

catalog_uploads_sensor: each tick lists <uploads_prefix>/ once; an upload whose key or
ETag the cursor has not seen gets a dynamic partition (`<path>@<etag>`) and one run. The
cursor is the key → ETag of every object looked at (as the search-terms sensor keeps it),
so a replaced file (a new ETag) is a new upload and an unchanged one is never requested
twice; keys that disappear from the listing leave it. An object younger than
settle_seconds waits for the next tick (a local copy may still be being written), and at
most MAX_RUNS_PER_TICK uploads are requested per tick, the rest on the next ones.

catalog_upload_failed_sensor: when a run of the catalog job fails for good, sends one
webhook for its upload, so that each upload gets exactly one outcome:
- a run Dagster will retry (run retries, e.g. after its process died) sends nothing: the
  retry reports the upload;
- a run that failed after the upload was applied (its applied.json exists: the process died
  in or before the webhook step, or the webhook step could not deliver) sends
  upload.completed, as the webhook step would have, under the same idempotency key;
- any other failure sends upload.failed with the reason (the failed step's message).
An event the receiver does not take after the sender's retries is parked for
catalog_webhook_redelivery_sensor (orchestration/webhook_outbox.py), which sends it again
until it is taken.
It also writes the upload's final state into its Redis progress key for a run that died
(a failed step writes its own), so that the key does not say "importing" until it expires.
"""

import json
from datetime import datetime, timezone

import dagster as dg

from assets.catalog.jobs import catalog_job
from assets.catalog.pipeline import REJECTS_FILE, read_applied, send_completed
from assets.catalog.settings import CatalogSettings
from engine.catalog.uploads import is_upload_name, parse_upload_partition_key, upload_id, upload_partition_key
from engine.catalog.webhook import COMPLETED, FAILED
from orchestration.webhook_outbox import park
from partitions.catalog import catalog_uploads
from resources.object_store import ObjectStore
from resources.webhook import WebhookSender

MAX_RUNS_PER_TICK = 100
UPLOAD_KEY_TAG = "floodgate/catalog_upload"
# set by Dagster on a failed run when run retries are on: "true" if it will be retried
WILL_RETRY_TAG = "dagster/will_retry"


@dg.sensor(
    job=catalog_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watches <uploads_prefix>/ in the object store. A new or replaced catalog file (.csv, .tsv, .txt, "
        "each optionally .gz, or .xlsx) gets its own partition (path@etag) and one run."
    ),
)
def catalog_uploads_sensor(
    context: dg.SensorEvaluationContext, object_store: ObjectStore, catalog_settings: CatalogSettings
) -> dg.SensorResult:
    settings = catalog_settings
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    listed: dict[str, str] = {}
    prefix = settings.uploads_prefix.rstrip("/") + "/"
    now = datetime.now(timezone.utc)
    known = set(context.instance.get_dynamic_partitions(catalog_uploads.name))
    new_partitions: list[str] = []
    requests: list[dg.RunRequest] = []
    waiting = young = 0
    for info in object_store.list(prefix):
        if seen.get(info.key) == info.etag:
            listed[info.key] = info.etag
            continue
        if not is_upload_name(info.key):
            if info.key not in seen:
                context.log.warning(f"{object_store.uri(info.key)} is not a catalog file (.csv, .tsv, .txt, .gz, .xlsx); ignored")
            listed[info.key] = info.etag
            continue
        if (now - info.last_modified).total_seconds() < settings.settle_seconds:
            young += 1  # may still be being written: the next tick looks again
            continue
        if len(requests) == MAX_RUNS_PER_TICK:
            waiting += 1
            continue
        partition = upload_partition_key(info.key, info.etag, prefix)
        listed[info.key] = info.etag
        if partition not in known:
            new_partitions.append(partition)
        requests.append(dg.RunRequest(run_key=partition, partition_key=partition, tags={UPLOAD_KEY_TAG: info.key}))
    if waiting or young:
        context.log.info(f"{waiting + young} uploads under {prefix} wait for the next tick ({young} still settling)")
    cursor = json.dumps(listed, sort_keys=True, separators=(",", ":"))
    if not requests:
        return dg.SensorResult(cursor=cursor, skip_reason=dg.SkipReason(f"no new upload under {object_store.uri(prefix)}"))
    context.log.info(f"{len(requests)} new uploads under {object_store.uri(prefix)}")
    return dg.SensorResult(
        run_requests=requests,
        cursor=cursor,
        dynamic_partitions_requests=[catalog_uploads.build_add_request(new_partitions)] if new_partitions else [],
    )


def failure_reason(context: dg.RunFailureSensorContext) -> tuple[str, list[str]]:
    """(why the run failed, the steps that failed)."""
    steps, messages = [], []
    for event in context.get_step_failure_events():
        steps.append(event.step_key)
        error = event.event_specific_data.error if event.event_specific_data else None
        messages.append(error.message.strip() if error is not None else event.message or "")
    if not messages:
        messages.append(context.failure_event.message or "the run failed")
    return "; ".join(m for m in messages if m), steps


@dg.run_failure_sensor(
    monitored_jobs=[catalog_job],
    name="catalog_upload_failed_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Sends one upload.failed webhook, with the reason, for each failed run of the catalog job.",
)
def catalog_upload_failed_sensor(
    context: dg.RunFailureSensorContext,
    object_store: ObjectStore,
    catalog_settings: CatalogSettings,
    catalog_webhook: WebhookSender,
) -> None:
    run = context.dagster_run
    partition = run.tags.get("dagster/partition")
    if not partition:
        context.log.warning(f"run {run.run_id} of the catalog job has no upload partition; no webhook")
        return
    if run.tags.get(WILL_RETRY_TAG) == "true":
        context.log.info(f"{partition}: run {run.run_id} failed and will be retried; its retry reports the upload")
        return
    reason, steps = failure_reason(context)
    applied = read_applied(object_store, catalog_settings, partition)
    if applied is not None:
        _publish_state(catalog_settings, partition, context, "completed",
                       **{k: applied[k] for k in ("rows", "inserted", "updated", "unchanged", "rejected")})
        context.log.info(f"{partition}: the run failed ({reason[:200]}) after the upload was applied; upload.completed")
        delivery = send_completed(catalog_webhook, object_store, partition, applied, log=context.log.warning)
        _check_delivered(context, object_store, catalog_settings, COMPLETED, partition, delivery)
        return
    if not steps:  # the run died (no step failed, so none wrote its state): the key would say importing for days
        _publish_state(catalog_settings, partition, context, "failed", reason=f"the run failed: {reason[:500]}")
    try:
        key, etag = parse_upload_partition_key(partition, catalog_settings.uploads_prefix)
    except ValueError:
        key, etag = None, None
    rejects_key = catalog_settings.result_key(partition, REJECTS_FILE)
    upload = {"id": upload_id(partition), "partition": partition, "object_key": key, "etag": etag,
              "uri": object_store.uri(key) if key else None}
    data = {"reason": reason, "failed_steps": steps, "run_id": run.run_id}
    if object_store.exists(rejects_key):
        data["rejects_uri"] = object_store.uri(rejects_key)
    context.log.info(f"{partition} failed: {reason[:200]}")
    delivery = catalog_webhook.send(FAILED, upload_id(partition), upload, data, log=context.log.warning)
    _check_delivered(context, object_store, catalog_settings, FAILED, partition, delivery)


def _check_delivered(context, store: ObjectStore, settings: CatalogSettings, event: str, partition: str, delivery) -> None:
    if delivery is None:
        context.log.info(f"{event} for {partition}: no webhook URL configured")
    elif not delivery.delivered:
        parked = park(store, settings, partition, upload_id(partition), event, delivery)
        context.log.warning(
            f"{event} for {partition} not delivered after {delivery.attempts} attempts ({delivery.error}); "
            f"parked at {parked} for catalog_webhook_redelivery_sensor"
        )
    else:
        context.log.info(f"{event} for {partition} delivered (attempt {delivery.attempts})")


def _publish_state(settings: CatalogSettings, partition: str, context, state: str, **fields) -> None:
    """The upload's final state in its Redis progress key (engine/catalog/progress.py), when one is configured."""
    board = settings.progress_board(partition, context.log)
    if board is None:
        return
    try:
        board.publish(state, **fields)
    finally:
        board.close()

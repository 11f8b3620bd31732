"""catalog_upload → catalog_validated_rows (+ rejects) → catalog_products → catalog_upload_webhook,
one dynamic partition per upload (partitions/catalog.py).

catalog_validated_rows and catalog_products are made in one pass (the catalog_import
step): each batch of validated rows is written to the validated file and, at the same time,
COPYed into the upload's staging table, so the database parses one batch while the next
is validated; the upsert runs once the whole file is read and its rejects are within the
limit. Either asset can still be materialized alone: catalog_products alone applies the
validated file of an earlier run.

The webhook is a step of its own after the upsert: retrying it (or re-running it) sends
the same event with the same idempotency key, and never applies the upload again.
"""

import contextlib
import json
import time

import dagster as dg
import pyarrow as pa

from assets.catalog.settings import CatalogSettings
from assets.metadata import cost_metadata, step_metadata
from engine.catalog.columns import HeaderError
from engine.catalog.text_stream import UploadFormatError, detect_format
from engine.catalog.upsert import UpsertPlan
from engine.catalog.uploads import upload_id
from engine.catalog.validated_file import ValidationSummary, validate_upload
from engine.catalog.validated_rows import read_validated_rows
from engine.catalog.webhook import COMPLETED, redact
from engine.measure import Progress, StepMeasure
from engine.memory import release_free_memory
from partitions.catalog import catalog_uploads
from resources.catalog_db import CatalogDatabase
from resources.object_store import ObjectInfo, ObjectStore
from resources.webhook import WebhookSender

GROUP = "product_catalog"
UPLOAD = dg.AssetKey("catalog_upload")
VALIDATED = dg.AssetKey("catalog_validated_rows")
PRODUCTS = dg.AssetKey("catalog_products")
WEBHOOK = dg.AssetKey("catalog_upload_webhook")
IMPORT_STEP = "catalog_import"
# result files, under <results_prefix>/<partition key>/
VALIDATED_FILE, REJECTS_FILE, SUMMARY_FILE, APPLIED_FILE = "validated.arrow", "rejects.csv", "summary.json", "applied.json"


def _upload(context, store: ObjectStore, settings: CatalogSettings) -> tuple[str, str, ObjectInfo]:
    """(object key, ETag, what the store has now) of the run's upload; fails clearly when the
    object is gone or was replaced (the replacement is an upload of its own)."""
    try:
        key, etag = settings.upload_object(context.partition_key)
    except ValueError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None
    info = store.stat(key)
    if info is None:
        raise dg.Failure(f"the upload {store.uri(key)} is no longer in the object store", allow_retries=False)
    if info.etag != etag:
        raise dg.Failure(
            f"{store.uri(key)} was replaced after this upload was registered (ETag {etag}, now {info.etag}); "
            "the new file is an upload of its own",
            allow_retries=False,
        )
    return key, etag, info


@dg.asset(
    partitions_def=catalog_uploads,
    group_name=GROUP,
    kinds={"s3"},
    description=(
        "A merchant's catalog file as uploaded under <uploads_prefix>/ (CSV, gzip-compressed CSV or .xlsx): "
        "its size, ETag and format. The partition key is the file's path below the prefix and its ETag, "
        "so a file replaced under the same name is a new upload."
    ),
)
def catalog_upload(
    context: dg.AssetExecutionContext, object_store: ObjectStore, catalog_settings: CatalogSettings
) -> dg.MaterializeResult:
    key, etag, info = _upload(context, object_store, catalog_settings)
    try:
        kind = detect_format(object_store.read_head(key, 8), object_store.uri(key))
    except UploadFormatError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None
    return dg.MaterializeResult(
        metadata={
            "object_key": key,
            "uri": dg.MetadataValue.path(object_store.uri(key)),
            "bytes": dg.MetadataValue.int(info.size),
            "etag": etag,
            "format": kind,
            "last_modified": info.last_modified.isoformat(),
        }
    )


class _UploadProgress:
    """Rows, rate and ETA every batch: in the run log, and in the upload's Redis key when a
    Redis URL is configured."""

    def __init__(self, context, settings: CatalogSettings, what: str, total_bytes: int):
        self.log = Progress(context.log, what, total=total_bytes, interval=settings.progress_interval_seconds)
        self.total_bytes = total_bytes
        self.board = settings.progress_board(context.partition_key, context.log)

    def __call__(self, rows: int, bytes_read: int) -> None:
        self.log.update(rows, bytes_read)
        if self.board is not None:
            elapsed = max(1e-9, _elapsed(self.log))
            fraction = min(1.0, bytes_read / self.total_bytes) if self.total_bytes else None
            eta = elapsed * (1 - fraction) / fraction if fraction else None
            self.board.publish(
                "importing", rows=rows, bytes=bytes_read, total_bytes=self.total_bytes,
                rows_per_second=round(rows / elapsed, 1), eta_seconds=None if eta is None else round(eta, 1),
            )

    def applying(self) -> None:
        """The file is read; the database applies its rows (the long part of a re-import)."""
        self.log.log.info("the file is read; applying its rows to the catalog")
        if self.board is not None:
            self.board.publish("applying", eta_seconds=None)

    def done(self, state: str, **fields) -> None:
        if self.board is not None:
            self.board.publish(state, **fields)
            self.board.close()


def _elapsed(progress: Progress) -> float:
    return time.monotonic() - progress.started


class _CheckedStaging:
    """The database's staging, but `finish` first checks that the object is still the
    upload (a file replaced while it was read must not be applied)."""

    def __init__(self, database: CatalogDatabase, store: ObjectStore, key: str, etag: str, progress: "_UploadProgress"):
        self.database, self.store, self.key, self.etag, self.progress = database, store, key, etag, progress

    @contextlib.contextmanager
    def __call__(self, plan: UpsertPlan):
        with self.database.staging(plan) as staging:
            yield _Finisher(staging, self)


class _Finisher:
    def __init__(self, staging, checked: _CheckedStaging):
        self.staging, self.checked = staging, checked

    def write(self, table: pa.Table) -> None:
        self.staging.write(table)

    def rows_done(self) -> None:
        self.staging.rows_done()

    def finish(self, superseded):
        info = self.checked.store.stat(self.checked.key)
        if info is None or info.etag != self.checked.etag:
            raise dg.Failure(
                f"{self.checked.store.uri(self.checked.key)} was replaced or removed while it was read; nothing applied",
                allow_retries=False,
            )
        self.checked.progress.applying()
        return self.staging.finish(superseded)


def _outputs(store: ObjectStore, settings: CatalogSettings, partition_key: str):
    @contextlib.contextmanager
    def open_outputs():
        with store.open_write(settings.result_key(partition_key, REJECTS_FILE)) as rejects:
            with store.open_write(settings.result_key(partition_key, VALIDATED_FILE)) as validated:
                yield validated, rejects

    return open_outputs


def _write_json(store: ObjectStore, key: str, value: dict) -> None:
    with store.open_write(key) as out:
        out.write(json.dumps(value, indent=1, default=str).encode())


def _read_json(store: ObjectStore, key: str) -> dict | None:
    if not store.exists(key):
        return None
    with store.open_read(key) as f:
        return json.loads(f.read())


def _reject_lines(summary: ValidationSummary) -> str:
    lines = [f"- row {e['row']}: {'; '.join(e['reasons'])}" for e in summary.examples[:10]]
    if summary.rejected > len(lines):
        lines.append(f"- … {summary.rejected - len(lines):,} rejected rows in all (rejects file)")
    return "\n".join(lines)


@dg.multi_asset(
    name=IMPORT_STEP,
    partitions_def=catalog_uploads,
    group_name=GROUP,
    can_subset=True,
    # uploads to one table apply one at a time anyway (an advisory lock): the pool keeps the
    # next one queued instead of holding a run slot while it waits for the lock
    pool="product_database",
    specs=[
        dg.AssetSpec(
            VALIDATED,
            deps=[UPLOAD],
            kinds={"arrow"},
            skippable=True,
            description=(
                "The upload's rows, typed and checked (sku, name, description, price, stock, active, and its "
                "other columns as attributes), as an Arrow IPC file at <results_prefix>/<upload>/validated.arrow. Each "
                "refused row is in rejects.csv beside it, with its row number, its cells and every reason; a "
                "SKU repeated in the file keeps its last row, and the earlier ones are listed there too. "
                "Fails, with nothing applied, when rejected rows exceed max_reject_fraction."
            ),
        ),
        dg.AssetSpec(
            PRODUCTS,
            deps=[VALIDATED],
            kinds={"postgres", "sqlite"},
            skippable=True,
            description=(
                "The products table (SQLite locally, PostgreSQL in production), upserted by SKU from the "
                "validated rows in one transaction: all of the upload or none of it. Rows equal to the "
                "product are not written. Records inserted, updated, unchanged and rejected."
            ),
        ),
    ],
)
def catalog_import(
    context: dg.AssetExecutionContext,
    object_store: ObjectStore,
    catalog_settings: CatalogSettings,
    catalog_database: CatalogDatabase,
):
    settings, store, partition = catalog_settings, object_store, context.partition_key
    selected = context.selected_asset_keys
    if VALIDATED not in selected:
        yield _apply_validated(context, store, settings, catalog_database)
        return
    key, etag, info = _upload(context, store, settings)
    where = store.uri(key)
    progress = _UploadProgress(context, settings, f"importing {where}", info.size)
    staging = _CheckedStaging(catalog_database, store, key, etag, progress) if PRODUCTS in selected else None
    try:
        with StepMeasure() as measure:
            summary = validate_upload(
                lambda: store.open_read(key),
                where,
                _outputs(store, settings, partition),
                options=settings.read_options(),
                max_reject_fraction=settings.max_reject_fraction,
                progress=progress,
                staging=staging,
            )
    except (UploadFormatError, HeaderError) as exc:
        progress.done("failed", reason=str(exc))
        raise dg.Failure(str(exc), allow_retries=False) from None
    except Exception as exc:
        # the progress key is read by a page outside: our own messages, not internal errors' text
        reason = exc.description if isinstance(exc, dg.Failure) else f"{type(exc).__name__} (run {context.run.run_id})"
        progress.done("failed", reason=reason)
        raise
    finally:
        release_free_memory()
    _write_json(store, settings.result_key(partition, SUMMARY_FILE), json.loads(summary.to_json()))
    rejects_uri = store.uri(settings.result_key(partition, REJECTS_FILE))
    if summary.too_many_rejects:
        reason = (
            f"{where}: {summary.rejected:,} of {summary.rows:,} rows rejected ({summary.reject_fraction:.2%}), over the "
            f"{summary.max_reject_fraction:.2%} limit; nothing applied. Rejected rows and reasons: {rejects_uri}"
        )
        progress.done("failed", reason=reason, rejected=summary.rejected, rows=summary.rows)
        raise dg.Failure(
            reason,
            metadata={
                "rejected": dg.MetadataValue.int(summary.rejected),
                "rows": dg.MetadataValue.int(summary.rows),
                "rejects_uri": dg.MetadataValue.path(rejects_uri),
                "first_rejects": dg.MetadataValue.md(_reject_lines(summary)),
            },
            allow_retries=False,
        )
    validated_metadata = step_metadata(
        measure,
        rows_in=summary.rows,
        rows_out=summary.applied_rows,
        rejects=summary.rejected,
        superseded=dg.MetadataValue.int(summary.superseded),
        blank_rows=dg.MetadataValue.int(summary.blank),
        format=summary.source["format"],
        **({"encoding": summary.source["encoding"], "delimiter": summary.source["delimiter"]}
           if summary.source.get("encoding") else {}),
        **({"sheet": summary.source["sheet"]} if summary.source.get("sheet") else {}),
        columns=", ".join(f"{f} ← {h!r}" for f, h in summary.fields.items()),
        attributes=", ".join(summary.attributes) or "(none)",
        read_twice=summary.exact_pass,
        validated_uri=dg.MetadataValue.path(store.uri(settings.result_key(partition, VALIDATED_FILE))),
        rejects_uri=dg.MetadataValue.path(rejects_uri),
        **({"first_rejects": dg.MetadataValue.md(_reject_lines(summary))} if summary.rejected else {}),
    )
    yield dg.MaterializeResult(asset_key=VALIDATED, metadata=validated_metadata)
    if PRODUCTS not in selected:
        progress.done("validated", rows=summary.rows, rejected=summary.rejected)
        return
    applied = summary.applied or {}
    outcome = _outcome(context, key, etag, summary, applied, measure)
    _write_json(store, settings.result_key(partition, APPLIED_FILE), outcome)
    progress.done("completed", **{k: outcome[k] for k in ("rows", "inserted", "updated", "unchanged", "rejected")})
    yield dg.MaterializeResult(asset_key=PRODUCTS, metadata=_products_metadata(measure, outcome, applied, catalog_database))


def _outcome(context, key: str, etag: str, summary: ValidationSummary, applied: dict, measure: StepMeasure) -> dict:
    """What the upload did: the body of the completion webhook, and applied.json."""
    return {
        "upload": context.partition_key,
        "object_key": key,
        "etag": etag,
        "rows": summary.rows,
        "inserted": applied.get("inserted", 0),
        "updated": applied.get("updated", 0),
        "unchanged": applied.get("unchanged", 0),
        "rejected": summary.rejected,
        "superseded": summary.superseded,
        "seconds": round(measure.seconds, 3),
        "rows_per_second": round(measure.rate(summary.rows), 1),
        "peak_rss_mb": round(measure.peak_rss / 2**20, 1),
        "run_id": context.run.run_id,
    }


def _products_metadata(measure: StepMeasure, outcome: dict, applied: dict, database: CatalogDatabase) -> dict:
    return step_metadata(
        measure,
        rows_in=outcome["rows"],
        rows_out=outcome["inserted"] + outcome["updated"] + outcome["unchanged"],
        rejects=outcome["rejected"],
        inserted=dg.MetadataValue.int(outcome["inserted"]),
        updated=dg.MetadataValue.int(outcome["updated"]),
        unchanged=dg.MetadataValue.int(outcome["unchanged"]),
        rejected=dg.MetadataValue.int(outcome["rejected"]),
        superseded=dg.MetadataValue.int(outcome["superseded"]),
        # rows sent to the database and compared there; the other unchanged rows were known
        # unchanged by their fingerprint (PostgreSQL, engine/catalog/row_fingerprints.py)
        staged=dg.MetadataValue.int(applied.get("staged", 0)),
        table=database.describe(),
    )


def _apply_validated(context, store: ObjectStore, settings: CatalogSettings, database: CatalogDatabase):
    """catalog_products alone: apply the validated file an earlier run made."""
    partition = context.partition_key
    key, etag = settings.upload_object(partition)
    raw = _read_json(store, settings.result_key(partition, SUMMARY_FILE))
    if raw is None or not store.exists(settings.result_key(partition, VALIDATED_FILE)):
        raise dg.Failure(f"no validated rows for {partition}: materialize catalog_validated_rows first", allow_retries=False)
    summary = ValidationSummary(**raw)
    if summary.too_many_rejects:
        raise dg.Failure(f"{partition}: its validation rejected too many rows ({summary.rejected:,}); nothing applied",
                         allow_retries=False)
    plan = UpsertPlan(fields=list(summary.fields), attributes=summary.attributes, rows=summary.applied_rows)
    progress = Progress(context.log, f"applying {partition}", total=plan.rows, interval=settings.progress_interval_seconds,
                        unit="staged rows")
    with StepMeasure() as measure:
        with store.open_read(settings.result_key(partition, VALIDATED_FILE)) as f:
            counts = database.apply(read_validated_rows(f), plan, progress=lambda n: progress.update(n, n, force=True))
    outcome = _outcome(context, key, etag, summary, counts.as_dict(), measure)
    _write_json(store, settings.result_key(partition, APPLIED_FILE), outcome)
    return dg.MaterializeResult(asset_key=PRODUCTS, metadata=_products_metadata(measure, outcome, counts.as_dict(), database))


@dg.asset(
    partitions_def=catalog_uploads,
    group_name=GROUP,
    deps=[PRODUCTS],
    retry_policy=dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL),
    description=(
        "One upload.completed webhook per upload, with what the upload did (inserted, updated, unchanged, "
        "rejected, seconds), signed with HMAC-SHA256 (X-Floodgate-Signature) and carrying an Idempotency-Key "
        "that is the same on every attempt and re-run; retried with backoff on 5xx and timeouts. Sends "
        "nothing when no webhook URL is configured."
    ),
)
def catalog_upload_webhook(
    context: dg.AssetExecutionContext, object_store: ObjectStore, catalog_settings: CatalogSettings,
    catalog_webhook: WebhookSender,
) -> dg.MaterializeResult:
    partition = context.partition_key
    outcome = read_applied(object_store, catalog_settings, partition)
    if outcome is None:
        raise dg.Failure(f"no applied upload for {partition}: materialize catalog_products first", allow_retries=False)
    with StepMeasure() as measure:
        delivery = send_completed(catalog_webhook, object_store, partition, outcome, log=context.log.warning)
    if delivery is None:
        return dg.MaterializeResult(metadata=cost_metadata(measure, sent=False, note="no webhook URL configured"))
    metadata = cost_metadata(
        measure,
        sent=delivery.delivered,
        attempts=dg.MetadataValue.int(delivery.attempts),
        status=dg.MetadataValue.int(delivery.status) if delivery.status is not None else "none",
        idempotency_key=delivery.idempotency_key,
        url=catalog_webhook.describe(),
    )
    if not delivery.delivered:
        refused = delivery.status is not None and delivery.status < 500 and delivery.status not in (408, 429)
        raise dg.Failure(
            f"upload.completed to {redact(catalog_webhook.url)} not delivered after {delivery.attempts} attempts "
            f"({delivery.error}); the upload itself is applied, and re-running this step sends it again",
            metadata=metadata,
            allow_retries=not refused,  # a receiver that refuses the request refuses it again
        )
    return dg.MaterializeResult(metadata=metadata)


def send_completed(webhook: WebhookSender, store: ObjectStore, partition: str, outcome: dict, log=None):
    """upload.completed for an applied upload (`outcome`: its applied.json), as the webhook
    step sends it and, for a run that died after applying, the failure sensor; the same
    idempotency key either way. None when no webhook URL is configured."""
    return webhook.send(
        COMPLETED, upload_id(partition), _upload_fields(partition, outcome, store),
        {k: outcome[k] for k in ("rows", "inserted", "updated", "unchanged", "rejected", "superseded", "seconds",
                                 "rows_per_second", "peak_rss_mb")},
        log=log,
    )


def read_applied(store: ObjectStore, settings: CatalogSettings, partition: str) -> dict | None:
    """The upload's applied.json (what applying it did), or None if it has not been applied."""
    return _read_json(store, settings.result_key(partition, APPLIED_FILE))


def _upload_fields(partition: str, outcome: dict, store: ObjectStore) -> dict:
    return {"id": upload_id(partition), "partition": partition, "object_key": outcome["object_key"],
            "etag": outcome["etag"], "uri": store.uri(outcome["object_key"])}

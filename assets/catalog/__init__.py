"""The product catalog pipeline: uploaded file → validated rows (+ rejects) → upserted products → webhook.

`defs` holds the assets, the job and the sensors; the resources they need (object_store,
catalog_settings, catalog_database, catalog_webhook) come from the deployment:
assets/catalog/resources.py has the local and the production set.
"""

import dagster as dg

from assets.catalog.jobs import catalog_job
from assets.catalog.pipeline import GROUP, catalog_import, catalog_upload, catalog_upload_webhook
from orchestration.catalog_sensor import catalog_upload_failed_sensor, catalog_uploads_sensor
from orchestration.webhook_outbox import catalog_webhook_redelivery_sensor

ASSETS = [catalog_upload, catalog_import, catalog_upload_webhook]

defs = dg.Definitions(
    assets=ASSETS, jobs=[catalog_job],
    sensors=[catalog_uploads_sensor, catalog_upload_failed_sensor, catalog_webhook_redelivery_sensor],
)

__all__ = ["ASSETS", "GROUP", "catalog_job", "defs"]

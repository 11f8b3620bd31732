"""The product catalog job: one run per upload, its steps in one process."""

import dagster as dg

from assets.catalog.pipeline import GROUP

# Steps hand each other files and one database transaction's outcome: separate processes
# would only add start-up time to an import that takes seconds.
catalog_job = dg.define_asset_job(
    "product_catalog",
    selection=dg.AssetSelection.groups(GROUP),
    executor_def=dg.in_process_executor,
    description="Validate one uploaded catalog file, upsert its products, and send the completion webhook.",
)

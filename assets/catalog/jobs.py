"""The product catalog job: one run per upload, its steps in one process."""

import dagster as dg

from assets.catalog.pipeline import GROUP

# Steps run where FLOODGATE_EXECUTOR says (orchestration/executors.py): in the run's own
# process by default, since they hand each other files and a process each would only add
# start-up time to an import that takes seconds.
catalog_job = dg.define_asset_job(
    "product_catalog",
    selection=dg.AssetSelection.groups(GROUP),
    description="Validate one uploaded catalog file, upsert its products, and send the completion webhook.",
)

"""One dynamic partition per catalog upload; the key is `<path>@<etag>` (engine/catalog/uploads.py):
the file's path below the uploads prefix and its ETag, percent-encoded so that it is
stable, reversible and safe as a partition key (no commas)."""

import dagster as dg

catalog_uploads = dg.DynamicPartitionsDefinition(name="catalog_uploads")

"""One dynamic partition per enrichment input file.

The key is the file's path under the input prefix, suffix kept, percent-encoded so that it
has no commas, no "..." and no control characters (engine/enrichment/source.py,
`partition_key`): `customers/2024-06.csv` stays as it is, `a,b.csv` becomes `a%2Cb.csv`.
The same object key always gives the same partition key, and `input_key` turns it back.
"""

import dagster as dg

enrichment_files = dg.DynamicPartitionsDefinition(name="enrichment_files")

"""Plain-Python engines of the pipelines: nothing here imports Dagster."""

import os

# Arrow's allocator is fixed when pyarrow first allocates, so it is chosen here, before any
# engine module imports pyarrow: see memory.py for why it is malloc and not mimalloc.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

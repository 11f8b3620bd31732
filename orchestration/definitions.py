"""The one Definitions object of the floodgate code location."""

import gc

import dagster as dg

from assets import books, catalog, enrichment, search_terms
from engine.memory import return_freed_memory
from orchestration.event_log import enable_event_batches
from orchestration.executors import executor_from_env
from orchestration.deployment import resources
from orchestration.schedules import search_terms_weekly_schedule
from orchestration.books_sensor import books_partitions_sensor
from orchestration.sensors import search_terms_report_sensor

# Every process that loads the code location (runs, steps) streams batches: keep its
# resident memory near its working set.
return_freed_memory()
# Runs of this code location hand their asset events to the event log in batches.
enable_event_batches()

defs = dg.Definitions.merge(
    search_terms.defs,
    books.defs,
    catalog.defs,
    enrichment.defs,
    dg.Definitions(
        resources=resources(),
        schedules=[search_terms_weekly_schedule],
        sensors=[search_terms_report_sensor, books_partitions_sensor],
        # in the run's process unless FLOODGATE_EXECUTOR says otherwise (orchestration/executors.py)
        executor=executor_from_env(),
    ),
)

# What loading the code location left alive (about 200k objects of Dagster, pyarrow and
# ours) stays alive for the process's life. Frozen, the cyclic collector leaves it out of
# every later pass: a run's process otherwise paid one full pass over all of it during the
# run, 0.11-0.13 s (bench.catalog; docs/PERFORMANCE.md). Loading leaves almost no cyclic
# garbage to freeze with it (46 objects), so no collection before.
gc.freeze()

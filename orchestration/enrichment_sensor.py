"""The enrichment sensor: one dynamic partition per input file, and a run per new or
replaced file.

Each tick lists <input_prefix>/ once. A file with a known suffix (engine/enrichment/source.py)
gets a partition the first time it is seen; a file that disappears loses its partition
(its outputs are kept: they were paid for). The cursor maps each file's partition key to
the version (ETag) last requested, so a run is requested once per version: a replaced file
is enriched again (its chunks' fingerprints change with the version), an unchanged one
never. At most MAX_RUNS_PER_TICK runs are requested per tick; the rest stay out of the
cursor and are requested by the next ticks.

Its resources (object_store, enrichment_settings) are named in required_resource_keys
rather than typed, so this module does not import the assets package that lists it.
"""

from __future__ import annotations

import json

import dagster as dg

from engine.enrichment.source import partition_key
from partitions.enrichment import enrichment_files

MAX_RUNS_PER_TICK = 20
SELECTION = dg.AssetSelection.groups("enrichment")


@dg.sensor(
    asset_selection=SELECTION,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    required_resource_keys={"object_store", "enrichment_settings"},
    description=(
        "Watches <input_prefix>/ in the object store: adds an enrichment_files partition per input "
        "file, removes those of deleted files, and requests one run per new or replaced file."
    ),
)
def enrichment_files_sensor(context: dg.SensorEvaluationContext, object_store, enrichment_settings) -> dg.SensorResult:
    store = object_store
    prefix = enrichment_settings.input_prefix.rstrip("/") + "/"
    versions = {}
    for info in store.list(prefix):
        key = partition_key(info.key, prefix)
        if key is not None:
            versions[key] = info.etag
    requested: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    known = set(context.instance.get_dynamic_partitions(enrichment_files.name))
    new, gone = sorted(set(versions) - known), sorted(known - set(versions))

    due = [key for key in sorted(versions) if requested.get(key) != versions[key]]
    runs = [
        dg.RunRequest(partition_key=key, run_key=f"{key}@{versions[key]}", tags={"enrichment/input_version": versions[key]})
        for key in due[:MAX_RUNS_PER_TICK]
    ]
    cursor = {k: v for k, v in requested.items() if k in versions}  # deleted files leave it
    cursor.update({r.partition_key: versions[r.partition_key] for r in runs})

    partition_requests = []
    if new:
        partition_requests.append(enrichment_files.build_add_request(new))
        context.log.info(f"{len(new)} new input files under {store.uri(prefix)}")
    if gone:
        partition_requests.append(enrichment_files.build_delete_request(gone))
        context.log.info(f"{len(gone)} input files deleted from {store.uri(prefix)}; their outputs are kept")
    if len(due) > len(runs):
        context.log.info(f"{len(due) - len(runs)} more files wait for the next ticks (at most {MAX_RUNS_PER_TICK} runs a tick)")
    if not runs and not partition_requests:
        return dg.SensorResult(skip_reason=dg.SkipReason(f"no new, replaced or deleted input files under {store.uri(prefix)}"), cursor=json.dumps(cursor))
    return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=partition_requests, cursor=json.dumps(cursor, sort_keys=True))

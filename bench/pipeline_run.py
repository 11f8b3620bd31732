"""The full search-terms pipeline for one week, as a Dagster run on the embedded defaults.

    python -m bench.pipeline_run REPORT.json HOME WEEK  → one JSON line with the run's figures

The report is hard-linked into HOME's object store. Timing covers the Dagster run (all
four steps, event logging and checks included), not the interpreter's start and imports;
peak_rss is the whole process's peak, imports included, sampled every 5 ms from
/proc/self/status (the steps reset the kernel's high-water mark to measure themselves, so
it cannot be read once at the end).
"""

import json
import os
import shutil
import sys
from pathlib import Path

import dagster as dg

from bench.rss import measured


def main() -> None:
    report, home, week = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    shutil.rmtree(home, ignore_errors=True)
    target = home / "data" / "search_terms" / "reports" / f"{week}.json"
    target.parent.mkdir(parents=True)
    try:
        os.link(report, target)
    except OSError:
        shutil.copyfile(report, target)
    os.environ["FLOODGATE_HOME"] = str(home)

    from orchestration.definitions import defs  # noqa: E402 - after FLOODGATE_HOME is set

    job = defs.resolve_job_def("search_terms_weekly")
    with measured() as figures:
        result = job.execute_in_process(partition_key=week, instance=dg.DagsterInstance.ephemeral())
    assert result.success
    steps = {}
    for event in result.get_asset_materialization_events():
        meta = event.materialization.metadata
        steps[event.materialization.asset_key.to_user_string()] = {
            k: meta[k].value for k in ("rows_in", "seconds", "peak_rss_mb", "start_rss_mb") if k in meta
        }
    rows = steps["parsed_search_terms"]["rows_in"]
    peak = max(figures["peak_rss"], *(s["peak_rss_mb"] * 2**20 for s in steps.values() if "peak_rss_mb" in s))
    print(json.dumps({"rows": rows, "seconds": figures["seconds"], "peak_rss": peak,
                      "rss_before_run": figures["rss_before_run"], "steps": steps}))


if __name__ == "__main__":
    main()

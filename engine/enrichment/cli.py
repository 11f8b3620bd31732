"""Enrich one file of a local directory store, outside Dagster (tests that run it in a
process of its own, and the benchmark):

    python -m engine.enrichment.cli ROOT INPUT_KEY OUTPUT_PREFIX [--settings JSON] [--chunk-rows N]

`--settings` holds flat API settings (engine/enrichment/settings.py, FLAT_DEFAULTS). The
last line on stdout is the result as JSON: the account and the request statistics. The
exit status is 0 when the file is complete, 3 when the run failed with an account.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from engine.enrichment.run import EnrichmentFailed, FileResult, FileSettings, enrich_file
from engine.enrichment.settings import api_settings, request_template
from engine.enrichment.source import file_format
from engine.measure import peak_rss_bytes


def result_json(result: FileResult, failed: str | None = None) -> dict:
    s = result.stats
    return {
        "account": result.account.as_dict(),
        "seconds": result.seconds,
        "cpu_seconds": result.cpu_seconds,
        "requests": s.requests,
        "requests_per_second": s.requests_per_second,
        "sending_seconds": s.sending_seconds,
        "latency_ms": s.latency_ms(),
        "retries": dict(s.retries),
        "statuses": {str(k): v for k, v in s.statuses.items()},
        "dead_letters": dict(s.dead_letters),
        "limiter_dropped": s.limiter_dropped,
        "breaker_openings": s.breaker_openings,
        "limiter": result.limiter,
        "peak_rss": peak_rss_bytes(),
        "failed": failed,
    }


def wait_at_barrier(folder: Path, timeout: float = 120.0) -> None:
    """Start together with other processes: say ready, then wait for the go (tests of runs at once)."""
    (folder / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + timeout
    while not (folder / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"no go in {folder} within {timeout:g}s")
        time.sleep(0.005)  # polling a file: the go is a file another process creates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root")
    parser.add_argument("input_key")
    parser.add_argument("output_prefix")
    parser.add_argument("--settings", default="{}")
    parser.add_argument("--id-field", default="id")
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    parser.add_argument("--progress", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--barrier", default=None, help="a folder: create ready-<pid> in it, then wait for a file 'go'")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")

    from resources.object_store import LocalDirectoryObjectStore

    flat = json.loads(args.settings)
    fmt = file_format(args.input_key)
    if fmt is None:
        parser.error(f"{args.input_key}: not a CSV, JSON, NDJSON or Parquet file name")
    store = LocalDirectoryObjectStore(root=args.root)
    if args.barrier:
        wait_at_barrier(Path(args.barrier))
    file_settings = FileSettings(id_field=args.id_field, chunk_rows=args.chunk_rows, progress_interval=args.progress)
    try:
        result = enrich_file(
            store, args.input_key, fmt, args.output_prefix, api_settings(flat), request_template(flat), file_settings,
            logger=logging.getLogger("enrichment"), seed=args.seed,
        )
    except EnrichmentFailed as exc:
        print(json.dumps(result_json(exc.result, str(exc))), flush=True)
        return 3
    print(json.dumps(result_json(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

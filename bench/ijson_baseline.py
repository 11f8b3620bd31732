"""Baseline: iterate a report's rows with ijson's C backend and nothing else.

    python -m bench.ijson_baseline REPORT.json  → one JSON line: rows, seconds, peak_rss
"""

import json
import sys
import time

import ijson

from engine.measure import peak_rss_bytes


def main() -> None:
    path = sys.argv[1]
    assert ijson.backend == "yajl2_c", f"the baseline needs ijson's C backend, got {ijson.backend}"
    started = time.perf_counter()
    rows = 0
    with open(path, "rb") as f:
        for _ in ijson.items(f, "dataByDepartmentAndSearchTerm.item"):
            rows += 1
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_rss": peak_rss_bytes()}))


if __name__ == "__main__":
    main()
